"""What search and retrain runs share: output-dir checks, checkpoint restore, determinism, logs."""

import json
import math
import os
import sys

import tensorflow as tf

from keras_darts.errors import DivergenceError, UserError
from keras_darts.io_utils import atomic_write_json

CONFIG_FILE = "config.json"
CHECKPOINT_SUBDIR = "checkpoints"


def check_output_dir(output_dir, config, resume_neutral=(), defaults=None):
    """Validates `--output_dir` without writing anything.

    Returns True when it holds an earlier run of the same configuration (to resume). Raises
    UserError when it is a file, is not writable, or holds a run of a different configuration.
    `defaults`: option values a run written before an option existed had (so adding an option
    to keras-darts does not orphan existing run dirs that leave it at its default).
    """
    flag = f"--output_dir={output_dir}"
    if not output_dir:
        raise UserError("--output_dir is required")
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise UserError(f"{flag}: exists and is not a directory")
    parent = output_dir if os.path.isdir(output_dir) else _existing_parent(output_dir)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"{flag}: {parent} is not writable")
    path = os.path.join(output_dir, CONFIG_FILE)
    checkpoints = os.path.join(output_dir, CHECKPOINT_SUBDIR)
    if not os.path.exists(path):
        if os.path.isdir(checkpoints) and os.listdir(checkpoints):
            raise UserError(f"{flag}: holds checkpoints but no {CONFIG_FILE}; use a new --output_dir")
        return False
    try:
        with open(path) as f:
            previous = json.load(f)
        if not isinstance(previous, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as e:
        raise UserError(f"{flag}: cannot read {path} ({e}); use a new --output_dir") from None
    previous = {**(defaults or {}), **previous.get("config", previous)}
    # Only the keys of this run's config: the record may hold more (e.g. a retrain's data stats).
    differ = [k for k in sorted(config)
              if k not in resume_neutral and previous.get(k) != config.get(k)]
    if differ:
        details = ", ".join(f"{k} {previous.get(k)!r} -> {config.get(k)!r}" for k in differ[:4])
        raise UserError(f"{flag}: holds a run with an incompatible configuration ({details}); "
                        "use a new --output_dir or the same flags")
    return True


def _existing_parent(path):
    path = os.path.abspath(path)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    return path


def write_config(output_dir, record):
    os.makedirs(output_dir, exist_ok=True)
    atomic_write_json(os.path.join(output_dir, CONFIG_FILE), record)


def checkpoint_managers(checkpoint, output_dir, write_dir, max_to_keep=3):
    """(save manager, restore manager). Every worker restores from the chief's checkpoints (in
    `output_dir`); a non-chief worker saves into its private `write_dir` (collective saves need every
    worker to save) so that only the chief's files land in the output dir."""
    save = tf.train.CheckpointManager(checkpoint, os.path.join(write_dir, CHECKPOINT_SUBDIR),
                                      max_to_keep=max_to_keep)
    if os.path.abspath(write_dir) == os.path.abspath(output_dir):
        remove_stale_temp_files(output_dir)  # the chief, before it writes anything
        return save, save
    return save, tf.train.CheckpointManager(
        checkpoint, os.path.join(output_dir, CHECKPOINT_SUBDIR), max_to_keep=max_to_keep)


def remove_stale_temp_files(output_dir):
    """Deletes the temp files of atomic writes a killed run left behind: `.tmp-*` (io_utils, figures)
    and TF's `checkpoints/checkpoint.tmp*`. Only the chief writes these folders, so any found when
    it starts are stale."""
    checkpoints = os.path.join(output_dir, CHECKPOINT_SUBDIR)
    for folder in (output_dir, checkpoints, os.path.join(output_dir, "figures")):
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        for name in names:
            path = os.path.join(folder, name)
            stale = name.startswith(".tmp-") or (folder == checkpoints
                                                 and name.startswith("checkpoint.tmp"))
            if stale and os.path.isfile(path) and not os.path.islink(path):
                try:
                    os.remove(path)
                except OSError:
                    pass


def restore_latest(checkpoint, manager, directory):
    """Restores the newest readable checkpoint, falling back to older ones with a warning.

    Returns the path restored or None (fresh start). Raises UserError when checkpoints exist but
    none can be read: a finished or long run is never silently restarted from scratch.
    """
    paths = list(reversed(manager.checkpoints))
    # A missing or corrupt `checkpoint` state file makes TF list nothing (with only a log warning):
    # also try the checkpoint files themselves, newest first, rather than start from scratch.
    listed = {os.path.basename(p) for p in paths}
    paths += [p for p in _checkpoint_prefixes(manager.directory)
              if os.path.basename(p) not in listed]
    failures = []
    for path in paths:
        try:
            checkpoint.restore(path).assert_existing_objects_matched()
        # Any failure means "unreadable": a truncated data file raises IndexError ("Read less
        # bytes than requested") from the checkpoint reader, not an OpError.
        except (tf.errors.OpError, ValueError, AssertionError, IndexError, KeyError, OSError) as e:
            failures.append((path, " ".join(str(e).split())[:160]))
            continue
        for bad, reason in failures:
            print(f"warning: checkpoint {bad} is unreadable ({reason}); trying an older one",
                  file=sys.stderr, flush=True)
        if failures:
            print(f"warning: resumed from older checkpoint {path}", file=sys.stderr, flush=True)
        return path
    if paths:
        # The failed attempts leave TF objects that log "unrestored values" warnings when they are
        # collected at exit; the error below says all there is to say.
        silence_unrestored_warnings()
        bad, reason = failures[0]
        raise UserError(f"--output_dir={directory}: no readable checkpoint in "
                        f"{os.path.join(directory, CHECKPOINT_SUBDIR)} (newest: "
                        f"{os.path.basename(bad)}: {reason}); move it away to start over")
    return None


def silence_unrestored_warnings():
    """Drops TF's "deleted with unrestored values" warnings for the rest of the process: a failed
    restore leaves objects that log them when collected at exit, after the one-line error."""
    tf.get_logger().addFilter(_drop_unrestored_warnings)


def _drop_unrestored_warnings(record):
    message = str(record.msg)
    return not ("deleted with unrestored values" in message
                or "could not be found in the restored object" in message)


def _checkpoint_prefixes(directory):
    """`directory/ckpt-N` prefixes that have an index file, newest (largest N) first."""
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    numbers = [n[len("ckpt-"):-len(".index")] for n in names
               if n.startswith("ckpt-") and n.endswith(".index")]
    return [os.path.join(directory, f"ckpt-{n}")
            for n in sorted((n for n in numbers if n.isdigit()), key=int, reverse=True)]


def set_determinism(seed, deterministic):
    """Seeds Python, NumPy and TF; with `deterministic`, also turns on TF op determinism."""
    import keras

    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def check_finite(values, epoch, step, manager):
    """Stops the run when a loss is NaN/Inf; the last good checkpoint stays as it is."""
    bad = [k for k, v in values.items() if not math.isfinite(v)]
    if bad:
        kept = manager.latest_checkpoint if manager is not None else None
        raise DivergenceError(
            f"{bad[0]} became {values[bad[0]]} at epoch {epoch} step {step}; stopped. Last good "
            f"checkpoint: {kept or 'none'}. Lower --learning_rate (or --arch_learning_rate)")


def distribute_dataset(strategy, dataset):
    """Splits global batches over the replicas so that together they see what one device would
    (DATA sharding, fixed order)."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    options.deterministic = True
    return strategy.experimental_distribute_dataset(dataset.with_options(options))


def run_and_sum(strategy, fn, *args):
    """`strategy.run(fn, args)` with each output (a dict of sums) summed over the replicas."""
    out = strategy.run(fn, args=args)
    return {k: strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None) for k, v in out.items()}


class SummaryWriter:
    """TensorBoard writer on the chief; a no-op elsewhere."""

    def __init__(self, logdir, enabled):
        self.writer = tf.summary.create_file_writer(logdir) if enabled else None

    def scalars(self, values, step):
        if self.writer is None:
            return
        with self.writer.as_default(step=step):
            for k, v in values.items():
                tf.summary.scalar(k, v)

    def flush(self):
        if self.writer is not None:
            self.writer.flush()
