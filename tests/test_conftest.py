"""The test setup itself: under CI a missing offline CIFAR-10 fails the tests that need it, with
one clear line, instead of silently skipping every CLI test; outside CI they skip."""

import numpy as np
import pytest

import conftest


@pytest.mark.parametrize("ci", ["true", "TRUE", "1"])
def test_missing_cifar_fails_under_ci(ci, tmp_path, monkeypatch):
    missing = str(tmp_path / "cifar10")
    monkeypatch.setattr(conftest, "CIFAR_DIR", missing)
    monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.fail.Exception) as failure:
        conftest.find_cifar_dir()
    assert str(failure.value) == (f"offline CIFAR-10 not found at {missing} (train.npz, test.npz); "
                                  "CI=true, so the tests that need it fail instead of skipping")


@pytest.mark.parametrize("ci", [None, "", "false", "0"])
def test_missing_cifar_skips_outside_ci(ci, tmp_path, monkeypatch):
    missing = str(tmp_path / "cifar10")
    monkeypatch.setattr(conftest, "CIFAR_DIR", missing)
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.skip.Exception) as skip:
        conftest.find_cifar_dir()
    assert str(skip.value) == f"offline CIFAR-10 not found at {missing} (train.npz, test.npz)"


def test_present_cifar_is_found_under_ci(tmp_path, monkeypatch):
    np.savez(tmp_path / "train.npz", x=np.zeros((1, 32, 32, 3), np.uint8), y=np.zeros(1))
    monkeypatch.setattr(conftest, "CIFAR_DIR", str(tmp_path))
    monkeypatch.setenv("CI", "true")
    assert conftest.find_cifar_dir() == str(tmp_path)
