"""Bad input to the data layer (issue 10, point 6): one line naming the file or flag, nothing written.

In-process (the bin/ tools print a UserError as one line and exit 2: test_robustness checks that
path for every tool).
"""

import io
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_darts import data as D
from keras_darts.config import RetrainConfig, SearchConfig
from keras_darts.errors import UserError


def _folder(root, per_class=3, size=(6, 6), ext="png"):
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        os.makedirs(root / cls, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(
                root / cls / f"{i}.{ext}")
    return root


def _one_line(excinfo):
    message = str(excinfo.value)
    assert "\n" not in message and "Traceback" not in message
    return message


def test_corrupt_images_are_named_or_skipped_and_counted(tmp_path, capsys):
    root = _folder(tmp_path / "d", ext="jpg")
    whole = (root / "a" / "0.jpg").read_bytes()
    (root / "a" / "cut.jpg").write_bytes(whole[: len(whole) // 2])  # Truncated: no end marker.
    with pytest.raises(UserError, match=r"^--dataset=.*d: cannot read image .*a/cut\.jpg \("
                                        r"truncated JPEG.*pass --skip_corrupt") as e:
        D.load_image_data(str(root))
    _one_line(e)
    # Damage inside the file (ends intact) is found while decoding, and still named.
    os.remove(root / "a" / "cut.jpg")
    png = bytearray((_folder(tmp_path / "p") / "b" / "1.png").read_bytes())
    png[40:80] = bytes(40)
    (tmp_path / "p" / "b" / "1.png").write_bytes(bytes(png))
    with pytest.raises(UserError, match=r"^--dataset=.*p: cannot decode image .*p/b/1\.png "
                                        r"\(.*\); remove it or pass --skip_corrupt") as e:
        D.load_image_data(str(tmp_path / "p"))
    _one_line(e)
    (root / "b" / "bad.jpg").write_bytes(b"\xff\xd8\xff not a jpeg at all \xff\xd9")
    (root / "b" / "text.png").write_bytes(b"hello")
    data = D.load_image_data(str(root), options=D.DataOptions(skip_corrupt=True))
    assert len(data.train) == 6 and data.info["skipped_corrupt"] == 2
    assert D.dataset_record(data)["skipped_corrupt"] == 2  # What config.json records.
    assert "skipped 2 unreadable image(s) (--skip_corrupt)" in capsys.readouterr().out


def test_empty_folders(tmp_path):
    root = _folder(tmp_path / "d")
    os.makedirs(root / "empty")
    with pytest.raises(UserError, match=r"^--dataset=.*d: class folder .*d/empty holds no images"):
        D.load_image_data(str(root))
    os.makedirs(tmp_path / "none" / "x")
    (tmp_path / "none" / "x" / "notes.txt").write_text("no images here")
    with pytest.raises(UserError, match=r"class folder .*none/x holds no images \(\.png, \.jpg"):
        D.load_image_data(str(tmp_path / "none"))
    os.makedirs(tmp_path / "flat")
    with pytest.raises(UserError, match=r"^--dataset=.*flat: no class sub-folders"):
        D.load_image_data(str(tmp_path / "flat"))


def test_tfrecord_without_the_named_features(tmp_path):
    path = tmp_path / "train.tfrecord"
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buffer, "PNG")
    with tf.io.TFRecordWriter(str(path)) as writer:
        for label in (0, 1):
            feature = {"img": tf.train.Feature(bytes_list=tf.train.BytesList(value=[buffer.getvalue()])),
                       "cls": tf.train.Feature(int64_list=tf.train.Int64List(value=[label]))}
            writer.write(tf.train.Example(
                features=tf.train.Features(feature=feature)).SerializeToString())
    with pytest.raises(UserError, match=r"^--dataset=.*train\.tfrecord: expected tf\.train\.Example "
                                        r"records with an encoded image 'image/encoded' "
                                        r"\(--image_feature\) and an int64 label "
                                        r"'image/class/label' \(--label_feature\): Feature: "
                                        r"image/class/label .* could not be found") as e:
        D.load_image_data(str(path))
    _one_line(e)
    data = D.load_image_data(str(path), options=D.DataOptions(image_feature="img",
                                                              label_feature="cls"))
    assert data.y_train.tolist() == [0, 1] and data.image_shape == (4, 4, 3)
    (tmp_path / "junk.tfrecord").write_bytes(b"\x00" * 40)
    with pytest.raises(UserError, match=r"junk\.tfrecord: corrupt TFRecord file"):
        D.load_image_data(str(tmp_path / "junk.tfrecord"))


@pytest.mark.parametrize("cls", [SearchConfig, RetrainConfig])
@pytest.mark.parametrize("flag,value,message", [
    ("image_size", "0", "--image_size=0: must be H or H,W with positive integers"),
    ("image_size", "16,-3", "--image_size=16,-3: must be H or H,W with positive integers"),
    ("image_size", "big", "--image_size=big: expected numbers separated by commas"),
    ("channels", 2, "--channels=2: must be 1 or 3"),
    ("channels", 4, "--channels=4: must be 1 or 3"),
    ("std", "0.2,0", "--std=0.2,0: must be positive numbers"),
    ("stats_sample", 0, "--stats_sample=0: must be > 0"),
])
def test_bad_data_flags(cls, flag, value, message):
    with pytest.raises(UserError) as e:
        cls(**{flag: value}).validate()
    assert str(e.value) == message


def test_search_leaves_the_output_dir_untouched(tmp_path):
    from keras_darts import search_loop

    root = _folder(tmp_path / "d")
    (root / "b" / "2.png").write_bytes((root / "b" / "2.png").read_bytes()[:30])
    out = tmp_path / "out"
    config = SearchConfig(dataset=str(root), output_dir=str(out), layers=3, init_channels=4,
                          nodes=1, batch_size=2, epochs=1)
    with pytest.raises(UserError, match=r"cannot read image .*b/2\.png \(truncated PNG"):
        search_loop.run(config)
    assert not out.exists()
