"""`Spec`: how a run's images become model inputs (shape, resizing, augmentation, normalisation)."""

import dataclasses

from keras_darts.data.augment import resolve_augment


@dataclasses.dataclass(frozen=True)
class Spec:
    """How images become model inputs.

    shape: (H, W, C) delivered. resize: images of any size are resized (train: shorter side, then
    random crop; eval: shorter side to `eval_resize` or just covering, then centre crop); without
    it every image must already be (H, W). augment: a resolved mode (augment.resolve_augment).
    """

    shape: tuple
    mean: tuple
    std: tuple
    augment: str = "none"
    cutout_length: int = 0
    resize: bool = False
    eval_resize: int = None
    where: str = "--dataset"


def spec_for(data, augment="none", cutout_length=0, eval_resize=None, where=None):
    """The Spec of `data` (an ImageData) with `augment` resolved for its shape and name; `where`
    (default "--dataset=<name>") prefixes error messages."""
    return Spec(data.image_shape, data.mean, data.std,
                augment=resolve_augment(augment, data.image_shape, data.name),
                cutout_length=cutout_length, resize=data.resize, eval_resize=eval_resize,
                where=where or f"--dataset={data.name}")
