"""Labels as read (ids, integral floats, class names) -> dense int64 class ids and the class names.

Policy for integer labels, and why:
- ids that look like ids (non-negative, and at least half of ``0..max`` in use) are kept as they are: output ``i``
  of the model is the user's class ``i``, with names ``"0".."max"``;
- sparse ids (``{0, 10**9}``, or ``1000..1009``) are **remapped** to ``0..K-1`` in sorted order, and the original
  values become the class names (recorded in the manifest, so the device maps outputs back). Keeping them would
  make a student with a billion mostly-empty outputs;
- more than ``max_classes`` distinct values, or distinct values for more than half of the rows, are refused: that
  is an id or a continuous column passed as the label, not classes;
- negative ids are refused (-1 usually marks "unlabelled"), and so are non-integral floats (a regression target).
Strings are class names, sorted; they must be printable and short, since they land in reports and HTML.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgekd.data.limits import DataLimits
from edgekd.errors import EdgekdError

MAX_NAME_CHARS = 200
MIN_ROWS_FOR_DENSITY_CHECK = 20


@dataclass
class Labels:
    y_train: np.ndarray  # int64 ids
    y_test: np.ndarray
    classes: list[str]
    encoding: str  # "ids" | "remapped" | "names" | "given names": recorded in describe()


def check_class_names(names: list, source: str) -> list[str]:
    """Class names that are safe to print and to put in a report: unique, printable, short."""
    out = [str(n) for n in names]
    for name in out:
        problem = ("is empty" if not name.strip() else f"is over {MAX_NAME_CHARS} characters"
                   if len(name) > MAX_NAME_CHARS else "holds control characters" if not name.isprintable() else "")
        if problem:
            raise EdgekdError(f"{source}: class name {name[:40]!r} {problem}", "rename the class")
    if len(set(out)) != len(out):
        raise EdgekdError(f"{source}: class names repeat", "give each class one unique name")
    return out


def _as_1d(y: np.ndarray, split: str, source: str) -> np.ndarray:
    if y.ndim == 2 and y.shape[1] == 1:
        return y[:, 0]
    if y.ndim != 1:
        raise EdgekdError(f"{source}: {split} labels have shape {tuple(y.shape)}, expected one label per sample",
                          "give class ids of shape (N,) (one-hot labels: y.argmax(1))")
    return y


def _as_ids(y: np.ndarray, split: str, source: str) -> np.ndarray:
    """Integer-valued labels of any numeric dtype -> int64, refusing fractions, NaN and negatives."""
    if y.dtype.kind == "b":
        return y.astype(np.int64)
    if y.dtype.kind == "f":
        fractional = ~np.isfinite(y) | (y != np.round(y))
        if fractional.any():
            raise EdgekdError(f"{source}: {split} labels are not whole numbers (e.g. {float(y[fractional][0]):g})",
                              "edgekd distils classifiers: give class ids or class names, not a regression target")
        if y.size and np.abs(y).max() >= 2**53:
            raise EdgekdError(f"{source}: {split} labels are too large to be class ids", "relabel classes 0..N-1")
    elif y.dtype.kind == "u" and y.size and int(y.max()) >= 2**63:
        raise EdgekdError(f"{source}: {split} labels are too large to be class ids", "relabel classes 0..N-1")
    elif y.dtype.kind not in "iu":
        raise EdgekdError(f"{source}: {split} labels have dtype {y.dtype}", "give integer ids or class names")
    ids = y.astype(np.int64)
    if ids.size and ids.min() < 0:
        raise EdgekdError(f"{source}: {split} labels hold negative values (e.g. {int(ids.min())})",
                          "drop unlabelled samples and give ids >= 0")
    return ids


def encode_labels(y_train: np.ndarray, y_test: np.ndarray, class_names: list[str] | None, limits: DataLimits,
                  source: str) -> Labels:
    """Dense int64 ids for both splits and one list of class names (see the module docstring for the policy)."""
    y_train, y_test = _as_1d(np.asarray(y_train), "train", source), _as_1d(np.asarray(y_test), "test", source)
    if y_train.dtype.kind in "US" or y_test.dtype.kind in "US":
        if class_names is not None:
            raise EdgekdError(f"{source}: labels are names and a class list is given too", "give one of the two")
        both = np.concatenate([y_train.astype(str), y_test.astype(str)])
        names = np.unique(both)
        limits.check_classes(len(names), source)
        check_class_names(list(names), source)
        _check_density(len(names), len(y_train), source)
        return Labels(np.searchsorted(names, y_train.astype(str)).astype(np.int64),
                      np.searchsorted(names, y_test.astype(str)).astype(np.int64), [str(n) for n in names], "names")
    train, test = _as_ids(y_train, "train", source), _as_ids(y_test, "test", source)
    if class_names is not None:
        names = check_class_names(class_names, source)
        limits.check_classes(len(names), source)
        top = int(max(train.max(initial=0), test.max(initial=0)))
        if top >= len(names):
            raise EdgekdError(f"{source}: label {top} has no class name ({len(names)} names)",
                              "give one name per class id, or ids 0..len(classes)-1")
        return Labels(train, test, names, "given names")
    values = np.unique(np.concatenate([train, test]))
    limits.check_classes(len(values), source)
    _check_density(len(values), len(train), source)
    top = int(values[-1]) if len(values) else 0
    if top + 1 <= limits.max_classes and 2 * len(values) >= top + 1:
        return Labels(train, test, [str(i) for i in range(top + 1)], "ids")
    return Labels(np.searchsorted(values, train).astype(np.int64), np.searchsorted(values, test).astype(np.int64),
                  [str(int(v)) for v in values], "remapped")


def _check_density(n_classes: int, n_train: int, source: str) -> None:
    if n_train >= MIN_ROWS_FOR_DENSITY_CHECK and n_classes > n_train / 2:
        raise EdgekdError(f"{source}: {n_classes} distinct labels for {n_train} training samples",
                          "that looks like an id or a continuous column, not classes: pass the class column")
