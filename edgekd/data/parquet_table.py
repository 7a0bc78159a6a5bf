"""Parquet tables via pyarrow (the ``tabular`` extra): the schema and row count are checked before any data is read.

Feature columns must be integer, float or boolean; the label column integer, float, string or dictionary-encoded
strings. Nulls are refused with the columns named.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgekd.data.base import RawData, ReadOptions, reason
from edgekd.data.labels import MAX_NAME_CHARS
from edgekd.data.tables import Table, check_finite, pick_columns, read_tables
from edgekd.errors import EdgekdError, MissingDependencyError

SUFFIXES = (".parquet", ".pq")
FIX = "pass a valid Parquet file (e.g. written by pandas.DataFrame.to_parquet or pyarrow.parquet.write_table)"


def detect(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in SUFFIXES


def _is_numeric(pa, dtype) -> bool:
    return pa.types.is_integer(dtype) or pa.types.is_floating(dtype) or pa.types.is_boolean(dtype)


def _is_text(pa, dtype) -> bool:
    if pa.types.is_dictionary(dtype):
        dtype = dtype.value_type
    return pa.types.is_string(dtype) or pa.types.is_large_string(dtype)


def _open(path: Path):
    try:
        import pyarrow as pa  # lazy: optional dependency (the tabular extra)
        import pyarrow.parquet as pq  # lazy: optional dependency (the tabular extra)
    except ImportError:
        raise MissingDependencyError("pyarrow", "tabular", "Parquet data") from None
    try:
        return pa, pq.ParquetFile(path)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise EdgekdError(f"cannot read {path}: {reason(exc)}", FIX) from None


def read_parquet(path: Path, options: ReadOptions) -> Table:
    pa, parquet = _open(path)
    schema = parquet.schema_arrow
    label, columns = pick_columns(list(schema.names), options.label_column, path)
    names = [schema.names[i] for i in columns]
    wrong = [f"{n!r} ({schema.field(n).type})" for n in names if not _is_numeric(pa, schema.field(n).type)]
    if wrong:
        raise EdgekdError(f"{path}: feature columns of non-numeric type: {', '.join(wrong[:5])}",
                          "encode them as numbers before building (edgekd does not guess an encoding: the device "
                          "would have to repeat it exactly)")
    label_type = schema.field(label).type
    if not (_is_numeric(pa, label_type) or _is_text(pa, label_type)):
        raise EdgekdError(f"{path}: label column {schema.names[label]!r} has type {label_type}",
                          "give class ids (integers) or class names (strings)")
    metadata = parquet.metadata
    if metadata.num_rows == 0:  # as the CSV reader says of a header without rows, before any split is attempted
        raise EdgekdError(f"{path} has columns but no rows", "add data rows")
    declared = sum(metadata.row_group(i).total_byte_size for i in range(metadata.num_row_groups))
    options.limits.check_bytes(max(4 * metadata.num_rows * len(names), declared),
                               f"{path} ({metadata.num_rows} rows x {len(names)} features)", "use fewer rows")
    try:
        table = parquet.read(columns=[schema.names[label], *names])
        nulls = [n for n in table.column_names if table.column(n).null_count]
        if nulls:
            raise EdgekdError(f"{path}: missing values in columns {nulls[:10]}", "fill or drop them before building")
        features = np.stack([table.column(n).to_numpy().astype(np.float32) for n in names], axis=1)
        labels = table.column(0)
        if _is_text(pa, label_type):
            values = [str(v) for v in labels.to_pylist()]
            if max(map(len, values), default=0) > MAX_NAME_CHARS:
                raise EdgekdError(f"{path}: a label is over {MAX_NAME_CHARS} characters", "use short class names")
            labels = np.asarray(values)
        else:
            labels = labels.to_numpy()
    except (pa.ArrowException, OSError, ValueError, MemoryError) as exc:
        raise EdgekdError(f"cannot read {path}: {reason(exc)}", FIX) from None
    check_finite(features, names, path)
    return Table(features, labels, names)


def read(path: Path, options: ReadOptions) -> RawData:
    return read_tables(path, options, read_parquet)
