"""Search and retrain protocols: pass-through flags parsed into the run configs, with no TensorFlow.

The benchmark forwards `--search_args` / `--retrain_args` to bin/search / bin/retrain verbatim. It
also parses them here, against the same config dataclasses the tools use, for three reasons: a bad
flag fails before any run starts, the random cells come from the search's space (`--nodes`), and a
finished run is recognised by comparing its config.json with the config the flags give. The flags
are generated from the dataclass fields as bin/ generates them (keras_darts.flags), so any option
added to SearchConfig/RetrainConfig passes through unchanged.
"""

import dataclasses
import json
import shlex

from absl import flags

from keras_darts import config as config_lib
from keras_darts import flags as flags_lib
from keras_darts.errors import UserError

# Fixed by the benchmark itself (each run gets its own dir, seed and genotype): field -> what to
# do instead.
_SHARED = {"dataset": "use --dataset", "data_dir": "use --data_dir", "output_dir": "use --work_dir"}
SEARCH_RESERVED = {**_SHARED, "seed": "use --search_seeds"}
RETRAIN_RESERVED = {**_SHARED, "genotype": "use --random or --named",
                    "test_dataset": "use a --dataset dir with train.npz and test.npz",
                    "layers": "use --retrain_layers", "init_channels": "use --retrain_channels",
                    "epochs": "use --retrain_epochs", "batch_size": "use --retrain_batch_size",
                    "seed": "use --retrain_seed", "export_dir": "it exports nothing",
                    "eval_steps": "every cell is scored on the full test split"}


def parse_passthrough(config_cls, text, flag, reserved, fixed):
    """(config, argv): `text` parsed as the tool's flags on top of `fixed` field values.

    Raises:
      UserError: one line naming `flag` (e.g. --search_args) when a flag is unknown, malformed,
        reserved for the benchmark, or invalid for the tool.
    """
    try:
        argv = shlex.split(text or "")
    except ValueError as e:
        raise UserError(f"{flag}={text!r}: cannot split ({e})") from None
    flag_values = flags.FlagValues()
    holders = flags_lib.define_flags(config_cls, flag_values=flag_values)
    try:
        rest = flag_values(["benchmark"] + argv)[1:]
    except flags.Error as e:
        raise UserError(f"{flag}={text!r}: {' '.join(str(e).split())}") from None
    if rest:
        raise UserError(f"{flag}={text!r}: unexpected argument {rest[0]!r}")
    given = flags_lib.given_options(holders)
    clash = sorted(set(given) & set(reserved))
    if clash:
        raise UserError(f"{flag}: --{clash[0]} is fixed by the benchmark: {reserved[clash[0]]}")
    try:
        # As bin/ builds it: from the options given (the benchmark's own count as given), so
        # presets and variant defaults resolve exactly as in the subprocess.
        config = config_cls.from_options(**given, **fixed)
        config.validate()
    except UserError as e:
        raise UserError(f"{flag}: {e}") from None
    return config, argv


def _data(dataset, data_dir):
    # The flags the subprocess gets: --data_dir only when set, as the command lines pass it.
    return {"dataset": dataset, **({"data_dir": data_dir} if data_dir else {})}


def search_config(search_args, dataset, data_dir):
    """The search protocol (seed and output dir are per run: `with_run`)."""
    return parse_passthrough(config_lib.SearchConfig, search_args, "--search_args",
                             SEARCH_RESERVED, _data(dataset, data_dir))


def retrain_config(retrain_args, dataset, data_dir, layers, channels, epochs, batch_size, seed):
    """The retrain protocol shared by every cell (genotype and output dir are per run)."""
    return parse_passthrough(
        config_lib.RetrainConfig, retrain_args, "--retrain_args", RETRAIN_RESERVED,
        {**_data(dataset, data_dir), "layers": layers, "init_channels": channels,
         "epochs": epochs, "batch_size": batch_size, "seed": seed})


def with_run(config, **fields):
    return dataclasses.replace(config, **fields)


def config_differences(record, expected, neutral):
    """Keys of `expected` whose value differs in a run's config.json `record` (as bin/search and
    bin/retrain compare them when they resume): [] means the run is this configuration's."""
    previous = record.get("config", record)
    expected = json.loads(json.dumps(expected))  # as config.json holds it: tuples become lists
    return [k for k in sorted(expected)
            if k not in neutral and previous.get(k) != expected.get(k)]


SEARCH_NEUTRAL = config_lib.SEARCH_RESUME_NEUTRAL
RETRAIN_NEUTRAL = config_lib.RETRAIN_RESUME_NEUTRAL
