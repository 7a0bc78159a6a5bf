"""The data formats edgekd reads, tried in order: adding one is a module and one row here."""

from __future__ import annotations

from pathlib import Path

from edgekd.data import archive, csv_table, idx, image_folder, npz, parquet_table
from edgekd.data.base import DataFormat, RawData, ReadOptions


def _read_archive(path: Path, options: ReadOptions) -> RawData:
    """An archive holds one of the other layouts (never another archive)."""
    return archive.read(path, options, lambda root: find_format(root, allow_archives=False))


FORMATS: list[DataFormat] = [
    DataFormat("idx", "an IDX dir (train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], t10k-...)",
               idx.detect, idx.read),
    DataFormat("image-folder", "an ImageFolder dir (<class>/*.jpg, or train/ + val/ and/or test/ of <class>/*.jpg)",
               image_folder.detect, image_folder.read),
    DataFormat("npz", "an .npz with x_train, y_train, x_test, y_test", npz.detect, npz.read),
    DataFormat("csv", "a .csv/.tsv table with a label column (label_column=...)", csv_table.detect, csv_table.read),
    DataFormat("parquet", "a .parquet table with a label column (label_column=...)",
               parquet_table.detect, parquet_table.read),
    DataFormat("archive", "a .tar.gz/.tgz/.tar/.zip of any of these", archive.detect, _read_archive),
]


def find_format(path: Path, allow_archives: bool = True) -> DataFormat | None:
    """The first format whose ``detect`` accepts ``path`` (archives are not looked for inside archives)."""
    for fmt in FORMATS:
        if (allow_archives or fmt.name != "archive") and fmt.detect(path):
            return fmt
    return None


def known_layouts() -> str:
    return "; ".join(fmt.layout for fmt in FORMATS)
