"""`bin/export`: re-export a retrain run's latest checkpoint in any format."""

import json
import os

import tensorflow as tf

from keras_darts.config import parse_formats
from keras_darts.errors import UserError


def _read_config(run_dir):
    if not os.path.isdir(run_dir):
        raise UserError(f"--checkpoint_dir={run_dir}: no such directory")
    config_path = os.path.join(run_dir, "config.json")
    try:
        with open(config_path) as f:
            config = json.load(f)
    except FileNotFoundError:
        raise UserError(f"--checkpoint_dir={run_dir}: no config.json (is it a retrain output "
                        "directory?)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{config_path}: cannot read JSON ({e})") from None
    if not isinstance(config, dict):
        raise UserError(f"{config_path}: expected a JSON object")
    for key in ("mean", "std"):
        if key not in config:
            raise UserError(f"{config_path}: missing key {key!r}")
    return config_path, config


def restore_model(run_dir):
    """(model, config dict, checkpoint path) of the latest checkpoint of a retrain run.

    `run_dir/config.json` describes the model (see `network.build_network_from_config`) and the
    preprocessing (`image_shape`, `mean`, `std`, optional `class_names`); `run_dir/checkpoints/`
    holds `tf.train.Checkpoint(model=model, ...)` checkpoints of a `tf.train.CheckpointManager`.
    """
    from keras_darts.network import build_network_from_config

    config_path, config = _read_config(run_dir)
    ckpt_dir = os.path.join(run_dir, "checkpoints")
    latest = tf.train.latest_checkpoint(ckpt_dir) if os.path.isdir(ckpt_dir) else None
    if latest is None:
        raise UserError(f"--checkpoint_dir={run_dir}: no checkpoint in {ckpt_dir}")
    try:
        model = build_network_from_config(config)
    except (ValueError, TypeError) as e:
        raise UserError(f"{config_path}: {e}") from None
    try:
        status = tf.train.Checkpoint(model=model).restore(latest).expect_partial()
        status.assert_existing_objects_matched()
    except (AssertionError, ValueError, tf.errors.OpError) as e:
        first = " ".join(str(e).split())[:200]
        raise UserError(f"{latest}: checkpoint does not match the model config.json describes "
                        f"({first})") from None
    return model, config, latest


def calibration_data_of(config):
    """The training images of the run's dataset (what tflite_int8 calibrates on)."""
    from keras_darts.data import load_image_data, train_pixels

    dataset = config.get("dataset")
    if not dataset:
        raise UserError("--format=tflite_int8: the run's config.json names no dataset to draw "
                        "calibration images from")
    if dataset.startswith("<in-memory"):  # a keras_darts.retrain of arrays: nothing to reload
        raise UserError("--format=tflite_int8: the run trained on in-memory data; export it from "
                        "Python: keras_darts.export(model, ..., calibration_data=x_train)")
    data = load_image_data(dataset, config.get("data_dir"), flag="--dataset (from config.json)")
    return train_pixels(data, config.get("calibration_images"))


def export_from_run(run_dir, export_dir, model_name="darts", version=None, overwrite=False,
                    format="saved_model", calibration_images=500):
    """Exports the latest checkpoint of a retrain run in `format` (one or comma-separated).

    Returns:
      The version folder's path ({format: path} for several formats).

    Raises:
      UserError: missing run dir, config or checkpoint; a config the model cannot be built from; a
        checkpoint that does not fit that model; a version clash; an export refused (see
        `export_model`).
    """
    from keras_darts.export.formats import export_model, serving_crop

    formats = parse_formats(format)
    model, config, latest = restore_model(run_dir)
    calibration = calibration_data_of(config) if "tflite_int8" in formats else None
    return export_model(
        model, export_dir, format, image_shape=config["image_shape"], mean=config["mean"],
        std=config["std"], class_names=config.get("class_names"), calibration_data=calibration,
        calibration_images=calibration_images, model_name=model_name, version=version,
        overwrite=overwrite, crop=serving_crop(config),
        metadata={"run_dir": os.path.abspath(run_dir), "checkpoint": os.path.abspath(latest),
                  "retrain_config": config})

