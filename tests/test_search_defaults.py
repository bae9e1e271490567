"""The search defaults are the reference's (quark0/darts `cnn/train_search.py`, its argparse
defaults and `architect.py`'s Adam) and reach the objects a search runs with.

A SearchRun is built with every default except the network size (3 cells, C=4, 1 node: the values
under test are not the size) on 256 synthetic 8x8 images; nothing is traced or trained.
"""

import math

import pytest

from keras_darts import data as data_lib
from keras_darts.config import SearchConfig
from keras_darts.search_loop import SearchRun

# train_search.py: --batch_size 64, --learning_rate 0.025, --learning_rate_min 0.001,
# --momentum 0.9, --weight_decay 3e-4, --epochs 50, --init_channels 16, --layers 8,
# --seed 2, --grad_clip 5, --train_portion 0.5, --arch_learning_rate 3e-4,
# --arch_weight_decay 1e-3, --unrolled off; model_search.Network(steps=4, multiplier=4).
REFERENCE = {"batch_size": 64, "learning_rate": 0.025, "learning_rate_min": 0.001, "momentum": 0.9,
             "weight_decay": 3e-4, "epochs": 50, "init_channels": 16, "layers": 8, "seed": 2,
             "grad_clip": 5.0, "train_portion": 0.5, "arch_learning_rate": 3e-4,
             "arch_weight_decay": 1e-3, "unrolled": False, "nodes": 4}


def test_search_config_defaults_are_the_reference_values():
    config = SearchConfig()
    assert {k: getattr(config, k) for k in REFERENCE} == REFERENCE
    assert config.mixed_precision == "none" and config.augment == "auto"


@pytest.fixture(scope="module")
def search_run():
    config = SearchConfig(dataset="synthetic", output_dir="unused", layers=3, init_channels=4,
                          nodes=1)
    return SearchRun(config, data_lib.synthetic_image_data(256, 0, (8, 8, 3), 10))


def test_search_defaults_reach_the_optimisers_schedule_and_step(search_run):
    run = search_run
    # train_portion 0.5 of 256 images, batch 64: 128 / 128 images, 2 steps per epoch.
    assert len(run.train_idx) == len(run.val_idx) == 128 and run.steps == 2
    schedule = run.schedule
    assert (schedule.initial_learning_rate, schedule.min_learning_rate, schedule.epochs,
            schedule.steps_per_epoch) == (0.025, 0.001, 50, 2)

    opt = run.weight_optimizer
    assert (opt.momentum, opt.l2) == (0.9, 3e-4)
    assert float(opt.learning_rate) == pytest.approx(0.025, rel=1e-6)
    for epoch in (1, 25, 49):  # CosineAnnealingLR(T_max=50, eta_min=0.001), stepped per epoch
        run.epoch.assign(epoch)
        expected = 0.001 + 0.024 * (1 + math.cos(math.pi * epoch / 50)) / 2
        assert float(opt.learning_rate) == pytest.approx(expected, rel=1e-6)
        assert float(run.step.learning_rate()) == pytest.approx(expected, rel=1e-6)  # xi
    run.epoch.assign(0)

    adam = run.arch_optimizer
    assert float(adam.learning_rate) == pytest.approx(3e-4, rel=1e-6)
    assert (adam.beta_1, adam.beta_2, adam.epsilon) == (0.5, 0.999, 1e-8)

    step = run.step
    assert (step.arch_weight_decay, step.grad_clip, step.global_batch_size) == (1e-3, 5.0, 64)
    assert step.unrolled is False and not step.loss_scale.enabled
    assert step.arch_regularizers == ()
    assert run.model.alpha_seed == 2 and run.model.num_classes == 10
