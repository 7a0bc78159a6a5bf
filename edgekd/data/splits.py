"""Seeded, stratified splits: how edgekd cuts a test or validation split out of data that came without one.

One mechanism for every reader that needs it (a single table, a folder of class folders), so the same seed gives
the same split whichever reads the data, and every split is recorded with the seed that made it.
"""

from __future__ import annotations

import numpy as np

from edgekd.data.digits import SEED_OFFSET
from edgekd.errors import EdgekdError

VAL_SEED_SHIFT = 1  # a validation split cut the same way as a test split, from another stream of the same seed


def check_fraction(value: float, name: str, low_inclusive: bool = False) -> float:
    """A split share in (0, 1) (or [0, 1) for ``low_inclusive``), refused with the flag's name otherwise."""
    ok = (0.0 <= value < 1.0) if low_inclusive else (0.0 < value < 1.0)
    if not ok:
        bounds = "[0, 1)" if low_inclusive else "(0, 1)"
        raise EdgekdError(f"{name} {value} is outside {bounds}", "e.g. 0.1" if name == "val_fraction" else "e.g. 0.2")
    return value


def stratified_split(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (train, test) indices with ``fraction`` of every class in test (at least one of a class of >= 2)."""
    rng = np.random.default_rng(seed + SEED_OFFSET)
    test = []
    for label in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == label))
        n = min(max(int(round(len(members) * fraction)), 1), len(members) - 1) if len(members) >= 2 else 0
        test.append(members[:n])
    test_idx = np.sort(np.concatenate(test)) if test else np.zeros(0, np.int64)
    return np.setdiff1d(np.arange(len(y)), test_idx), test_idx


def three_way_split(y: np.ndarray, test_fraction: float, val_fraction: float,
                    seed: int) -> dict[str, np.ndarray]:
    """Stratified, seeded train/val/test indices: ``test_fraction`` of every class, then ``val_fraction`` of what
    is left (as a given test split's validation share is of train)."""
    rest, test = stratified_split(y, test_fraction, seed)
    train, val = stratified_split(y[rest], val_fraction, seed + VAL_SEED_SHIFT)
    return {"train": rest[train], "val": rest[val], "test": test}


def describe_three_way(test_fraction: float, val_fraction: float, seed: int) -> dict:
    """The record of a ``three_way_split`` for describe() and the manifest: enough to cut it again."""
    return {"stratified": True, "test_fraction": test_fraction, "val_fraction_of_rest": val_fraction,
            "seed": seed, "test_rng_seed": seed + SEED_OFFSET, "val_rng_seed": seed + VAL_SEED_SHIFT + SEED_OFFSET}
