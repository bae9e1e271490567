"""`search` and `retrain` from Python: the same runs as `bin/search` and `bin/retrain`.

Options are the CLI's flags by the same names (the fields of `SearchConfig` / `RetrainConfig`);
an unknown name is a one-line `UserError` with the closest valid one. With `output_dir=None` the
run writes to a temporary directory that is deleted when it ends (no resume then); with a
directory, everything the CLI writes is there and rerunning the same call resumes.
"""

import contextlib
import dataclasses
import os
import tempfile

from keras_darts.api.inputs import describe, to_image_data
from keras_darts.config import RetrainConfig, SearchConfig
from keras_darts.errors import UserError


@dataclasses.dataclass
class SearchResult:
    """What a search found.

    Attributes:
      genotype: the derived `Genotype` (the final epoch's).
      history: one dict per epoch, as in history.jsonl (losses, accuracies, softmaxed alphas,
        genotype).
      supernet: the trained `SearchNetwork` (weights and alphas, `supernet.genotype()`).
      output_dir: where the run's files are; None when it ran in a temporary directory.
    """

    genotype: object
    history: list
    supernet: object
    output_dir: str = None


@dataclasses.dataclass
class RetrainResult:
    """What a retrain gave: `metrics` (metrics.json's contents), the trained `model`
    (a NetworkCIFAR/NetworkImageNet on normalised images) and `output_dir` (None if temporary)."""

    metrics: dict
    model: object
    output_dir: str = None


@contextlib.contextmanager
def _run_dir(output_dir):
    if output_dir is not None:
        yield output_dir
        return
    with tempfile.TemporaryDirectory(prefix="keras_darts-") as tmp:
        yield os.path.join(tmp, "run")


def _config(cls, train_data, output_dir, options, class_names):
    if isinstance(train_data, str) and class_names is not None:
        raise UserError("class_names: only for in-memory data (a --dataset brings its own)")
    if "dataset" in options:
        raise UserError("dataset: pass the data as train_data (a --dataset string, (x, y) arrays "
                        "or a tf.data.Dataset), not as an option")
    config = cls.from_options(dataset=describe(train_data), output_dir=output_dir, **options)
    config.validate()
    return config


def search(train_data, *, output_dir=None, class_names=None, quiet=False, **options):
    """Runs a DARTS search (what `bin/search` runs).

    Args:
      train_data: a `--dataset` string (tfds name, .npz, folder), `(x, y)` numpy arrays (uint8
        images (N, H, W, C) or (N, H, W), integer labels) or a `tf.data.Dataset` of
        (image, label). It is split into search-train/search-val by `train_portion`.
      output_dir: the run directory (config, history, genotype, checkpoints, TensorBoard), or
        None for a temporary one.
      class_names: names indexed by label, for in-memory data.
      quiet: no progress bar.
      **options: any `bin/search` flag by name: layers, init_channels, nodes, epochs,
        batch_size, steps_per_epoch, unrolled, seed, ...

    Returns:
      A `SearchResult`.
    """
    config = _config(SearchConfig, train_data, output_dir, options, class_names)
    data = None if isinstance(train_data, str) else to_image_data(train_data, None, class_names)
    from keras_darts.io_utils import read_jsonl
    from keras_darts.search_loop import HISTORY_FILE, run_search

    with _run_dir(output_dir) as run_dir:
        config = dataclasses.replace(config, output_dir=run_dir)
        genotype, run = run_search(config, quiet=quiet, data=data)
        history = read_jsonl(os.path.join(run_dir, HISTORY_FILE))
    return SearchResult(genotype, history, run.model, output_dir)


def retrain(genotype, train_data, *, test_data=None, output_dir=None, class_names=None,
            quiet=False, **options):
    """Trains a genotype's network from scratch and evaluates it (what `bin/retrain` runs).

    Args:
      genotype: a `Genotype`, a published name ("DARTS_V2") or a genotype.json path.
      train_data: as for `search`; a `--dataset` string brings its own test split.
      test_data: the test split for in-memory train_data (required then).
      output_dir: the run directory, or None for a temporary one.
      **options: any `bin/retrain` flag by name: layers, init_channels, epochs, auxiliary,
        drop_path_prob, export_dir, format, ...

    Returns:
      A `RetrainResult`.
    """
    from keras_darts.genotype import Genotype, load_genotype

    if "genotype" in options:
        raise UserError("genotype: pass it as the first argument, not as an option")
    spec = genotype if isinstance(genotype, str) else "<given Genotype>"
    config = _config(RetrainConfig, train_data, output_dir, {**options, "genotype": spec},
                     class_names)
    if not isinstance(genotype, Genotype):
        genotype = load_genotype(genotype, flag="genotype")
    data = None
    if not isinstance(train_data, str):
        data = to_image_data(train_data, test_data, class_names, need_test=True)
    elif test_data is not None:
        raise UserError("test_data: a --dataset string brings its own test split (or pass "
                        "test_dataset=PATH)")
    from keras_darts.retrain_loop import run_retrain

    with _run_dir(output_dir) as run_dir:
        config = dataclasses.replace(config, output_dir=run_dir)
        metrics, run = run_retrain(config, quiet=quiet, data=data, genotype=genotype)
    return RetrainResult(metrics, run.model, output_dir)
