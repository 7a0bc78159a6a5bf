"""Shared fixtures: tiny data made in the test, and an isolated cache for default teachers; ``--cpu-durations``."""

from __future__ import annotations

import resource

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


# ------------------------------------------------------------------------------------- CPU seconds per test
def pytest_addoption(parser):
    parser.addoption("--cpu-durations", type=int, metavar="N",
                     help="list the N tests that used the most CPU seconds (this process and the subprocesses it "
                          "waited for, setup included): on a shared, loaded host, --durations' wall time measures "
                          "the neighbours too")


_CPU_TIMES = pytest.StashKey[list]()


def _cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    if not item.config.getoption("cpu_durations"):
        yield
        return
    start = _cpu_seconds()
    yield
    item.config.stash.setdefault(_CPU_TIMES, []).append((_cpu_seconds() - start, item.nodeid))


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    n = config.getoption("cpu_durations")
    if not n:
        return
    terminalreporter.write_sep("=", f"{n} most CPU seconds (user + system, subprocesses included)")
    for seconds, nodeid in sorted(config.stash.get(_CPU_TIMES, []), reverse=True)[:n]:
        terminalreporter.write_line(f"{seconds:8.1f}s cpu  {nodeid}")
