"""Test setup: two logical CPU devices (so MirroredStrategy gets two replicas), quiet TF logs."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras_darts  # noqa: E402,F401  (first: it picks TF's CPU kernels before TF is imported)
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

_cpus = tf.config.list_physical_devices("CPU")
try:
    tf.config.set_logical_device_configuration(
        _cpus[0], [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])
except RuntimeError:  # already initialised by another plugin; tests needing 2 replicas will skip
    pass

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CIFAR_DIR = os.path.join(os.path.dirname(ROOT), "shared", "data", "cifar10")


def pytest_addoption(parser):
    parser.addoption("--run_slow", action="store_true", default=False, help="run tests marked slow")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long-running test, skipped unless --run_slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--run_slow"):
        return
    skip = pytest.mark.skip(reason="slow; pass --run_slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def in_ci():
    """Whether CI=true (as CI services set it): missing test data is then an error, not a skip."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def find_cifar_dir():
    """CIFAR_DIR if it holds train.npz; else skips the test, or fails it under CI, where skipping
    would silently drop every CLI test."""
    if os.path.exists(os.path.join(CIFAR_DIR, "train.npz")):
        return CIFAR_DIR
    message = f"offline CIFAR-10 not found at {CIFAR_DIR} (train.npz, test.npz)"
    if in_ci():
        pytest.fail(f"{message}; CI=true, so the tests that need it fail instead of skipping",
                    pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def cifar_dir():
    """The offline CIFAR-10 copy (../shared/data/cifar10); tests slice it, never copy it."""
    return find_cifar_dir()


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Tests never touch the network (CI has none): Python sockets may only reach loopback (the
    multi-worker test's gRPC runs in child processes), and tfds may not look up GCS (TF's C++
    filesystem, which Python sockets do not see)."""
    import socket

    real_connect = socket.socket.connect

    def connect(sock, address):
        host = address[0] if isinstance(address, tuple) else address
        if sock.family in (socket.AF_INET, socket.AF_INET6) and host not in (
                "127.0.0.1", "::1", "localhost"):
            raise ConnectionError(f"tests must not use the network (connect to {address!r})")
        return real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    try:
        from tensorflow_datasets.core.utils import gcs_utils
    except ImportError:
        return
    monkeypatch.setattr(gcs_utils, "_is_gcs_disabled", True)
