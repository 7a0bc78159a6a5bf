"""Tabular data shared by the CSV and Parquet readers: a label column, numeric feature columns.

Feature columns must be numeric: a text column is refused with its name rather than encoded, because any encoding
(one-hot, ordinal, hashing) is a modelling choice the device would have to repeat exactly; encode it before
building. Missing or infinite values are refused with the columns named. Labels may be ids or class names.

Splits: ``train.csv`` with a ``test.csv`` beside it (the last ``train`` in the name replaced by ``test``) gives the
test split; otherwise the one table is split by the loader, stratified by class and seeded, with the test fraction
recorded in ``describe()["test_split"]``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekd.data.base import RawData, ReadOptions
from edgekd.errors import EdgekdError

MAX_COLUMNS = 100_000


@dataclass
class Table:
    features: np.ndarray  # float32 N x F
    labels: np.ndarray  # as read: ints, floats or strings
    feature_names: list[str]


def pick_columns(names: list[str], label_column: str | None, path: Path) -> tuple[int, list[int]]:
    """Index of the label column and of the feature columns, refusing an absent label or repeated names."""
    if len(names) > MAX_COLUMNS:
        raise EdgekdError(f"{path} has {len(names)} columns, over the cap of {MAX_COLUMNS}", "select fewer columns")
    if len(set(names)) != len(names) or not all(n.strip() for n in names):
        raise EdgekdError(f"{path}: column names are empty or repeat", "give every column one unique name")
    shown = ", ".join(names[:20]) + (" ..." if len(names) > 20 else "")
    if label_column is None:
        raise EdgekdError(f"{path} is a table: which column holds the class?",
                          f"pass label_column= (CLI: --label-column), one of: {shown}")
    if label_column not in names:
        raise EdgekdError(f"{path} has no column {label_column!r}", f"pass one of: {shown}")
    label = names.index(label_column)
    features = [i for i in range(len(names)) if i != label]
    if not features:
        raise EdgekdError(f"{path} has no feature columns besides {label_column!r}", "add feature columns")
    return label, features


def check_finite(features: np.ndarray, names: list[str], path: Path) -> None:
    bad = ~np.isfinite(features).all(axis=0)
    if bad.any():
        columns = [names[i] for i in np.flatnonzero(bad)[:10]]
        raise EdgekdError(f"{path}: missing, NaN or infinite values in columns {columns}",
                          "impute or drop them before building (edgekd does not guess a fill value)")


def labels_from_text(values: np.ndarray) -> np.ndarray:
    """Text labels that are all whole numbers become ids; anything else stays class names."""
    try:
        numbers = values.astype(np.float64)
    except ValueError:
        return values
    if np.isfinite(numbers).all() and (numbers == np.round(numbers)).all():
        return numbers.astype(np.int64)
    return numbers  # fractional: encode_labels refuses it as a regression target


def sibling_test_file(path: Path) -> Path | None:
    """``.../fraud_train.csv`` -> ``.../fraud_test.csv`` when that file exists."""
    name = path.name
    at = name.rfind("train")
    if at < 0:
        return None
    sibling = path.with_name(name[:at] + "test" + name[at + len("train"):])
    return sibling if sibling.is_file() else None


def read_tables(path: Path, options: ReadOptions, read_one: Callable[[Path, ReadOptions], Table]) -> RawData:
    """``path`` (and its test sibling, if any) as RawData; the single-table split is the loader's."""
    if options.image_size is not None:
        raise EdgekdError(f"{path} is a table; image_size applies to images", "drop image_size")
    train = read_one(path, options)
    meta = {"features": train.feature_names, "label_column": options.label_column}
    sibling = sibling_test_file(path)
    if sibling is None:
        return RawData(train.features, train.labels, None, None, 1.0, meta=meta)
    test = read_one(sibling, options)
    if test.feature_names != train.feature_names:
        raise EdgekdError(f"{sibling} has other feature columns than {path}", "give both files the same columns")
    meta["test_split"] = {"from": sibling.name}
    return RawData(train.features, train.labels, test.features, test.labels, 1.0, meta=meta)
