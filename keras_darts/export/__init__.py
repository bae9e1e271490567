"""Exports of a derived network: SavedModel (TF Serving), LiteRT float32 / int8, Keras `.keras`.

`keras_darts.export(model, export_dir, format=...)` is `export_model` (this package is callable, so
the short call and `from keras_darts.export import export_saved_model` both keep working).
"""

import sys
import types

from keras_darts.export.formats import export_model, image_shape_of, inference_network
from keras_darts.export.from_run import export_from_run, restore_model
from keras_darts.export.keras_format import export_keras, with_preprocessing
from keras_darts.export.publish import check_version_free, model_folder
from keras_darts.export.saved_model import ServingModule, export_saved_model
from keras_darts.export.tflite import export_tflite, run_signature

__all__ = ["ServingModule", "check_version_free", "export_from_run", "export_keras", "export_model",
           "export_saved_model", "export_tflite", "image_shape_of", "inference_network",
           "model_folder", "restore_model", "run_signature", "with_preprocessing"]


class _CallableModule(types.ModuleType):
    """`keras_darts.export` is both this package and the API function: importing the package sets
    the attribute `keras_darts.export` to the module, so the module itself must be callable."""

    def __call__(self, model, export_dir, format="saved_model", **kwargs):
        return export_model(model, export_dir, format, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
