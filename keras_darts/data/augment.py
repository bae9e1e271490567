"""Augmentations: the reference's CIFAR transform (pad-4 crop, flip, cutout), resize + crop for images
of any size, and the reference's ImageNet transform (RandomResizedCrop, flip, ColorJitter).

Batched functions take per-example draws from the seeded tables of split.py; per-example ones take
uniform draws `u` (5,) and a stateless seed (2,) so every example's augmentation depends only on
(seed, epoch, example).
"""

import tensorflow as tf

from keras_darts.config import AUGMENT_CHOICES
from keras_darts.data.split import PAD
from keras_darts.errors import UserError

# Datasets whose mirror image is another class or no class at all (digits, letters).
NO_FLIP_DATASETS = frozenset({"mnist", "fashion_mnist", "emnist", "kmnist", "svhn_cropped"})
# The reference's train_imagenet.py: RandomResizedCrop defaults and ColorJitter(0.4, 0.4, 0.4, 0.2).
RESIZED_CROP_SCALE = (0.08, 1.0)
RESIZED_CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)
JITTER = {"brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0.2}


def resolve_augment(augment, image_shape, name=None):
    """Turns `augment` into "none", "crop", "crop_flip" or "imagenet".

    "auto" flips only 3-channel images of datasets where a mirror image keeps its class (not
    digits or letters).
    """
    if augment not in AUGMENT_CHOICES:
        raise UserError(f"--augment={augment}: expected one of {', '.join(AUGMENT_CHOICES)}")
    if augment != "auto":
        return augment
    base = (name or "").split(":")[0].split("/")[0].lower()
    if image_shape[-1] == 1 or base in NO_FLIP_DATASETS:
        return "crop"
    return "crop_flip"


# === Batched (in-memory CIFAR path) ===


def crop_flip(pixels, dy, dx, flip):
    """Zero-pads by PAD, crops each image back to (H, W) at (dy, dx), then mirrors it if `flip`.

    The flip is folded into the column indices (crop column j reads padded column dx + W-1-j), one
    gather instead of a reverse and a select, which cost more than the crop itself.
    """
    height, width = pixels.shape[1], pixels.shape[2]
    padded = tf.pad(pixels, [[0, 0], [PAD, PAD], [PAD, PAD], [0, 0]])
    j = tf.range(width)[None, :]
    rows = dy[:, None] + tf.range(height)[None, :]
    cols = dx[:, None] + tf.where(flip[:, None] == 1, width - 1 - j, j)
    return tf.gather(tf.gather(padded, rows, axis=1, batch_dims=1), cols, axis=2, batch_dims=1)


def cutout(images, cy, cx, length):
    """Zeroes rows [cy - L//2, cy + L//2) x cols [cx - L//2, cx + L//2), clipped (the reference's).

    Odd lengths give a square of side L - 1, exactly as the reference `Cutout` does.
    """
    half = length // 2
    rows = tf.range(images.shape[1])[None, :]
    cols = tf.range(images.shape[2])[None, :]
    in_rows = (rows >= cy[:, None] - half) & (rows < cy[:, None] + half)
    in_cols = (cols >= cx[:, None] - half) & (cols < cx[:, None] + half)
    mask = in_rows[:, :, None, None] & in_cols[:, None, :, None]
    return tf.where(mask, tf.zeros_like(images), images)


# === Per example (images of any size) ===


def to_uint8(image):
    return tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)


def resize_shorter(image, size):
    """Bilinear resize so the image covers (H, W) = `size` with its aspect kept (for a square size:
    the shorter side becomes `size`); images already covering it exactly are left untouched."""
    shape = tf.cast(tf.shape(image)[:2], tf.float64)
    scale = tf.maximum(size[0] / shape[0], size[1] / shape[1])
    new = tf.cast(tf.math.ceil(shape * scale - 1e-6), tf.int32)
    new = tf.maximum(new, tf.constant(size, tf.int32))
    same = tf.reduce_all(tf.equal(new, tf.shape(image)[:2]))
    return tf.cond(same, lambda: image,
                   lambda: to_uint8(tf.image.resize(image, new, method="bilinear")))


def crop_at(image, size, fy, fx):
    """The (H, W) window at fractions (fy, fx) in [0, 1) of the free rows/columns."""
    shape = tf.shape(image)[:2]
    dy = tf.cast(tf.floor(fy * tf.cast(shape[0] - size[0] + 1, tf.float64)), tf.int32)
    dx = tf.cast(tf.floor(fx * tf.cast(shape[1] - size[1] + 1, tf.float64)), tf.int32)
    return image[dy : dy + size[0], dx : dx + size[1]]


def centre_crop(image, size):
    shape = tf.shape(image)[:2]
    dy, dx = (shape[0] - size[0]) // 2, (shape[1] - size[1]) // 2
    return image[dy : dy + size[0], dx : dx + size[1]]


def eval_transform(image, size, resize_to=None):
    """Evaluation: resize (shorter side to `resize_to`, default: just covering `size`), centre crop."""
    if resize_to:
        ratio = resize_to / min(size)
        image = resize_shorter(image, (int(round(size[0] * ratio)), int(round(size[1] * ratio))))
    else:
        image = resize_shorter(image, size)
    return centre_crop(image, size)


def train_resize_crop(image, size, u, flip):
    """Training for images of any size: resize the shorter side, random crop, optional flip."""
    image = crop_at(resize_shorter(image, size), size, u[0], u[1])
    if flip:
        image = tf.cond(u[2] < 0.5, lambda: image, lambda: image[:, ::-1])
    return image


def random_resized_crop(image, size, seed):
    """torchvision's RandomResizedCrop(size): a box of 8-100% of the area and aspect 3/4-4/3 (10
    tries, else the whole image), resized bilinearly to `size`; float32 0..255 out."""
    begin, box, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image), tf.zeros([1, 0, 4], tf.float32), seed=seed, min_object_covered=0.0,
        aspect_ratio_range=RESIZED_CROP_RATIO, area_range=RESIZED_CROP_SCALE, max_attempts=10,
        use_image_if_no_bounding_boxes=True)
    window = tf.slice(image, begin, box)
    return tf.image.resize(tf.cast(window, tf.float32), size, method="bilinear")


def colour_jitter(image, u):
    """torchvision's ColorJitter(0.4, 0.4, 0.4, 0.2) on float 0..255 images, in a fixed order
    (brightness, contrast, saturation, hue; torchvision shuffles the order)."""
    u = tf.cast(u, tf.float32)
    factor = lambda x, k: 1.0 + JITTER[k] * (2.0 * x - 1.0)  # noqa: E731  U(1-j, 1+j)
    x = tf.clip_by_value(image / 255.0 * factor(u[0], "brightness"), 0.0, 1.0)
    gray = tf.image.rgb_to_grayscale(x) if x.shape[-1] == 3 else x
    x = tf.clip_by_value((x - tf.reduce_mean(gray)) * factor(u[1], "contrast")
                         + tf.reduce_mean(gray), 0.0, 1.0)
    if x.shape[-1] == 3:
        gray = tf.image.rgb_to_grayscale(x)
        x = tf.clip_by_value(gray + (x - gray) * factor(u[2], "saturation"), 0.0, 1.0)
        x = tf.image.adjust_hue(x, JITTER["hue"] * (2.0 * u[3] - 1.0))
    return x * 255.0


def imagenet_train(image, size, u, seed):
    """The reference's ImageNet training transform up to ToTensor (float32 0..255 out)."""
    image = random_resized_crop(image, size, seed)
    image = tf.cond(u[2] < 0.5, lambda: image, lambda: image[:, ::-1])
    return colour_jitter(image, u)
