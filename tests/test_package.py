"""`import keras_darts` picks TF's oneDNN CPU kernels, only when it can and only if the user has not."""

import ast
import os
import pathlib
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


_WARNED = """
import warnings
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    {imports}
from tensorflow.python.util import _pywrap_util_port
print(_pywrap_util_port.IsMklEnabled(), [str(w.message) for w in caught if "oneDNN" in str(w.message)])
"""


@pytest.mark.parametrize("imports,env_value", [
    ("import tensorflow, keras_darts", None),  # too late to turn oneDNN on: warned if it is off
    ("import tensorflow, keras_darts", "0"),  # the user's choice: never warned
    ("import keras_darts, tensorflow", None),  # the right order: oneDNN on, nothing to say
])
def test_warns_when_tensorflow_came_first_with_onednn_off(imports, env_value):
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    if env_value is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = env_value
    out = subprocess.run([sys.executable, "-c", _WARNED.format(imports=imports)], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=120, check=True)
    mkl, messages = out.stdout.strip().splitlines()[-1].split(" ", 1)
    # On an AVX-512 CPU TF turns oneDNN on by itself, so the first case warns only on older CPUs.
    expect_warning = env_value is None and imports.startswith("import tensorflow") and mkl == "False"
    assert (messages != "[]") == expect_warning, out.stdout
    if expect_warning:
        assert "import keras_darts first, or set TF_ENABLE_ONEDNN_OPTS=1" in messages
    if imports.startswith("import keras_darts"):
        assert mkl == "True"


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


# === Layout: dependency direction and module size (parsed with ast, nothing imported) ===

PACKAGE_DIR = pathlib.Path(ROOT) / "keras_darts"
MAX_LINES = 300

# Lowest first; a module may import from its own layer and the layers below, never above:
# loops -> training machinery -> models -> ops, with data and genotype below them all.
LAYERS = (
    ("base", {"errors", "io_utils", "loop_timing", "flags", "config", "data_config", "genotype",
              "random_cells", "data", "cost", "search_options", "heap"}),
    ("ops", {"ops", "recompute"}),  # recompute: a layer-call wrapper the models use
    ("models", {"network", "search_cells", "supernet", "partial_channels"}),
    ("training", {"architect", "unrolled", "gradients", "optimizers", "run_utils", "distribute",
                  "cost_penalty", "latency", "search_costs", "guards", "hessian",
                  "robust_search", "selection", "lean_function"}),
    ("loops", {"search_loop", "search_run", "retrain_loop", "retrain_run", "export", "visualize",
               "search_vs_random"}),
    ("api", {"api"}),  # the Python API over the loops (bin/ calls it)
)
RANK = {unit: rank for rank, (_, units) in enumerate(LAYERS) for unit in units}
LAYER_NAME = {unit: name for name, units in LAYERS for unit in units}

# Modules allowed over the limit while a split is pending (none now). A listed file that no
# longer exists is simply not checked.
TOO_LONG_FOR_NOW = set()


def _modules():
    """Every module under keras_darts/ but its top __init__.py (which imports nothing)."""
    return sorted(p for p in PACKAGE_DIR.rglob("*.py") if p != PACKAGE_DIR / "__init__.py")


def _unit(path):
    """keras_darts/ops/conv_ops.py -> "ops"; keras_darts/supernet.py -> "supernet"."""
    return path.relative_to(PACKAGE_DIR).parts[0].removesuffix(".py")


def _imports(path, package_dir=PACKAGE_DIR):
    """Absolute names of the modules (or `package.name`s) a module imports, at the top or inside
    functions."""
    names = set()
    package = ["keras_darts", *path.relative_to(package_dir).parent.parts]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            names |= ({f"{module}.{a.name}" for a in node.names} if module == "keras_darts"
                      else {module})
    return names


def _imported_units(path, package_dir=PACKAGE_DIR):
    """The keras_darts units (top-level modules or packages) a module imports."""
    return {n.split(".")[1] for n in _imports(path, package_dir) if n.startswith("keras_darts.")}


def test_every_module_has_a_layer():
    units = {_unit(p) for p in _modules()}
    assert units - set(RANK) == set(), "add new modules to LAYERS in tests/test_package.py"


def test_imports_only_point_down_the_layers():
    """Nothing in ops/ imports network/, supernet, search_cells or a loop; models import no loop;
    genotype and data import no model."""
    upward = []
    for path in _modules():
        unit = _unit(path)
        for dep in _imported_units(path) - {unit}:
            if dep in RANK and RANK[dep] > RANK[unit]:
                upward.append(f"{path.relative_to(PACKAGE_DIR)} ({LAYER_NAME[unit]}) imports "
                              f"{dep} ({LAYER_NAME[dep]})")
    assert upward == []


def test_drawing_a_run_builds_no_model():
    """visualize reads plain data: it imports no op or model module (and no TensorFlow)."""
    for path in (PACKAGE_DIR / "visualize").glob("*.py"):
        assert _imported_units(path) <= LAYERS[0][1] | {"visualize"}, path.name
        assert not {n.split(".")[0] for n in _imports(path)} & {"tensorflow", "keras"}, path.name


def test_import_parser_sees_every_import_form(tmp_path):
    path = tmp_path / "keras_darts" / "ops" / "probe.py"
    path.parent.mkdir(parents=True)
    path.write_text("import keras_darts.network\nfrom keras_darts import supernet as s\n"
                    "from keras_darts.genotype import PRIMITIVES\nfrom . import conv_ops\n"
                    "from ..search_cells import MixedOp\nimport numpy\n"
                    "def f():\n    from keras_darts.retrain_loop import run\n")
    assert _imported_units(path, tmp_path / "keras_darts") == {
        "network", "supernet", "genotype", "ops", "search_cells", "retrain_loop"}


def test_no_module_over_300_lines():
    long = {str(p.relative_to(PACKAGE_DIR)): n for p in _modules()
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert {k: v for k, v in long.items() if k not in TOO_LONG_FOR_NOW} == {}
