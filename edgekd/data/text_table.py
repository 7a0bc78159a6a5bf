"""Text tables: a CSV/TSV/Parquet file (or a folder holding ``train.*`` and ``test.*``) with a text column and a label
column, read as raw strings; once the loader has cut its splits, ``text_dataset`` trains the tokenizer on the
training split alone and encodes every split to int32 token ids [N, max_len].

Bad input is refused with the column named: a missing text column, a column with no text in it, a column of
numbers (``--text-column`` pointing at a feature), a row without text, text longer than ``MAX_TEXT_CHARS``.
"""

from __future__ import annotations

import csv
import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekd.data.base import RawData, ReadOptions, reason
from edgekd.data.cache import DataCache
from edgekd.data.csv_table import CHUNK_ROWS, ENCODING_FIX, SNIFF_BYTES, _dialect
from edgekd.data.csv_table import SUFFIXES as CSV_SUFFIXES
from edgekd.data.dataset import Dataset, Normalization
from edgekd.data.labels import MAX_NAME_CHARS, Labels
from edgekd.data.parquet_table import SUFFIXES as PARQUET_SUFFIXES
from edgekd.data.parquet_table import _is_text, _open
from edgekd.data.tables import labels_from_text, sibling_test_file
from edgekd.data.tokenizer import TextTokenizer, from_vocab, train_tokenizer
from edgekd.errors import EdgekdError

MAX_TEXT_CHARS = 100_000  # one row's text: a longer one is a document, not a sample, and would only be cut
SUFFIXES = CSV_SUFFIXES + PARQUET_SUFFIXES
TEXT_LAYOUT = "NL"  # batch x tokens


def find_tables(path: Path) -> tuple[Path, Path | None]:
    """(train table, test table or None): a file (its ``*test*`` sibling is the test split) or a folder with
    ``train.csv``/``train.parquet`` (and ``test.*``)."""
    if path.is_file():
        if path.suffix.lower() not in SUFFIXES:
            raise EdgekdError(f"{path} is not a table (.csv, .tsv, .parquet)", "pass a CSV or Parquet file")
        return path, sibling_test_file(path)
    found = {stem: next((path / f"{stem}{sfx}" for sfx in SUFFIXES if (path / f"{stem}{sfx}").is_file()), None)
             for stem in ("train", "test")}
    if found["train"] is None:
        raise EdgekdError(f"{path} holds no train.csv, train.tsv or train.parquet",
                          "pass a CSV/Parquet file, or a folder with train.csv (and test.csv)")
    return found["train"], found["test"]


def read(path: Path, options: ReadOptions) -> RawData:
    """The text table(s) as RawData: x_* are object arrays of strings, y_* labels as read."""
    if options.image_size is not None:
        raise EdgekdError(f"{path} is text; image_size applies to images", "drop --image-size")
    train_path, test_path = find_tables(path)
    x_train, y_train = read_text_table(train_path, options)
    meta = {"text_column": options.text_column, "label_column": options.label_column}
    if test_path is None:
        return RawData(x_train, y_train, None, None, 1.0, meta=meta)
    x_test, y_test = read_text_table(test_path, options)
    meta["test_split"] = {"from": test_path.name}
    return RawData(x_train, y_train, x_test, y_test, 1.0, meta=meta,
                   splits_from={"train": train_path.name, "test": test_path.name})


def read_text_table(path: Path, options: ReadOptions) -> tuple[np.ndarray, np.ndarray]:
    reader = _read_parquet if path.suffix.lower() in PARQUET_SUFFIXES else _read_csv
    texts, labels = reader(path, options)
    check_texts(texts, options.text_column, path)
    return np.asarray(texts, dtype=object), labels_from_text(np.asarray(labels))


def _columns(names: list[str], options: ReadOptions, path: Path) -> tuple[int, int]:
    """Indices of the text and the label column, refusing absent or repeated ones."""
    shown = ", ".join(names[:20]) + (" ..." if len(names) > 20 else "")
    for flag, column in (("--text-column", options.text_column), ("--label-column", options.label_column)):
        if column is None:
            raise EdgekdError(f"{path} is a text table: which column is {flag[2:].replace('-', ' ')}?",
                              f"pass {flag}, one of: {shown}")
        if column not in names:
            raise EdgekdError(f"{path} has no column {column!r} ({flag})", f"pass one of: {shown}")
    if options.text_column == options.label_column:
        raise EdgekdError(f"--text-column and --label-column both name {options.text_column!r}",
                          "name the text and the class in two different columns")
    return names.index(options.text_column), names.index(options.label_column)


def _read_csv(path: Path, options: ReadOptions) -> tuple[list[str], list[str]]:
    texts: list[str] = []
    labels: list[str] = []
    size = 0
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            # The delimiter is sniffed; quoting is standard CSV's: a sniffer sees apostrophes in prose as quotes.
            delimiter = _dialect(fh.read(SNIFF_BYTES), path).delimiter
            reader = csv.reader(fh, csv.excel, delimiter=delimiter, strict=True)
            fh.seek(0)
            header = [h.strip() for h in next(reader, None) or []]
            if not header:
                raise EdgekdError(f"{path} is empty", ENCODING_FIX)
            text_at, label_at = _columns(header, options, path)
            while rows := list(itertools.islice(reader, CHUNK_ROWS)):
                for i, row in enumerate(rows):
                    if len(row) != len(header):
                        raise EdgekdError(f"{path}: line {reader.line_num - len(rows) + i + 1} has {len(row)} "
                                          f"fields, the header {len(header)}", "give every row one value per column")
                    if len(row[label_at]) > MAX_NAME_CHARS:
                        raise EdgekdError(f"{path}: line {reader.line_num - len(rows) + i + 1} has a label of "
                                          f"{len(row[label_at])} characters",
                                          f"class names are at most {MAX_NAME_CHARS} characters")
                    texts.append(row[text_at])
                    labels.append(row[label_at].strip())
                    size += len(row[text_at])
                options.limits.check_bytes(4 * size, f"{path} (read so far)", "use fewer rows")
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise EdgekdError(f"cannot read {path}: {reason(exc)}", ENCODING_FIX) from None
    _check_numeric_column(texts, options.text_column, path)
    return texts, labels


def _read_parquet(path: Path, options: ReadOptions) -> tuple[list[str], list]:
    pa, parquet = _open(path)
    schema = parquet.schema_arrow
    _columns(list(schema.names), options, path)
    kind = schema.field(options.text_column).type
    if not _is_text(pa, kind):
        raise EdgekdError(f"{path}: text column {options.text_column!r} has type {kind}, not strings",
                          "pass the column that holds the text (--text-column)")
    metadata = parquet.metadata
    declared = sum(metadata.row_group(i).total_byte_size for i in range(metadata.num_row_groups))
    options.limits.check_bytes(declared, f"{path} ({metadata.num_rows} rows)", "use fewer rows")
    try:
        table = parquet.read(columns=[options.text_column, options.label_column])
    except (pa.ArrowException, OSError, ValueError, MemoryError) as exc:
        raise EdgekdError(f"cannot read {path}: {reason(exc)}", "pass a valid Parquet file") from None
    nulls = [n for n in table.column_names if table.column(n).null_count]
    if nulls:
        raise EdgekdError(f"{path}: missing values in columns {nulls}", "fill or drop those rows before building")
    labels = table.column(1)
    values = [str(v) for v in labels.to_pylist()] if _is_text(pa, labels.type) else labels.to_numpy().tolist()
    return [str(t) for t in table.column(0).to_pylist()], values


def _check_numeric_column(texts: list[str], column: str | None, path: Path) -> None:
    """A CSV column whose every value is a number is a feature, not text: refuse it rather than tokenize digits."""
    sample = [t for t in texts[:1000] if t.strip()]
    try:
        numeric = bool(sample) and all(isinstance(float(t), float) for t in sample)
    except ValueError:
        numeric = False
    if numeric:
        raise EdgekdError(f"{path}: text column {column!r} holds numbers (e.g. {sample[0][:30]!r}), not text",
                          "pass the column that holds the text (--text-column)")


def check_texts(texts: list[str], column: str | None, path: Path) -> None:
    """Every row holds some text, none absurdly long; labels are checked by the loader."""
    if not texts:
        raise EdgekdError(f"{path} has a header but no rows", "add data rows")
    empty = [i for i, t in enumerate(texts) if not t.strip()]
    if len(empty) == len(texts):
        raise EdgekdError(f"{path}: text column {column!r} is empty in every row",
                          "pass the column that holds the text (--text-column)")
    if empty:
        raise EdgekdError(f"{path}: {len(empty)} rows have no text in column {column!r} (the first is data row "
                          f"{empty[0] + 1})", "drop or fill those rows before building (an empty text has no "
                                              "tokens to classify)")
    longest = max(range(len(texts)), key=lambda i: len(texts[i]))
    if len(texts[longest]) > MAX_TEXT_CHARS:
        raise EdgekdError(f"{path}: data row {longest + 1} holds {len(texts[longest])} characters of text, over "
                          f"{MAX_TEXT_CHARS}", "split long documents into samples before building")


@dataclass(frozen=True)
class TeacherVocabulary:
    """A Hugging Face teacher's WordPiece vocabulary: the data is tokenized with it, for teacher and student alike."""

    tokens: tuple[str, ...]
    lowercase: bool
    max_len: int  # the teacher's position embeddings
    source: str


def _tokenizer(train_texts: list[str], cache: DataCache | None, given: TeacherVocabulary | None) -> TextTokenizer:
    if given is None:
        return train_tokenizer(train_texts, cache=cache)
    return from_vocab(list(given.tokens), given.lowercase, train_texts, given.max_len, given.source)


def text_dataset(name: str, spec: str, raw: RawData, labels: Labels, train_idx: np.ndarray, x_val_raw: np.ndarray,
                 y_val: np.ndarray, meta: dict, cache: DataCache | None, given: TeacherVocabulary | None = None
                 ) -> Dataset:
    """The splits tokenized by a WordPiece vocabulary trained on the training split only (not validation, not
    test), or by a Hugging Face teacher's: int32 ids, no normalisation (``Normalization`` is the identity)."""
    train_texts = [str(t) for t in raw.x_train[train_idx]]
    tokenizer = _tokenizer(train_texts, cache, given)
    splits = {"train": train_texts, "val": [str(t) for t in x_val_raw], "test": [str(t) for t in raw.x_test]}
    ids = {split: tokenizer.token_ids(texts) for split, texts in splits.items()}
    encoded = {split: tokenizer.pad(rows) for split, rows in ids.items()}
    meta = {**meta, "normalization_source": "none (token ids)", "tokenizer": tokenizer.describe(),
            "truncated_fraction": {split: round(float(np.mean([len(r) > tokenizer.max_len for r in rows])), 4)
                                   for split, rows in ids.items()}}
    return Dataset(name=name, source=spec, classes=labels.classes,
                   x_train=encoded["train"], y_train=labels.y_train[train_idx],
                   x_val=encoded["val"], y_val=y_val, x_test=encoded["test"], y_test=labels.y_test,
                   normalization=Normalization(1.0, [0.0], [1.0]), layout=TEXT_LAYOUT, meta=meta,
                   tokenizer=tokenizer, test_texts=splits["test"])

