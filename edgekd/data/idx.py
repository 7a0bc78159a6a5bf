"""IDX directories (the MNIST / Fashion-MNIST layout): four files, plain or gzip.

The header is checked before anything is allocated: magic ``00 00``, dtype byte ``0x08`` (unsigned byte, the only
one these sets use), 1 to 4 dims, their product under the memory limit and equal to the payload. A gzip payload is
read to exactly the declared size plus one byte, so a gzip bomb behind a small header is never inflated in full.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np

from edgekd.data.base import RawData, ReadOptions, reason
from edgekd.data.limits import DataLimits
from edgekd.errors import EdgekdError

UBYTE = 0x08
MAX_NDIM = 4
READ_CHUNK = 1 << 24
IDX_STEMS = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}


def find_idx(root: Path, key: str) -> Path | None:
    stem = IDX_STEMS[key]
    for candidate in (root / stem, root / f"{stem}.gz", root / stem.replace("-idx", ".idx")):
        if candidate.is_file():
            return candidate
    return None


def detect(path: Path) -> bool:
    return path.is_dir() and find_idx(path, "x_train") is not None


def _bad(path: Path, problem: str) -> EdgekdError:
    return EdgekdError(f"IDX file {path}: {problem}", "re-download or re-create the file (IDX: big-endian header "
                       "00 00 08 <ndim>, <ndim> uint32 dims, then the uint8 payload)")


def _read_exact(fh, buffer: memoryview, path: Path, what: str) -> None:
    done = 0
    while done < len(buffer):
        n = fh.readinto(buffer[done:done + READ_CHUNK])
        if not n:
            raise _bad(path, f"{what} ends after {done} of {len(buffer)} bytes (truncated)")
        done += n


def read_idx(path: Path, limits: DataLimits | None = None) -> np.ndarray:
    """One IDX file as a uint8 array of its declared shape, gzip or plain, with the header checked first."""
    limits = limits or DataLimits.from_env()
    gzipped = path.suffix == ".gz"
    try:
        with (gzip.open(path, "rb") if gzipped else open(path, "rb")) as fh:
            head = bytearray(4)
            _read_exact(fh, memoryview(head), path, "the header")
            if head[:2] != b"\0\0":
                raise _bad(path, f"bad magic bytes {bytes(head[:2]).hex()} (expected 0000)")
            if head[2] != UBYTE:
                raise _bad(path, f"dtype byte 0x{head[2]:02x} is not supported (only 0x08, unsigned byte)")
            ndim = head[3]
            if not 1 <= ndim <= MAX_NDIM:
                raise _bad(path, f"{ndim} dimensions (expected 1 to {MAX_NDIM})")
            raw_dims = bytearray(4 * ndim)
            _read_exact(fh, memoryview(raw_dims), path, "the header")
            dims = struct.unpack(f">{ndim}I", raw_dims)
            count = math.prod(dims)
            limits.check_bytes(count, f"IDX file {path} (declared shape {dims})", "use a smaller file")
            if not gzipped and path.stat().st_size != 4 + 4 * ndim + count:
                raise _bad(path, f"the payload is {path.stat().st_size - 4 - 4 * ndim} bytes; the header "
                                 f"declares {dims} = {count}")
            data = np.empty(count, np.uint8)
            _read_exact(fh, memoryview(data), path, "the payload")
            if fh.read(1):
                raise _bad(path, f"data continues past the declared shape {dims}")
    except (OSError, EOFError, zlib.error) as exc:
        raise _bad(path, f"cannot be read ({reason(exc)})") from None
    return data.reshape(dims)


def read(root: Path, options: ReadOptions) -> RawData:
    parts = {}
    for key in IDX_STEMS:
        found = find_idx(root, key)
        if found is None:
            raise EdgekdError(f"IDX dir {root} lacks {IDX_STEMS[key]}[.gz]", "add the missing file")
        parts[key] = (found, read_idx(found, options.limits))
    for split in ("train", "test"):
        (image_path, images), (label_path, labels) = parts[f"x_{split}"], parts[f"y_{split}"]
        if images.ndim != 3:
            raise _bad(image_path, f"images must have 3 dims (count, height, width), not {images.ndim}")
        if labels.ndim != 1:
            raise _bad(label_path, f"labels must have 1 dim (count), not {labels.ndim}")
        if len(images) != len(labels):
            raise EdgekdError(f"IDX dir {root}: {len(images)} {split} images but {len(labels)} labels",
                              "use matching image and label files")
    return RawData(parts["x_train"][1][:, None], parts["y_train"][1], parts["x_test"][1][:, None],
                   parts["y_test"][1], 255.0)
