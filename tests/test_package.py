"""`import keras_darts` picks TF's oneDNN CPU kernels, only when it can and only if the user has not."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _onednn_setting_after(code, env_value):
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    if env_value is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = env_value
    out = subprocess.run(
        [sys.executable, "-c", code + "; import os; print(os.environ.get('TF_ENABLE_ONEDNN_OPTS'))"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=True)
    return out.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize("env_value,expected", [(None, "1"), ("0", "0"), ("1", "1")])
def test_import_turns_onednn_on_unless_the_user_chose(env_value, expected):
    assert _onednn_setting_after("import keras_darts", env_value) == expected


def test_import_after_tensorflow_leaves_the_setting_alone():
    # TF has read the variable already; changing it then would only mislead.
    assert _onednn_setting_after("import tensorflow, keras_darts", None) == "None"


def test_every_config_field_is_a_flag_with_help_and_its_default():
    """One definition: bin/ flags are generated from the config dataclasses (names, defaults,
    help), so the CLI and the Python API cannot drift apart."""
    import dataclasses

    from absl import flags

    from keras_darts.config import ExportConfig, RetrainConfig, SearchConfig
    from keras_darts.flags import define_flags

    for cls in (SearchConfig, RetrainConfig, ExportConfig):
        values = flags.FlagValues()
        for field in dataclasses.fields(cls):
            assert field.metadata.get("help"), f"{cls.__name__}.{field.name} has no help text"
        holders = define_flags(cls, flag_values=values)
        assert set(holders) == {f.name for f in dataclasses.fields(cls)}
        values(["prog", "--seed=7"] if "seed" in holders else ["prog"])
        for field in dataclasses.fields(cls):
            assert values[field.name].default == field.default
            assert values[field.name].help == field.metadata["help"]
        # Only flags given on the command line reach the config (presets can tell them apart).
        from keras_darts.flags import given_options

        assert given_options(holders) == ({"seed": 7} if "seed" in holders else {})


def test_from_options_rejects_an_unknown_name_with_a_suggestion():
    import pytest

    from keras_darts.config import SearchConfig
    from keras_darts.errors import UserError

    assert SearchConfig.from_options(layers=5).layers == 5
    with pytest.raises(UserError, match=r"unknown option 'init_channel' \(did you mean 'init_channels'\?\)"):
        SearchConfig.from_options(init_channel=8)
