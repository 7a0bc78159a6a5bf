"""Shared fixtures: tiny data made in the test, and an isolated cache for default teachers."""

from __future__ import annotations

import numpy as np
import pytest

from edgekd.data import Dataset, Normalization


def make_dataset(n_train: int = 64, n_test: int = 32, shape=(1, 8, 8), classes: int = 3, seed: int = 0) -> Dataset:
    """A learnable toy set: each class has its own mean image."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 1, (classes, *shape)).astype(np.float32)

    def split(n):
        y = rng.integers(0, classes, n)
        return (centers[y] + 0.3 * rng.normal(0, 1, (n, *shape))).astype(np.float32), y.astype(np.int64)

    xt, yt = split(n_train)
    xv, yv = split(max(classes, n_train // 4))
    xs, ys = split(n_test)
    channels = shape[0] if len(shape) == 3 else 1
    return Dataset("toy", "toy", [str(i) for i in range(classes)], xt, yt, xv, yv, xs, ys,
                   Normalization(1.0, [0.0] * channels, [1.0] * channels))


@pytest.fixture
def toy_data() -> Dataset:
    return make_dataset()


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("EDGEKD_CACHE", str(tmp_path_factory.getbasetemp() / "edgekd-cache"))
