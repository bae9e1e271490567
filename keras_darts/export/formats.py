"""`export_model`: one entry point for every format (what `keras_darts.export(...)` calls)."""

from keras_darts.config import parse_formats
from keras_darts.errors import UserError
from keras_darts.export.keras_format import export_keras
from keras_darts.export.saved_model import export_saved_model
from keras_darts.export.publish import check_version_free
from keras_darts.export.tflite import calibration_subset, export_tflite

# LiteRT conversion is what can still fail late (an op it cannot convert): do it first.
_LITERT_FIRST = ("tflite_int8", "tflite", "keras", "saved_model")


def inference_network(model):
    """The derived network inside `model` (build_model's two-output wrapper), else `model`."""
    from keras_darts.network import NetworkCIFAR, NetworkImageNet

    if isinstance(model, (NetworkCIFAR, NetworkImageNet)):
        return model
    for layer in getattr(model, "layers", []):
        if isinstance(layer, (NetworkCIFAR, NetworkImageNet)):
            return layer
    return model


def image_shape_of(model):
    """(H, W, C) the model was built for, when Keras recorded it."""
    shape = None
    try:
        shape = model.input_shape
    except (AttributeError, ValueError):
        shapes = getattr(model, "_build_shapes_dict", None) or {}
        shape = next(iter(shapes.values()), None)
    if shape is None or len(shape) != 4 or any(d is None for d in shape[1:]):
        raise UserError("image_shape: the model's input size is unknown; pass image_shape=(H, W, C)")
    return tuple(int(d) for d in shape[1:])


def export_model(model, export_dir, format="saved_model", *, image_shape=None, mean=0.0, std=1.0,
                 class_names=None, calibration_data=None, calibration_images=500,
                 model_name="darts", version=None, overwrite=False, metadata=None, verify=True,
                 crop=None):
    """Exports a derived network in one or several formats.

    Args:
      model: a derived network (`build_model`, `NetworkCIFAR`, ...) or any Keras classifier of
        normalised float images; called in inference mode (no auxiliary head, no drop path).
      export_dir: base directory; format F goes to `export_dir/<model_name>[-F]/<version>/`
        (saved_model: `export_dir/<model_name>/<version>/`, the layout TF Serving watches).
      format: "saved_model", "tflite", "tflite_int8" or "keras", or several joined by commas.
      image_shape: (H, W, C) of the input images; default: the size the model was built for.
      mean, std: the normalisation the model was trained with, in [0, 1] pixel scale (per channel
        or one number): the exports take raw uint8 pixels and compute (x / 255 - mean) / std.
      class_names: names indexed by class, stored in/beside the export.
      calibration_data: uint8 training images (N, H, W, C) for tflite_int8.
      calibration_images: how many of them calibrate the int8 ranges (a seeded random choice).
      model_name, version, overwrite: the version folder (version None: the next number).
      metadata: extra entries for keras_darts_export.json.
      verify: check each export reproduces the model before publishing it.
      crop: how the SavedModel's `serving_bytes` fits images of other sizes (`serving_crop`).

    Returns:
      The version folder's path; a {format: path} dict when several formats were asked for.

    Raises:
      UserError: an unknown format, bad arguments, an op LiteRT cannot convert, calibration data
        of the wrong shape, a version clash. Nothing is left in export_dir then.
    """
    formats = parse_formats(format)
    network = inference_network(model)
    if image_shape is None:
        image_shape = image_shape_of(model)
    # Everything that can be refused is checked (or converted) before anything is published.
    check_version_free(export_dir, model_name, version, overwrite, formats)
    if "tflite_int8" in formats:
        calibration_subset(calibration_data, calibration_images, tuple(image_shape))
    common = dict(image_shape=image_shape, mean=mean, std=std, class_names=class_names,
                  overwrite=overwrite, metadata=metadata, verify=verify)
    paths = {}
    for fmt in sorted(formats, key=_LITERT_FIRST.index):
        if fmt == "saved_model":
            paths[fmt] = export_saved_model(network, export_dir, model_name, version, crop=crop,
                                            **common)
        elif fmt == "keras":
            paths[fmt] = export_keras(network, export_dir, model_name, version, **common)
        else:
            paths[fmt] = export_tflite(network, export_dir, model_name, version,
                                       quantize=fmt == "tflite_int8", calibration_data=calibration_data,
                                       calibration_images=calibration_images, **common)
    return paths[formats[0]] if len(formats) == 1 else {f: paths[f] for f in formats}


def serving_crop(record):
    """`crop` for a retrain record: set when the run resized its images (--image_size), so served
    bytes get the evaluation transform (shorter side, centre crop) the test split got."""
    if not (record.get("dataset_info") or {}).get("resized"):
        return None
    return {"eval_resize": record.get("eval_resize")}
