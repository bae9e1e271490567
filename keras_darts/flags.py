"""absl flags generated from the config dataclasses, so every option has one definition.

`define_flags(SearchConfig)` defines `--dataset`, `--layers`, ... with the fields' defaults and
help texts; `config_from_flags` builds the config from the flags the user actually gave, so
option presets and variant defaults can tell a given value from a default. No TensorFlow here.
"""

import dataclasses

from absl import flags

_DEFINE = {str: flags.DEFINE_string, int: flags.DEFINE_integer, float: flags.DEFINE_float,
           bool: flags.DEFINE_bool}


def define_flags(config_cls, exclude=(), flag_values=flags.FLAGS):
    """Defines one absl flag per field of `config_cls`; returns {name: FlagHolder}."""
    holders = {}
    for field in dataclasses.fields(config_cls):
        if field.name in exclude:
            continue
        define = _DEFINE.get(field.type)
        if define is None:
            raise TypeError(f"{config_cls.__name__}.{field.name}: no flag type for {field.type!r}")
        holders[field.name] = define(field.name, field.default, field.metadata.get("help", ""),
                                     flag_values=flag_values)
    return holders


def given_options(holders):
    """{name: value} of the flags given on the command line (not left at their defaults)."""
    return {name: h.value for name, h in holders.items() if h.present}


def config_from_flags(config_cls, holders):
    return config_cls.from_options(**given_options(holders))
