"""The retrain step and its data: `RetrainRun` builds the derived network, optimiser and datasets
under one strategy scope; `retrain_loop` drives it epoch by epoch.

Per step: forward with drop path and the auxiliary head, loss = CE (+ label smoothing) +
auxiliary_weight * CE_aux, gradients all-reduced, clipped, SGD with L2 (reference: `train.py`).
"""

import dataclasses

import keras
import numpy as np
import tensorflow as tf

from keras_darts import data as data_lib
from keras_darts import distribute
from keras_darts import run_utils
from keras_darts.gradients import LossScale, all_reduce_sum, apply_gradients
from keras_darts.errors import UserError
from keras_darts.network import build_network_from_config
from keras_darts.optimizers import EpochCosineDecay, EpochLearningRate, EpochStepDecay, TorchSGD


def model_record(config, genotype, data):
    """config.json of a retrain run: the flags plus what export needs to rebuild the model."""
    info = data_lib.dataset_record(data)
    return {
        **config.to_dict(),
        "genotype_spec": config.genotype,
        "genotype": genotype.to_dict(),
        **{k: info[k] for k in ("num_classes", "image_shape", "mean", "std", "class_names")},
        "dataset_info": info,
    }


class RetrainRun:
    """Model, optimiser, step and checkpoint of a retrain, built under one strategy scope."""

    def __init__(self, config, data, genotype):
        self.config = config
        self.data = data
        self.spec = data_lib.spec_for(data, config.augment,
                                      config.cutout_length if config.cutout else 0,
                                      config.eval_resize)
        self.eval_spec = dataclasses.replace(self.spec, augment="none", cutout_length=0,
                                             where=f"--test_dataset={config.test_dataset}"
                                             if config.test_dataset else self.spec.where)
        distribute.configure_threads(config.intra_op_threads, config.inter_op_threads)
        self.strategy = distribute.get_strategy(config.strategy, config.cpu_devices)
        self.replicas = self.strategy.num_replicas_in_sync
        if config.batch_size % self.replicas:
            raise UserError(f"--batch_size={config.batch_size}: must be divisible by the "
                            f"{self.replicas} replicas")
        self.steps = data_lib.steps_per_epoch(len(data.train), config.batch_size,
                                              config.steps_per_epoch)
        self.record = model_record(config, genotype, data)
        self.use_aux = config.auxiliary and config.auxiliary_weight > 0
        with self.strategy.scope():
            try:
                self.model = build_network_from_config(self.record)
            except ValueError as e:
                raise UserError(f"--genotype={config.genotype}: cannot build the network ({e})") from None
            self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
            if config.lr_schedule == "step":
                self.schedule = EpochStepDecay(config.learning_rate, self.steps, config.lr_gamma,
                                               config.lr_decay_period)
            else:
                self.schedule = EpochCosineDecay(config.learning_rate, config.epochs, self.steps,
                                                 config.learning_rate_min)
            # Driven by the epoch counter: a float16 step skipped for overflow keeps the schedule.
            self.optimizer = TorchSGD(EpochLearningRate(self.schedule, self.epoch),
                                      config.momentum, config.weight_decay)
            self.optimizer.build(self.model.trainable_variables)
            self.loss_scale = LossScale(config.mixed_precision == "float16")
            self.step_in_epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
            self.sums = tf.Variable(tf.zeros(3, tf.float64), trainable=False, name="epoch_sums")
            self.elapsed = tf.Variable(0.0, dtype=tf.float64, trainable=False, name="elapsed_s")
            # Drop-path RNG states: a resumed run draws the masks an uninterrupted one would.
            rng = {str(i): v for i, v in enumerate(
                v for v in self.model.non_trainable_variables if "seed_generator" in v.path)}
            self.checkpoint = tf.train.Checkpoint(
                model=self.model, optimizer=self.optimizer, epoch=self.epoch,
                step_in_epoch=self.step_in_epoch, epoch_sums=self.sums, elapsed_s=self.elapsed,
                loss_scale=self.loss_scale.scale,
                loss_scale_good_steps=self.loss_scale.good_steps, rng=rng)
        wrap = (lambda f: tf.function(f, jit_compile=True)) if config.jit_compile else (lambda f: f)
        self._grads = wrap(self._grads_fn)
        self._train_fn = tf.function(self._distributed_step)
        self._eval_fn = tf.function(self._distributed_eval)

    def _loss(self, labels, logits):
        smoothing = self.config.label_smoothing
        if smoothing:  # The reference's CrossEntropyLabelSmooth: (1-e)·onehot + e/K.
            targets = tf.one_hot(tf.cast(labels, tf.int32), self.data.num_classes)
            per_example = keras.losses.categorical_crossentropy(
                targets, logits, from_logits=True, label_smoothing=smoothing)
        else:
            per_example = keras.losses.sparse_categorical_crossentropy(labels, logits,
                                                                       from_logits=True)
        return tf.nn.compute_average_loss(per_example, global_batch_size=self.config.batch_size)

    def _grads_fn(self, x, y):
        with tf.GradientTape() as tape:
            if self.use_aux:
                logits, logits_aux = self.model(x, training=True, return_aux=True)
                loss = self._loss(y, logits) + self.config.auxiliary_weight * self._loss(y, logits_aux)
            else:
                logits = self.model(x, training=True)
                loss = self._loss(y, logits)
            scaled = loss * self.loss_scale.scale if self.loss_scale.enabled else loss
        grads = tape.gradient(scaled, self.model.trainable_variables)
        return grads, logits

    def _replica_step(self, x, y):
        grads, logits = self._grads(x, y)
        if self.loss_scale.enabled:
            grads = [tf.cast(g, tf.float32) / self.loss_scale.scale for g in grads]
        grads = all_reduce_sum(grads)
        finite = None
        if self.loss_scale.enabled:
            finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in grads])
        if self.config.grad_clip > 0:
            grads, _ = tf.clip_by_global_norm(grads, self.config.grad_clip)
        apply_gradients(self.optimizer, grads, self.model.trainable_variables, finite,
                        self.loss_scale if self.loss_scale.enabled else None)
        per_example = keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)
        correct = tf.equal(tf.argmax(logits, -1, output_type=tf.int32), tf.cast(y, tf.int32))
        return {"loss_sum": tf.reduce_sum(per_example),
                "correct": tf.reduce_sum(tf.cast(correct, tf.float32)),
                "count": tf.cast(tf.shape(y)[0], tf.float32)}

    def _distributed_step(self, batch):
        return run_utils.run_and_sum(self.strategy, self._replica_step, *batch)

    def _eval_replica(self, x, y):
        logits = self.model(x, training=False)
        per_example = keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)
        y = tf.cast(y, tf.int32)
        top1 = tf.equal(tf.argmax(logits, -1, output_type=tf.int32), y)
        k = min(5, self.data.num_classes)
        top5 = tf.math.in_top_k(y, logits, k)
        return {"loss_sum": tf.reduce_sum(per_example),
                "correct": tf.reduce_sum(tf.cast(top1, tf.float32)),
                "correct5": tf.reduce_sum(tf.cast(top5, tf.float32)),
                "count": tf.cast(tf.shape(y)[0], tf.float32)}

    def _distributed_eval(self, batch):
        return run_utils.run_and_sum(self.strategy, self._eval_replica, *batch)

    def distribute(self, dataset):
        return run_utils.distribute_dataset(self.strategy, dataset)

    def epoch_dataset(self, epoch, start_step):
        c = self.config
        ds, check = data_lib.train_batches(self.data.train, self.spec, c.batch_size, c.seed, epoch,
                                           start_step=start_step, steps=self.steps)
        return data_lib.guard(self.distribute(ds), self.spec, check)

    def evaluate(self):
        """Test loss, top-1 and top-5 accuracy (inference mode: no drop path, no aux head)."""
        ds, check = data_lib.eval_batches(self.data.test, self.eval_spec, self.config.batch_size)
        if self.config.eval_steps:
            ds = ds.take(self.config.eval_steps)
        totals = np.zeros(4)
        for batch in data_lib.guard(self.distribute(ds), self.eval_spec, check):
            out = self._eval_fn(batch)
            totals += [float(out[k]) for k in ("loss_sum", "correct", "correct5", "count")]
        n = max(totals[3], 1)
        return {"test_loss": totals[0] / n, "test_accuracy": totals[1] / n,
                "test_top5_accuracy": totals[2] / n, "test_examples": int(totals[3])}
