"""`ExportConfig` and the export formats: the options of `bin/export` (and retrain's export)."""

import dataclasses

from keras_darts.config.options import _Options, _raise_first, option
from keras_darts.errors import UserError


EXPORT_FORMATS = ("saved_model", "tflite", "tflite_int8", "keras")


def parse_formats(spec, flag="--format"):
    """"saved_model,tflite" -> ("saved_model", "tflite"); one-line UserError for a bad name."""
    if isinstance(spec, (list, tuple)):
        spec = ",".join(spec)
    names = [n.strip() for n in str(spec).split(",")] if spec is not None else []
    for name in names:
        if name not in EXPORT_FORMATS:
            raise UserError(f"{flag}={spec}: unknown format {name!r}; must be one of "
                            f"{', '.join(EXPORT_FORMATS)} (or several, comma-separated)")
    if not names or len(set(names)) != len(names):
        raise UserError(f"{flag}={spec}: name each format once, e.g. --format=saved_model,tflite")
    return tuple(names)


def _export_checks(c):
    parse_formats(c.format)  # its own message names the bad format
    return [(c.calibration_images >= 1, "--calibration_images", c.calibration_images,
             "must be >= 1")]


@dataclasses.dataclass(frozen=True)
class ExportConfig(_Options):
    """`bin/export`: export a retrain run's latest checkpoint again, as a new version."""

    checkpoint_dir: str = option(None, "Retrain output directory: config.json and checkpoints/.")
    export_dir: str = option(None,
        "Base directory; the SavedModel goes to EXPORT_DIR/MODEL_NAME/VERSION/.")
    model_name: str = option("darts", "Model folder name (TF Serving MODEL_NAME).")
    version: int = option(None, "Positive version number; default: 1 + the largest existing "
                          "version.")
    overwrite: bool = option(False, "Replace an existing version folder.")
    format: str = option("saved_model",
        "saved_model (EXPORT_DIR/MODEL_NAME/VERSION/), tflite (LiteRT float32), tflite_int8 "
        "(LiteRT full-integer) or keras (EXPORT_DIR/MODEL_NAME-FORMAT/VERSION/); several "
        "comma-separated.")
    calibration_images: int = option(500,
        "Training images (of the run's dataset) that calibrate the tflite_int8 ranges.")

    def validate(self):
        _raise_first([
            (self.version is None or self.version >= 1, "--version", self.version,
             "must be a positive integer"),
            (bool(self.model_name) and "/" not in self.model_name and self.model_name[0] != ".",
             "--model_name", self.model_name, "must be a plain folder name"),
        ] + _export_checks(self))
