"""`bin/retrain`: trains a genotype's network from scratch (reference: `train.py`) and exports it.

Per epoch: training with drop path (probability ramped linearly with the epoch) and the auxiliary
head, evaluation on the test split (top-1, top-5), TensorBoard scalars, a checkpoint. At the end:
`metrics.json` and, with `--export_dir`, a SavedModel version for TF Serving.
"""

import dataclasses
import os
import time

import keras
import numpy as np
import tensorflow as tf

from keras_darts import data as data_lib
from keras_darts import distribute
from keras_darts import genotype as genotype_lib
from keras_darts import run_utils
from keras_darts.gradients import LossScale, all_reduce_sum, apply_gradients
from keras_darts.config import RETRAIN_RESUME_NEUTRAL, RetrainConfig, parse_formats  # noqa: F401
from keras_darts.errors import UserError
from keras_darts.io_utils import atomic_write_json
from keras_darts.latency import retrain_cost_fields
from keras_darts.network import build_network_from_config, count_parameters
from keras_darts.optimizers import EpochCosineDecay, EpochLearningRate, EpochStepDecay, TorchSGD

METRICS_FILE = "metrics.json"
_FORMAT_NAMES = {"saved_model": "SavedModel", "tflite": "LiteRT float32", "tflite_int8": "LiteRT int8",
                 "keras": "Keras model"}


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


def run(config, quiet=False, data=None, genotype=None):
    """Runs (or resumes) a retrain; returns the metrics dict (and exports with --export_dir)."""
    return run_retrain(config, quiet, data, genotype)[0]


def run_retrain(config, quiet=False, data=None, genotype=None):
    """Runs (or resumes) a retrain; returns (metrics, RetrainRun).

    Args:
      data: an `ImageData` with a test split, instead of loading `config.dataset` (Python API).
      genotype: a `Genotype` instead of loading `config.genotype`.
    """
    config.validate()
    if genotype is None:
        genotype = genotype_lib.load_genotype(config.genotype)
    # config.json records the genotype itself (its spec is in `genotype_spec`): compare contents.
    resuming = run_utils.check_output_dir(
        config.output_dir, {**config.to_dict(), "genotype": genotype.to_dict()}, RETRAIN_RESUME_NEUTRAL,
        defaults=type(config)(variant=config.variant).to_dict())
    if config.export_dir:
        from keras_darts.export import check_version_free

        check_version_free(config.export_dir, config.model_name, config.version, config.overwrite,
                           parse_formats(config.format))
    if data is None:
        data = data_lib.load_image_data(config.dataset, config.data_dir, config.test_dataset,
                                        need_test=True,
                                        options=data_lib.DataOptions.from_config(config))
    if resuming:
        data_lib.check_same_normalisation(config.output_dir, data, f"--dataset={config.dataset}")
    distribute.set_mixed_precision(config.mixed_precision)
    run_utils.set_determinism(config.seed, config.deterministic)
    retrain = RetrainRun(config, data, genotype)
    write_dir = distribute.WriteDir(config.output_dir, retrain.strategy)
    try:
        return _retrain(retrain, write_dir, resuming, quiet), retrain
    finally:
        write_dir.cleanup()


def _retrain(retrain, write_dir, resuming, quiet):
    config = retrain.config
    out, chief = write_dir.path, write_dir.chief
    if chief and not resuming:
        run_utils.write_config(out, retrain.record)
    manager, restore_manager = run_utils.checkpoint_managers(retrain.checkpoint, config.output_dir, out)
    restored = run_utils.restore_latest(retrain.checkpoint, restore_manager, config.output_dir)
    start_epoch = int(retrain.epoch.numpy())
    metrics_path = os.path.join(out, METRICS_FILE)
    params = count_parameters(retrain.model)
    if restored and start_epoch < config.epochs:
        print(f"resuming from {restored} (epoch {start_epoch + 1}, step "
              f"{int(retrain.step_in_epoch.numpy()) + 1})")
    # No writer (no new, empty event file) when rerunning a finished run.
    summaries = run_utils.SummaryWriter(os.path.join(out, "tensorboard"),
                                        chief and start_epoch < config.epochs)
    verbose = 1 if chief and not quiet else 0
    print(f"retrain: {len(retrain.data.train)} train / {len(retrain.data.test)} test images, "
          f"{retrain.steps} steps/epoch, {retrain.replicas} replica(s), {params:,} parameters "
          f"(auxiliary head excluded)")
    test = None
    for epoch in range(start_epoch, config.epochs):
        start_step = int(retrain.step_in_epoch.numpy())
        sums = retrain.sums.numpy().copy() if start_step else np.zeros(3)
        drop_prob = config.drop_path_prob * epoch / config.epochs
        retrain.model.set_drop_path_prob(drop_prob)
        lr = retrain.schedule.at_epoch(epoch)
        print(f"epoch {epoch + 1}/{config.epochs}  lr {lr:.6f}  drop_path_prob {drop_prob:.4f}")
        bar = keras.utils.Progbar(retrain.steps, verbose=verbose, stateful_metrics=["loss", "acc"])
        t0 = time.time()
        step = start_step
        for batch in retrain.epoch_dataset(epoch, start_step):
            logs = {k: float(v) for k, v in retrain._train_fn(batch).items()}
            run_utils.check_finite({"train loss": logs["loss_sum"]}, epoch + 1, step + 1, manager)
            sums += [logs["loss_sum"], logs["correct"], logs["count"]]
            step += 1
            bar.update(step, [("loss", sums[0] / sums[2]), ("acc", sums[1] / sums[2])])
            if config.checkpoint_every and step % config.checkpoint_every == 0 and step < retrain.steps:
                retrain.step_in_epoch.assign(step)
                retrain.sums.assign(sums)
                manager.save(checkpoint_number=epoch * retrain.steps + step)
        test = retrain.evaluate()
        record = {"epoch": epoch + 1, "learning_rate": lr, "drop_path_prob": drop_prob,
                  "train_loss": sums[0] / sums[2], "train_accuracy": sums[1] / sums[2], **test,
                  "epoch_time_s": time.time() - t0}
        summaries.scalars({f"retrain/{k}": record[k] for k in (
            "train_loss", "train_accuracy", "test_loss", "test_accuracy", "test_top5_accuracy",
            "learning_rate", "drop_path_prob")}, epoch + 1)
        summaries.flush()
        retrain.elapsed.assign_add(record["epoch_time_s"])
        retrain.epoch.assign(epoch + 1)
        retrain.step_in_epoch.assign(0)
        retrain.sums.assign(np.zeros(3))
        manager.save(checkpoint_number=(epoch + 1) * retrain.steps)
        print(f"epoch {epoch + 1}: train loss {record['train_loss']:.4f} acc "
              f"{record['train_accuracy']:.2%} | test loss {test['test_loss']:.4f} acc "
              f"{test['test_accuracy']:.2%} top-5 {test['test_top5_accuracy']:.2%} | "
              f"{record['epoch_time_s']:.1f}s", flush=True)
    if test is None:  # already finished: report what metrics.json says
        print(f"retrain already finished ({config.epochs} epochs): {metrics_path}")
        metrics = _read_metrics(metrics_path) or retrain.evaluate()
    else:
        metrics = {**test, **retrain_cost_fields(retrain), "parameters": params, "epochs": config.epochs,
                   # Training + evaluation time over all sessions of this run (checkpointed).
                   "wall_time_s": round(float(retrain.elapsed.numpy()), 1),
                   "genotype": retrain.record["genotype"]}
        if chief:
            atomic_write_json(metrics_path, metrics)
    if config.export_dir and chief:
        from keras_darts.export import export_model

        formats = parse_formats(config.format)
        paths = export_model(
            retrain.model, config.export_dir, formats, image_shape=retrain.record["image_shape"],
            mean=retrain.record["mean"], std=retrain.record["std"],
            class_names=retrain.record["class_names"],
            calibration_data=(data_lib.train_pixels(retrain.data, config.calibration_images)
                              if "tflite_int8" in formats else retrain.data.x_train),
            calibration_images=config.calibration_images, model_name=config.model_name,
            version=config.version, overwrite=config.overwrite,
            metadata={"run_dir": os.path.abspath(config.output_dir), "retrain_config": retrain.record})
        paths = paths if isinstance(paths, dict) else {formats[0]: paths}
        for fmt, path in paths.items():
            print(f"exported {_FORMAT_NAMES[fmt]}: {path}")
        # The first format's path, as before; all of them when there are several.
        metrics["export_path"] = paths[formats[0]]
        if len(paths) > 1:
            metrics["export_paths"] = paths
    return metrics


def _read_metrics(path):
    import json

    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None
