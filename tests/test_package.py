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
