"""What config.json records about the data: shape, classes, normalisation, the search split."""

import hashlib
import json
import os

import numpy as np

from keras_darts.errors import UserError


def dataset_record(data):
    return {
        "name": data.name, "image_shape": list(data.image_shape),
        "num_classes": data.num_classes,
        "class_names": list(data.class_names) if data.class_names else None,
        "mean": list(data.mean), "std": list(data.std),
        "resized": bool(data.resize), "streamed": not data.in_memory,
        "skipped_corrupt": int(data.info.get("skipped_corrupt", 0)),
    }


def split_record(train_idx, val_idx, labels, seed):
    """The search split's sizes, per-class train counts and a digest of the train indices."""
    classes = int(np.max(labels)) + 1 if len(labels) else 0
    return {
        "seed": int(seed), "train": int(len(train_idx)), "val": int(len(val_idx)),
        "train_per_class": np.bincount(labels[train_idx], minlength=classes).tolist(),
        "train_sha256": hashlib.sha256(np.asarray(train_idx, np.int64).tobytes()).hexdigest(),
    }


def _previous(output_dir):
    try:
        with open(os.path.join(output_dir, "config.json")) as f:
            record = json.load(f)
        return record if isinstance(record, dict) else {}
    except (OSError, ValueError):
        return {}


def check_same_normalisation(output_dir, data, where):
    """A resumed retrain must normalise as it started (the recorded mean/std)."""
    previous = _previous(output_dir)
    mean, std = previous.get("mean"), previous.get("std")
    if mean is None or std is None:
        return
    if not (np.allclose(mean, data.mean, rtol=1e-9, atol=0) and
            np.allclose(std, data.std, rtol=1e-9, atol=0)):
        raise UserError(f"{where}: normalisation mean/std {list(data.mean)} / {list(data.std)} "
                        f"differ from the run's in {output_dir} ({mean} / {std}); use a new "
                        "--output_dir or the original data and --mean/--std")


def check_same_split(output_dir, split, where):
    """A resumed search must see the split it started with (same data, same seed)."""
    previous = (_previous(output_dir).get("dataset_info") or {}).get("split")
    if previous and previous.get("train_sha256") != split["train_sha256"]:
        raise UserError(f"{where}: the data changed since this run started in {output_dir} (its "
                        f"search split had {previous.get('train')} train / {previous.get('val')} "
                        f"val images, now {split['train']} / {split['val']}); use a new "
                        "--output_dir or the original data")
