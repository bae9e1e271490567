"""tfds datasets by name: opened offline-safely, streamed with tfds' own `as_dataset`."""

import difflib

from keras_darts.data.npz import Split, short
from keras_darts.data.records import tfds_examples
from keras_darts.errors import UserError


def is_tfds_name(name):
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

    return name.split(":")[0].split("/")[0] in tfds.list_builders()


def suggestion(name):
    try:
        import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

        close = difflib.get_close_matches(name, tfds.list_builders(), n=1)
    except Exception:  # pylint: disable=broad-except
        close = []
    return f" (did you mean {close[0]}?)" if close else " (a .npz file, a folder, or e.g. cifar10)"


def load_tfds(name, data_dir, flag, with_test, need_test):
    """(train Split, test Split or None) of a tfds dataset, refusing fast when it is not prepared.

    absl warnings are muted meanwhile: a failed download logs "Variant folder ... has no
    dataset_info.json" to stderr, and a user error must stay one line there.
    """
    from absl import logging as absl_logging  # pylint: disable=import-outside-toplevel

    verbosity = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.ERROR)
    try:
        return _load_splits(name, data_dir, flag, with_test, need_test)
    finally:
        absl_logging.set_verbosity(verbosity)


def _load_splits(name, data_dir, flag, with_test, need_test):
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

    where = f"{flag}={name}"
    shown_dir = data_dir or "(default ~/tensorflow_datasets)"
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as e:  # pylint: disable=broad-except
        raise UserError(f"{where}: cannot open the tfds dataset ({short(e)})") from e
    if not builder.is_prepared():
        try:
            builder.download_and_prepare()
        except Exception as e:  # pylint: disable=broad-except  # Offline: any error, fast.
            raise UserError(
                f"{where}: could not fetch the data (no network?) and no prepared copy in "
                f"--data_dir={shown_dir} ({short(e)}); point --data_dir at a prepared tfds data "
                f"directory or pass {flag}=/path/to/train.npz (or a folder of class sub-folders)"
            ) from e
    splits = set(builder.info.splits.keys())
    names = None
    try:
        names = tuple(builder.info.features["label"].names)
    except (KeyError, AttributeError):  # No ClassLabel named "label": labels stay unnamed.
        pass
    train = Split(f"{where} (train split)", examples=tfds_examples(builder, "train", where),
                  class_names=names)
    test = None
    if not with_test:
        pass
    elif not splits or "test" in splits:  # Splits are unknown under tfds.testing.mock_data.
        test = Split(f"{where} (test split)", examples=tfds_examples(builder, "test", where),
                     class_names=names)
    elif need_test:
        raise UserError(f"{where}: has no test split (splits: {', '.join(sorted(splits))}); "
                        "pass --test_dataset")
    return train, test
