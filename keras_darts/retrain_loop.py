"""`bin/retrain`: trains a genotype's network from scratch (reference: `train.py`) and exports it.

Per epoch: training with drop path (probability ramped linearly with the epoch) and the auxiliary
head, evaluation on the test split (top-1, top-5), TensorBoard scalars, a checkpoint. At the end:
`metrics.json` and, with `--export_dir`, a SavedModel version for TF Serving.
"""

import os
import time

import keras
import numpy as np

from keras_darts import data as data_lib
from keras_darts import distribute
from keras_darts import genotype as genotype_lib
from keras_darts import run_utils
from keras_darts.config import RETRAIN_RESUME_NEUTRAL, RetrainConfig, parse_formats  # noqa: F401
from keras_darts.io_utils import atomic_write_json
from keras_darts.latency import retrain_cost_fields
from keras_darts.loop_timing import LoopTimer, timing_scalars, waited
from keras_darts.network import count_parameters
from keras_darts.retrain_run import RetrainRun, model_record  # noqa: F401 (re-export)

METRICS_FILE = "metrics.json"
_FORMAT_NAMES = {"saved_model": "SavedModel", "tflite": "LiteRT float32", "tflite_int8": "LiteRT int8",
                 "keras": "Keras model"}


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
    # Before loading: reading some data sets starts TensorFlow, which fixes its thread pools.
    distribute.configure_threads(config.intra_op_threads, config.inter_op_threads)
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
        timer = LoopTimer()
        for batch in timer.batches(retrain.epoch_dataset(epoch, start_step)):
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
                  "epoch_time_s": time.time() - t0, "timing": timer.record()}
        summaries.scalars({f"retrain/{k}": record[k] for k in (
            "train_loss", "train_accuracy", "test_loss", "test_accuracy", "test_top5_accuracy",
            "learning_rate", "drop_path_prob")}, epoch + 1)
        summaries.scalars(timing_scalars(record["timing"]), epoch + 1)
        summaries.flush()
        retrain.elapsed.assign_add(record["epoch_time_s"])
        retrain.epoch.assign(epoch + 1)
        retrain.step_in_epoch.assign(0)
        retrain.sums.assign(np.zeros(3))
        manager.save(checkpoint_number=(epoch + 1) * retrain.steps)
        print(f"epoch {epoch + 1}: train loss {record['train_loss']:.4f} acc "
              f"{record['train_accuracy']:.2%} | test loss {test['test_loss']:.4f} acc "
              f"{test['test_accuracy']:.2%} top-5 {test['test_top5_accuracy']:.2%} | "
              f"{record['epoch_time_s']:.1f}s{waited(record['timing'])}", flush=True)
    if test is None:  # already finished: report what metrics.json says
        print(f"retrain already finished ({config.epochs} epochs): {metrics_path}")
        metrics = _read_metrics(metrics_path) or retrain.evaluate()
    else:
        metrics = {**test, **retrain_cost_fields(retrain), "parameters": params, "epochs": config.epochs,
                   # Training + evaluation time over all sessions of this run (checkpointed).
                   "wall_time_s": round(float(retrain.elapsed.numpy()), 1),
                   "last_epoch_timing": record["timing"],
                   "genotype": retrain.record["genotype"]}
        if chief:
            atomic_write_json(metrics_path, metrics)
    if config.export_dir and chief:
        from keras_darts.export import export_model
        from keras_darts.export.formats import serving_crop

        formats = parse_formats(config.format)
        paths = export_model(
            retrain.model, config.export_dir, formats, image_shape=retrain.record["image_shape"],
            mean=retrain.record["mean"], std=retrain.record["std"],
            class_names=retrain.record["class_names"],
            calibration_data=(data_lib.train_pixels(retrain.data, config.calibration_images)
                              if "tflite_int8" in formats else retrain.data.x_train),
            calibration_images=config.calibration_images, model_name=config.model_name,
            version=config.version, overwrite=config.overwrite, crop=serving_crop(retrain.record),
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
