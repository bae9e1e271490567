"""Decoding images inside tf.data, and turning decode failures into one-line errors naming the file.

A failure inside tf.data surfaces as an InvalidArgumentError on the batch that holds the bad
image, without its name. Size mismatches carry the file name through a tf.debugging.Assert tagged
with MARK; for undecodable files `guard` asks the source's `diagnose` which file of the failing
batch it was (decoding them one by one, eagerly).
"""

import re

import tensorflow as tf

from keras_darts.errors import UserError

MARK = "keras_darts_bad_image"
_ASSERT = re.compile(MARK + r"\] \[(?P<what>[^\]]*)\] \[(?P<got>[^\]]*)\]")


def decode(encoded, channels):
    """Encoded JPEG/PNG/BMP/GIF (first frame) bytes -> uint8 (h, w, channels).

    Decoded with the file's own channel count, then converted: alpha dropped, grayscale repeated
    to RGB, RGB to luma (ITU-R 601, as PIL's convert("L")), so BMP and GIF convert like PNG does.
    """
    image = tf.io.decode_image(encoded, channels=0, dtype=tf.uint8, expand_animations=False)
    return convert_channels(image, channels)


def convert_channels(image, channels):
    have = tf.shape(image)[-1]
    image = tf.cond(have >= 3, lambda: image[..., :3],
                    lambda: tf.tile(image[..., :1], [1, 1, 3]))  # Gray(+alpha) -> 3 equal planes.
    image.set_shape([None, None, 3])
    if channels == 1:
        luma = tf.tensordot(tf.cast(image, tf.float32), tf.constant([0.299, 0.587, 0.114]), 1)
        image = tf.cast(tf.round(luma), tf.uint8)[..., None]
    return image


def check_size(image, size, what):
    """Asserts the image is (H, W); the error names `what` (a file) for `guard` to report."""
    shape = tf.shape(image)[:2]
    ok = tf.reduce_all(tf.equal(shape, tf.constant(size, tf.int32)))
    with tf.control_dependencies([tf.debugging.Assert(ok, [MARK, what, shape], summarize=3)]):
        return tf.identity(image)


def size_error(message, size, where):
    """A UserError for a tagged size assertion in `message`, or None."""
    match = _ASSERT.search(message)
    if not match:
        return None
    got = "x".join(match["got"].split()[:2][::-1])
    return UserError(f"{where}: mixed image sizes: {match['what']} is {got} (width x height) but "
                     f"the first image is {size[1]}x{size[0]}; pass --image_size=H[,W] to resize "
                     "them")


def guard(batches, where, size, diagnose):
    """Yields from `batches`; a decode failure becomes a UserError naming the file.

    `diagnose(step)` returns the name of the undecodable file in batch `step` (or None).
    """
    step = 0
    iterator = iter(batches)
    while True:
        try:
            batch = next(iterator)
        except StopIteration:
            return
        except tf.errors.InvalidArgumentError as e:
            error = size_error(str(e), size, where)
            if error is None:
                bad = diagnose(step) if diagnose else None
                reason = tf_reason(e)
                error = UserError(f"{where}: cannot decode image {bad or '(unknown file)'} "
                                  f"({reason}); remove it or pass --skip_corrupt")
            raise error from None
        yield batch
        step += 1


def tf_reason(error):
    """A TF error's own words, without the function-node and graph-node decorations."""
    text = re.sub(r"\{\{[^}]*\}\}|\[\[.*|\[Op:.*", "", error.message)
    return " ".join(text.split())[:160] or type(error).__name__


def first_bad(paths, channels):
    """The first of `paths` that tf.io cannot decode, or None."""
    for path in paths:
        if not try_decode(tf.io.read_file(path), channels):
            return path
    return None


def try_decode(encoded, channels):
    try:
        decode(encoded, channels)
        return True
    except tf.errors.InvalidArgumentError:
        return False
