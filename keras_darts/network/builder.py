"""Building a derived network from a retrain `config.json`, and counting its parameters."""

import numpy as np

from keras_darts.genotype import genotype_from_dict
from keras_darts.network.networks import NetworkCIFAR, NetworkImageNet


def count_parameters(model, exclude_auxiliary=True):
    """Trainable parameters (BN moving statistics excluded), as the reference's
    `count_parameters_in_MB` counts them (times 1e6): the auxiliary head is excluded by default."""
    excluded = set()
    head = getattr(model, "auxiliary_head", None)
    if exclude_auxiliary and head is not None:
        excluded = {id(v) for v in head.trainable_variables}
    return int(sum(np.prod(v.shape) for v in model.trainable_variables if id(v) not in excluded))


VARIANTS = {"cifar": NetworkCIFAR, "imagenet": NetworkImageNet}


def build_network_from_config(config):
    """Builds (and builds the weights of) the derived network a retrain `config.json` describes.

    Keys: `genotype` (dict), `num_classes`, `layers`, `init_channels`, `image_shape` ([H, W, C]),
    `variant` ("cifar" | "imagenet", default "cifar"), `auxiliary` (default True); optional
    `sync_bn`, `seed`, `recompute`.

    Raises:
      ValueError: a key is missing or malformed (the message names it).
    """
    for key in ("genotype", "num_classes", "layers", "init_channels", "image_shape"):
        if key not in config:
            raise ValueError(f"missing key {key!r}")
    variant = config.get("variant", "cifar")
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
    image_shape = config["image_shape"]
    if (not isinstance(image_shape, (list, tuple)) or len(image_shape) != 3
            or not all(isinstance(d, int) and d > 0 for d in image_shape)):
        raise ValueError(f"image_shape must be [height, width, channels], got {image_shape!r}")
    try:
        genotype = genotype_from_dict(config["genotype"])
    except ValueError as e:
        raise ValueError(f"genotype: {e}") from None
    model = VARIANTS[variant](
        genotype,
        num_classes=int(config["num_classes"]),
        layers=int(config["layers"]),
        init_channels=int(config["init_channels"]),
        auxiliary=bool(config.get("auxiliary", True)),
        in_channels=image_shape[2],
        sync_bn=bool(config.get("sync_bn", False)),
        seed=config.get("seed"),
        recompute=bool(config.get("recompute", False)),
    )
    model.build((None, *image_shape))
    return model
