"""CSV (and TSV) tables, read with the standard library in bounded chunks.

A header row names the columns; the delimiter is sniffed among ``, ; tab |``. Rows are parsed a chunk at a time
into float32, so memory follows the numbers kept (checked against the limit as they grow), never the text.
"""

from __future__ import annotations

import csv
import itertools
from pathlib import Path

import numpy as np

from edgekd.data.base import RawData, ReadOptions, reason
from edgekd.data.labels import MAX_NAME_CHARS
from edgekd.data.tables import Table, check_finite, labels_from_text, pick_columns, read_tables
from edgekd.errors import EdgekdError

SUFFIXES = (".csv", ".tsv")
CHUNK_ROWS = 8192
SNIFF_BYTES = 1 << 16
ENCODING_FIX = "save the table as UTF-8 CSV with a header row"


def detect(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in SUFFIXES


def _dialect(sample: str, path: Path) -> type[csv.Dialect] | csv.Dialect:
    if path.suffix.lower() == ".tsv":
        return csv.excel_tab
    try:
        return csv.Sniffer().sniff(sample, delimiters=",;\t|")
    except csv.Error:
        return csv.excel


def _bad_columns(rows: list[list[str]], names: list[str], first_line: int) -> str:
    """``'city' (e.g. 'Paris' on line 3)`` for each feature column that does not parse as a number."""
    found = []
    for j, name in enumerate(names):
        for i, row in enumerate(rows):
            try:
                float(row[j])
            except ValueError:
                found.append(f"{name!r} (e.g. {row[j][:30]!r} on line {first_line + i})")
                break
        if len(found) == 5:
            break
    return ", ".join(found)


def _chunk_features(rows: list[list[str]], names: list[str], path: Path, first_line: int) -> np.ndarray:
    try:
        return np.array(rows, dtype=np.float64).astype(np.float32).reshape(len(rows), len(names))
    except ValueError:
        raise EdgekdError(
            f"{path}: non-numeric or missing values in feature columns {_bad_columns(rows, names, first_line)}",
            "encode text columns as numbers and fill missing values before building (edgekd does not guess an "
            "encoding: the device would have to repeat it exactly)") from None


def read_csv(path: Path, options: ReadOptions) -> Table:
    """One CSV file as float32 features and the label column as read."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh, _dialect(fh.read(SNIFF_BYTES), path), strict=True)
            fh.seek(0)
            header = next(reader, None)
            if not header:
                raise EdgekdError(f"{path} is empty", ENCODING_FIX)
            label, columns = pick_columns([h.strip() for h in header], options.label_column, path)
            names = [header[i].strip() for i in columns]
            chunks, labels = [], []
            while rows := list(itertools.islice(reader, CHUNK_ROWS)):
                first_line = reader.line_num - len(rows) + 1
                for i, row in enumerate(rows):
                    if len(row) != len(header):
                        raise EdgekdError(f"{path}: line {first_line + i} has {len(row)} fields, the header "
                                          f"{len(header)}", "give every row one value per column")
                    value = row.pop(label)
                    if len(value) > MAX_NAME_CHARS:
                        raise EdgekdError(f"{path}: line {first_line + i} has a label of {len(value)} characters",
                                          f"class names are at most {MAX_NAME_CHARS} characters")
                    labels.append(value.strip())
                chunks.append(_chunk_features(rows, names, path, first_line))
                options.limits.check_bytes(4 * len(labels) * len(names), f"{path} (read so far)",
                                           "use fewer rows or columns")
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise EdgekdError(f"cannot read {path}: {reason(exc)}", ENCODING_FIX) from None
    if not labels:
        raise EdgekdError(f"{path} has a header but no rows", "add data rows")
    features = np.concatenate(chunks)
    check_finite(features, names, path)
    return Table(features, labels_from_text(np.asarray(labels)), names)


def read(path: Path, options: ReadOptions) -> RawData:
    return read_tables(path, options, read_csv)
