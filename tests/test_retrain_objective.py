"""What a retrain optimises and sees: loss = CE + 0.4 * CE_aux, and augmentation (crop, flip,
cutout) on the training batches only, never on the evaluation batches.

One tiny RetrainRun (3 cells of one node, C=4, batch 8, 32x32 images so that the auxiliary head
sees its 8x8 map) with the reference defaults (auxiliary_weight 0.4, cutout 16, augment auto =
crop + flip), built once; everything runs eagerly, nothing is traced.
"""

import numpy as np
import pytest
import tensorflow as tf

from helpers import GENOTYPE_1NODE, write_json
from keras_darts import data as data_lib
from keras_darts import genotype as genotype_lib
from keras_darts import retrain_loop
from keras_darts.config import RetrainConfig

SIZE, BATCH, N_TRAIN, N_TEST = 32, 8, 16, 8
PAD, CUTOUT = 4, 16  # the reference's RandomCrop(32, padding=4) and Cutout(16)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(N_TRAIN + N_TEST, SIZE, SIZE, 3), dtype=np.uint8)
    # One class per training image: a batch's labels say which image each row is.
    labels = np.arange(N_TRAIN + N_TEST, dtype=np.int64) % N_TRAIN
    data = data_lib.ImageData("synthetic", x[:N_TRAIN], labels[:N_TRAIN], x[N_TRAIN:],
                              labels[N_TRAIN:], tuple(f"c{i}" for i in range(N_TRAIN)))
    genotype = write_json(tmp_path_factory.mktemp("objective") / "genotype.json", GENOTYPE_1NODE)
    config = RetrainConfig(genotype=str(genotype), layers=3, init_channels=4, batch_size=BATCH, seed=0)
    config.validate()
    assert (config.auxiliary_weight, config.cutout, config.cutout_length) == (0.4, True, CUTOUT)
    return retrain_loop.RetrainRun(config, data, genotype_lib.load_genotype(config.genotype))


def _mean_ce_grad_wrt_logits(logits, y):
    """d mean_i CE(logits_i, y_i) / d logits = (softmax - onehot) / B, in float64."""
    z = np.asarray(logits, np.float64)
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    p[np.arange(len(y)), y] -= 1.0
    return p / len(y)


def test_retrain_step_minimises_ce_plus_04_auxiliary_ce(run):
    """The step's gradients w.r.t. the two classifier biases are those of CE + 0.4 * CE_aux.

    `RetrainRun._grads` is where the step computes its loss and gradients (the loss itself is not
    returned). A bias gradient is the batch sum of d loss / d logits, so this pins the form
    (softmax cross entropy of the logits, averaged over the global batch) and the weights (1 and
    0.4) of both terms against a hand computation from the logits of the same forward pass.
    Tolerance 1e-6 absolute on gradients of ~1e-2: float32 softmax round-off.
    """
    rng = np.random.default_rng(1)
    x = tf.constant(rng.standard_normal((BATCH, SIZE, SIZE, 3)), tf.float32)
    y = tf.constant(rng.permutation(N_TRAIN)[:BATCH], tf.int32)
    run.model.set_drop_path_prob(0.0)  # deterministic forward: both passes below agree
    grads, logits = run._grads(x, y)
    logits_again, logits_aux = run.model(x, training=True, return_aux=True)
    np.testing.assert_allclose(logits_again.numpy(), logits.numpy(), rtol=1e-6, atol=1e-6)

    by_var = {id(v): g for v, g in zip(run.model.trainable_variables, grads)}
    d_main = _mean_ce_grad_wrt_logits(logits.numpy(), y.numpy())
    d_aux = _mean_ce_grad_wrt_logits(logits_aux.numpy(), y.numpy())
    np.testing.assert_allclose(by_var[id(run.model.classifier.bias)].numpy(), d_main.sum(axis=0),
                               atol=1e-6)
    aux_bias = by_var[id(run.model.auxiliary_head.classifier.bias)].numpy()
    np.testing.assert_allclose(aux_bias, 0.4 * d_aux.sum(axis=0), atol=1e-6)
    assert np.abs(aux_bias).max() > 1e-3  # the auxiliary term is really there


def _normalised(images, data):
    return (images.astype(np.float64) / 255.0 - np.asarray(data.mean)) / np.asarray(data.std)


_KEYS = [(dy, dx, flip) for dy in range(2 * PAD + 1) for dx in range(2 * PAD + 1) for flip in (0, 1)]


def _candidates(image, data):
    """Every crop of the 4-padded image, mirrored or not, normalised: (len(_KEYS), H, W, C)."""
    padded = np.pad(image, ((PAD, PAD), (PAD, PAD), (0, 0)))
    crops = [padded[dy:dy + SIZE, dx:dx + SIZE] for dy, dx, _ in _KEYS]
    return _normalised(np.stack([c[:, ::-1] if f else c for c, (_, _, f) in zip(crops, _KEYS)]), data)


def _span(mask_1d):
    idx = np.flatnonzero(mask_1d)
    assert len(idx) and np.array_equal(idx, np.arange(idx[0], idx[-1] + 1)), "not one band"
    return idx[0], idx[-1] + 1


def _check_cutout(zero):
    """`zero` is one square of side CUTOUT centred in the image, clipped at the borders."""
    (r0, r1), (c0, c1) = _span(zero.any(axis=1)), _span(zero.any(axis=0))
    expected = np.zeros_like(zero)
    expected[r0:r1, c0:c1] = True
    assert np.array_equal(zero, expected), "cutout is not a rectangle"
    for lo, hi in ((r0, r1), (c0, c1)):
        # Side 16 unless clipped; the centre is inside the image, so at least 8 remain.
        assert CUTOUT // 2 <= hi - lo <= CUTOUT and (hi - lo == CUTOUT or lo == 0 or hi == SIZE)


def test_training_batches_are_cropped_flipped_and_cut_out(run):
    seen, flips, shifts = set(), set(), set()
    for xb, yb in run.epoch_dataset(0, 0):
        for out, label in zip(xb.numpy(), yb.numpy()):
            zero = np.all(out == 0.0, axis=-1)  # cutout zeroes after normalisation
            close = np.abs(_candidates(run.data.x_train[label], run.data) - out) <= 1e-5
            matches = [key for key, ok in zip(_KEYS, close[:, ~zero].all(axis=(1, 2))) if ok]
            assert len(matches) == 1, f"image {label}: {len(matches)} crops match"
            _check_cutout(zero)
            dy, dx, flip = matches[0]
            seen.add(int(label))
            flips.add(flip)
            shifts.add((dy, dx))
    assert seen == set(range(N_TRAIN))  # one epoch: every image once
    assert flips == {0, 1} and len(shifts) > 1


def test_evaluation_batches_are_the_plain_normalised_images(run, monkeypatch):
    batches = []

    def capture(batch):
        batches.append([t.numpy() for t in batch])
        zeros = tf.zeros(())
        return {"loss_sum": zeros, "correct": zeros, "correct5": zeros, "count": zeros}

    monkeypatch.setattr(run, "_eval_fn", capture)  # what RetrainRun.evaluate feeds the model
    run.evaluate()
    images = np.concatenate([b[0] for b in batches])
    labels = np.concatenate([b[1] for b in batches])
    np.testing.assert_array_equal(labels, run.data.y_test)  # stored order, nothing dropped
    np.testing.assert_allclose(images, _normalised(run.data.x_test, run.data), atol=1e-5)
    assert not np.any(np.all(images == 0.0, axis=-1))  # no cutout pixel
