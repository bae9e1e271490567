"""`build_model`: a derived network ready for `model.compile()` + `model.fit()`."""

import keras

from keras_darts.errors import UserError


def build_model(genotype, num_classes, input_shape, layers=20, channels=36, auxiliary=False,
                variant="cifar", seed=None):
    """The network a genotype defines (the reference `NetworkCIFAR` / `NetworkImageNet`), built.

    Args:
      genotype: a `Genotype`, its dict, a published name ("DARTS_V2") or a genotype.json path.
      num_classes: classifier width.
      input_shape: (H, W, C) of the (normalised, float) images it takes.
      layers: number of cells (>= 3); channels: C of the first cells (`--init_channels`).
      auxiliary: also return the auxiliary head's logits as a second output (train with
        `loss_weights=[1, auxiliary_weight]`, the paper's 0.4, and `y=(labels, labels)`).
      variant: "cifar" or "imagenet" (mobile setting: stride-2 stems).
      seed: seed of the drop-path masks (None: random).

    Returns:
      A built `keras.Model`: images -> logits (N, num_classes), or a functional model with the
      outputs [logits, aux_logits] (named so) when `auxiliary`. Both run drop path in training when its rate
      is set (`DropPathSchedule`, or `set_drop_path_prob` on the network); `keras_darts.export`
      takes either.
    """
    from keras_darts.genotype import Genotype, genotype_from_dict, load_genotype
    from keras_darts.network import VARIANTS

    if isinstance(genotype, dict):
        try:
            genotype = genotype_from_dict(genotype)
        except ValueError as e:
            raise UserError(f"genotype: {e}") from None
    elif not isinstance(genotype, Genotype):
        genotype = load_genotype(genotype, flag="genotype")
    if variant not in VARIANTS:
        raise UserError(f"variant={variant!r}: must be one of {', '.join(VARIANTS)}")
    try:
        input_shape = tuple(int(d) for d in input_shape)
        if len(input_shape) != 3 or min(input_shape) < 1:
            raise ValueError
    except (TypeError, ValueError):
        raise UserError(f"input_shape={input_shape!r}: must be (height, width, channels)") from None
    kwargs = {"stem_multiplier": 3} if variant == "cifar" else {}
    try:
        network = VARIANTS[variant](genotype, num_classes=int(num_classes), layers=int(layers),
                                    init_channels=int(channels), auxiliary=bool(auxiliary),
                                    in_channels=input_shape[2], seed=seed, **kwargs)
    except ValueError as e:
        raise UserError(f"build_model: {e}") from None
    network.build((None, *input_shape))
    if not auxiliary:
        return network
    images = keras.Input(input_shape, name="images")
    try:
        logits, aux_logits = network(images, return_aux=True)
    except ValueError as e:  # the auxiliary head needs the paper's input size (see its message)
        first = next((line for line in str(e).splitlines() if "needs" in line), str(e))
        raise UserError(f"auxiliary=True, input_shape={input_shape}: "
                        f"{first.replace(chr(27) + '[1m', '').replace(chr(27) + '[0m', '').strip()}") from None
    # Named outputs: compile(loss={"logits": ..., "aux_logits": ...}) or a list, in this order.
    logits = keras.layers.Identity(name="logits")(logits)
    aux_logits = keras.layers.Identity(name="aux_logits")(aux_logits)
    return keras.Model(images, [logits, aux_logits], name=f"{network.name}_with_auxiliary")
