"""Run configurations: frozen dataclasses with the reference's defaults, validated up front.

These dataclasses are the one definition of every option: the `bin/` tools generate their absl
flags from the fields (`keras_darts.flags`), and the Python API takes the same names as keyword
arguments. A field's help text lives in its metadata (`option`).

No TensorFlow import here, so a bad flag is reported in a fraction of a second and before anything
is written.
"""

from keras_darts.config.export import EXPORT_FORMATS, ExportConfig, parse_formats
from keras_darts.config.options import (AUGMENT_CHOICES, LR_SCHEDULES, MIXED_PRECISION, STRATEGIES,
                                        VARIANT_NAMES, option)
from keras_darts.config.retrain import RETRAIN_RESUME_NEUTRAL, VARIANT_DEFAULTS, RetrainConfig
from keras_darts.config.search import SEARCH_RESUME_NEUTRAL, SearchConfig

__all__ = [
    "AUGMENT_CHOICES", "EXPORT_FORMATS", "LR_SCHEDULES", "MIXED_PRECISION", "RETRAIN_RESUME_NEUTRAL",
    "SEARCH_RESUME_NEUTRAL", "STRATEGIES", "VARIANT_DEFAULTS", "VARIANT_NAMES", "ExportConfig",
    "RetrainConfig", "SearchConfig", "option", "parse_formats",
]
