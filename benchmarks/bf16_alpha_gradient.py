#!/usr/bin/env python3
"""How far the mixed_bfloat16 alpha gradient is from float32's, next to how far float32's own
gradient moves from one batch to the next.

  python benchmarks/bf16_alpha_gradient.py [--seeds=3] [--train_steps=0,30] [--batches=8,64]

Tiny supernets (3 cells, C=4, 1 and 2 nodes, 8x8 CIFAR-10 images from ../shared/data/cifar10):
a float32 one (optionally trained a few SGD steps) and a mixed_bfloat16 one holding the same
variables; one line per case: relative L2 error of the bfloat16 gradient, the signs that differ
(and the largest such entry as a share of max |g|), and the float32 gradient's relative change on
the next batch of the same size.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags  # noqa: E402

from keras_darts.errors import quiet_import, run  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE, CLASSES = 8, 10
_DATA = flags.DEFINE_string("data", os.path.join(ROOT, "..", "shared", "data", "cifar10"),
                            "Directory with train.npz.")
_SEEDS = flags.DEFINE_integer("seeds", 3, "Seeds per case.")
_TRAIN = flags.DEFINE_list("train_steps", ["0", "30"], "SGD steps before measuring.")
_BATCHES = flags.DEFINE_list("batches", ["8", "64"], "Batch sizes.")


def main(argv):
    del argv
    import numpy as np

    tf = quiet_import("tensorflow")
    import keras

    from keras_darts.supernet import SearchNetwork

    with np.load(os.path.join(_DATA.value, "train.npz")) as f:
        x_all, y_all = f["x"][:2048], f["y"][:2048].reshape(-1)
    x_all = tf.image.resize(x_all.astype(np.float32) / 255.0, (SIZE, SIZE)).numpy()
    x_all = (x_all - x_all.mean((0, 1, 2))) / x_all.std((0, 1, 2))

    def supernet(seed, steps):
        keras.utils.set_random_seed(seed)
        model = SearchNetwork(num_classes=CLASSES, layers=3, init_channels=4, steps=steps,
                              multiplier=steps, alpha_seed=seed)
        model.build((None, SIZE, SIZE, 3))
        return model

    def loss_of(model, x, y):
        return tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(
            y, model(x, training=True), from_logits=True))

    def alpha_grads(model, x, y):
        alphas = [a.value for a in model.arch_variables]
        with tf.GradientTape() as tape:
            tape.watch(alphas)
            loss = loss_of(model, x, y)
        return np.concatenate([g.numpy().ravel() for g in tape.gradient(loss, alphas)])

    def train(model, n):
        opt = keras.optimizers.SGD(0.025, momentum=0.9)
        rng = np.random.default_rng(0)
        for _ in range(n):
            i = rng.integers(0, len(x_all), 32)
            with tf.GradientTape() as tape:
                loss = loss_of(model, x_all[i], y_all[i])
            opt.apply_gradients(zip(tape.gradient(loss, model.weight_variables),
                                    model.weight_variables))

    for steps in (1, 2):
        for trained in map(int, _TRAIN.value):
            for batch in map(int, _BATCHES.value):
                for seed in range(_SEEDS.value):
                    keras.mixed_precision.set_global_policy("float32")
                    f32 = supernet(seed, steps)
                    train(f32, trained)
                    keras.mixed_precision.set_global_policy("mixed_bfloat16")
                    b16 = supernet(seed, steps)
                    for a, b in zip(f32.variables, b16.variables):
                        b.assign(a.numpy())
                    keras.mixed_precision.set_global_policy("float32")
                    x, y = x_all[1000:1000 + batch], y_all[1000:1000 + batch]
                    g32, g16 = alpha_grads(f32, x, y), alpha_grads(b16, x, y)
                    other = alpha_grads(f32, x_all[1500:1500 + batch], y_all[1500:1500 + batch])
                    rel = np.linalg.norm(g16 - g32) / np.linalg.norm(g32)
                    sampling = np.linalg.norm(other - g32) / np.linalg.norm(g32)
                    flips = np.sign(g16) != np.sign(g32)
                    worst = np.abs(g32[flips]).max() / np.abs(g32).max() if flips.any() else 0.0
                    print(f"nodes={steps} trained={trained} batch={batch} seed={seed}: "
                          f"relative L2 {rel:.3f}, {flips.sum()}/{g32.size} signs differ (largest "
                          f"{worst:.2f} of max |g|); float32 next batch {sampling:.2f}", flush=True)


if __name__ == "__main__":
    run(main)
