"""The ImageNet recipe of the reference's train_imagenet.py (issue 10, point 4): every default, the
step schedule and label smoothing in numbers, and one tiny CLI retrain on JPEGs of mixed sizes.

(DARTS_V2 at 14 cells / 48 channels / 224 px = 4,718,752 parameters: test_network asserts it for
the values this variant resolves to.)
"""

import json
import os

import numpy as np
import pytest
from PIL import Image

from helpers import check_ok, run_cli
from keras_darts.config import RetrainConfig

IMAGENET = dict(layers=14, init_channels=48, batch_size=128, epochs=250, learning_rate=0.1,
                lr_schedule="step", lr_gamma=0.97, lr_decay_period=1, momentum=0.9,
                weight_decay=3e-5, label_smoothing=0.1, auxiliary=True, auxiliary_weight=0.4,
                drop_path_prob=0.0, grad_clip=5.0, cutout=False, augment="imagenet",
                image_size="224", eval_resize=256)
CIFAR = dict(layers=20, init_channels=36, batch_size=96, epochs=600, learning_rate=0.025,
             lr_schedule="cosine", weight_decay=3e-4, label_smoothing=0.0, drop_path_prob=0.2,
             cutout=True, augment="auto", image_size=None, eval_resize=None)


def test_variant_defaults_are_the_reference_recipes():
    imagenet = RetrainConfig(variant="imagenet")
    imagenet.validate()
    assert {k: getattr(imagenet, k) for k in IMAGENET} == IMAGENET
    assert {k: getattr(RetrainConfig(), k) for k in CIFAR} == CIFAR
    # Every value stays a flag: a given option wins over the variant's.
    mine = RetrainConfig(variant="imagenet", learning_rate=0.5, label_smoothing=0.0, cutout=True)
    assert (mine.learning_rate, mine.label_smoothing, mine.cutout, mine.layers) == (0.5, 0.0, True, 14)
    # What config.json records is resolved (a resume compares resolved values).
    assert RetrainConfig(variant="imagenet").to_dict()["lr_schedule"] == "step"


def test_step_schedule_and_label_smoothing_in_numbers():
    import tensorflow as tf

    from keras_darts.optimizers import EpochStepDecay

    schedule = EpochStepDecay(0.1, steps_per_epoch=10, gamma=0.97, period=1)
    for epoch in (0, 1, 2, 100, 249):
        assert schedule.at_epoch(epoch) == pytest.approx(0.1 * 0.97**epoch)
        for step in (epoch * 10, epoch * 10 + 9):
            assert float(schedule(step)) == pytest.approx(0.1 * 0.97**epoch, rel=1e-5)
    assert EpochStepDecay(0.1, 10, 0.5, period=3).at_epoch(7) == pytest.approx(0.025)
    # The reference's CrossEntropyLabelSmooth: -sum(((1-e)·onehot + e/K) · log_softmax).
    from keras_darts.retrain_loop import RetrainRun

    logits = np.array([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]], np.float32)
    labels = np.array([0, 2])
    log_p = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    targets = 0.9 * np.eye(3)[labels] + 0.1 / 3
    expected = -(targets * log_p).sum(1).mean()

    class Stub:  # Just what RetrainRun._loss reads.
        config = RetrainConfig(variant="imagenet", batch_size=2)
        data = type("D", (), {"num_classes": 3})

    got = RetrainRun._loss(Stub(), tf.constant(labels), tf.constant(logits))
    assert float(got) == pytest.approx(expected, rel=1e-6)


def _jpeg_folders(root):
    rng = np.random.default_rng(0)
    sizes = [(20, 30), (40, 24), (16, 16), (33, 17), (64, 48), (18, 50)]
    for split, count in (("train", 4), ("val", 2)):  # ImageNet's names: val/ is the test split.
        for cls in ("cat", "dog"):
            os.makedirs(root / split / cls)
            for i in range(count):
                h, w = sizes[(i + len(cls) + count) % len(sizes)]
                Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(
                    root / split / cls / f"{i}.jpg", quality=90)
    return root


def test_tiny_imagenet_retrain_on_mixed_size_jpegs(tmp_path):
    data = _jpeg_folders(tmp_path / "photos")
    out = tmp_path / "run"
    result = run_cli("retrain", "--genotype=DARTS_V2", f"--dataset={data}", f"--output_dir={out}",
                     "--variant=imagenet", "--image_size=16", "--eval_resize=18", "--layers=3",
                     "--init_channels=4", "--batch_size=4", "--epochs=1", "--steps_per_epoch=2",
                     "--noauxiliary", "--seed=1", f"--export_dir={tmp_path / 'exports'}")
    check_ok(result)
    with open(out / "config.json") as f:
        record = json.load(f)
    for key, value in {**IMAGENET, "layers": 3, "init_channels": 4, "batch_size": 4, "epochs": 1,
                       "auxiliary": False, "image_size": "16", "eval_resize": 18}.items():
        assert record[key] == value, key
    assert record["image_shape"] == [16, 16, 3] and record["class_names"] == ["cat", "dog"]
    assert record["dataset_info"]["streamed"] and record["dataset_info"]["resized"]
    with open(out / "metrics.json") as f:
        metrics = json.load(f)
    assert metrics["test_examples"] == 4 and metrics["epochs"] == 1
    assert "lr 0.100000" in result.stdout and "8 train / 4 test images, 2 steps/epoch" in result.stdout
    # The export normalises with the recorded mean/std and decodes bytes as evaluation does
    # (shorter side to 18, centre crop 16), so a served JPEG of any size gives what the test
    # pipeline's pixels give.
    import tensorflow as tf

    from keras_darts import data as D

    loaded = tf.saved_model.load(str(tmp_path / "exports" / "darts" / "1"))
    options = D.DataOptions(image_size=(16, 16), mean=record["mean"], std=record["std"])
    photos = D.load_image_data(str(data), need_test=True, options=options)
    spec = D.spec_for(photos, eval_resize=18)
    batches = D.eval_batches(photos.test, spec, 4, normalise=False)
    pixels = next(iter(batches[0]))[0]  # (dataset, diagnose)
    blobs = tf.constant([open(p, "rb").read() for p in photos.test.paths])
    by_bytes = loaded.signatures["serving_bytes"](image_bytes=blobs)["probabilities"]
    by_pixels = loaded.signatures["serving_default"](images=tf.cast(pixels, tf.uint8))["probabilities"]
    np.testing.assert_allclose(by_bytes.numpy(), by_pixels.numpy(), rtol=0, atol=1e-6)
