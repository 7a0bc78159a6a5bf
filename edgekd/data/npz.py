"""``.npz`` files: ``x_train, y_train, x_test, y_test`` (+ optional ``classes``), read member by member.

Every member's ``.npy`` header is read from the zip before its data (``numpy.lib.format``): numeric dtypes only
(class names may be strings), never objects (``allow_pickle=False`` always), shapes consistent, declared bytes equal
to the member's uncompressed size and under the memory limit. ``x`` may be N,F (features), N,H,W, N,C,H,W or
N,H,W,C (C of 1 or 3).
"""

from __future__ import annotations

import math
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekd.data.base import RawData, ReadOptions, reason
from edgekd.errors import EdgekdError

REQUIRED = ("x_train", "y_train", "x_test", "y_test")
OPTIONAL = ("classes",)
FEATURE_KINDS = "biuf"  # bool, int, uint, float
LABEL_KINDS = "biufU"  # + unicode class names
FIX = "save it with np.savez(path, x_train=..., y_train=..., x_test=..., y_test=...) from numeric arrays"


def detect(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() == ".npz"


@dataclass(frozen=True)
class MemberHeader:
    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def _member_header(zf: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path) -> MemberHeader:
    name = info.filename.removesuffix(".npy")
    with zf.open(info) as fp:
        version = np.lib.format.read_magic(fp)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fp)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fp)
        else:
            raise EdgekdError(f"{path}: member {name} is .npy format {version}, not 1.0 or 2.0", FIX)
        header = MemberHeader(name, tuple(int(d) for d in shape), dtype, bool(fortran))
        kinds = LABEL_KINDS if name.startswith("y_") or name == "classes" else FEATURE_KINDS
        if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None or dtype.kind not in kinds:
            raise EdgekdError(f"{path}: member {name} has dtype {dtype}; only numeric arrays are read"
                              + (" (or strings for labels)" if kinds == LABEL_KINDS else ""), FIX)
        if info.file_size - fp.tell() != header.nbytes:
            raise EdgekdError(f"{path}: member {name} holds {info.file_size - fp.tell()} bytes of data; its header "
                              f"declares shape {header.shape} of {dtype} = {header.nbytes} bytes (truncated?)", FIX)
    return header


def _members(zf: zipfile.ZipFile, path: Path) -> dict[str, zipfile.ZipInfo]:
    infos: dict[str, zipfile.ZipInfo] = {}
    for info in zf.infolist():
        key = info.filename.removesuffix(".npy")
        if key in REQUIRED + OPTIONAL:
            if key in infos:
                raise EdgekdError(f"{path}: member {key} appears twice", FIX)
            infos[key] = info
    missing = [k for k in REQUIRED if k not in infos]
    if missing:
        raise EdgekdError(f"{path} lacks the arrays {missing}", "save x_train, y_train, x_test, y_test")
    return infos


def _check_shapes(headers: dict[str, MemberHeader], path: Path) -> None:
    x_train, x_test = headers["x_train"], headers["x_test"]
    if x_train.shape[1:] != x_test.shape[1:]:
        raise EdgekdError(f"{path}: x_train samples have shape {x_train.shape[1:]}, x_test {x_test.shape[1:]}",
                          "give both the same sample shape")
    if len(x_train.shape) not in (2, 3, 4) or 0 in x_train.shape[1:]:
        raise EdgekdError(f"{path}: x_train has shape {x_train.shape}", "use N,F or N,H,W or N,C,H,W arrays")
    for split in ("train", "test"):
        x, y = headers[f"x_{split}"], headers[f"y_{split}"]
        if not y.shape or y.shape[0] != x.shape[0]:
            raise EdgekdError(f"{path}: x_{split} has {x.shape[0]} samples, y_{split} shape {y.shape}",
                              "give one label per sample")
    if "classes" in headers and len(headers["classes"].shape) != 1:
        raise EdgekdError(f"{path}: classes has shape {headers['classes'].shape}", "give a 1-D list of names")


def _to_nchw(x: np.ndarray) -> np.ndarray:
    if x.ndim == 3:  # N,H,W grayscale
        return x[:, None]
    if x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        return x.transpose(0, 3, 1, 2)  # NHWC -> NCHW
    return x


def read(path: Path, options: ReadOptions) -> RawData:
    try:
        with zipfile.ZipFile(path) as zf:
            infos = _members(zf, path)
            headers = {k: _member_header(zf, info, path) for k, info in infos.items()}
            _check_shapes(headers, path)
            options.limits.check_bytes(sum(h.nbytes for h in headers.values()), f"{path} (declared array sizes)",
                                       "use a smaller file")
            arrays = {}
            for key, info in infos.items():
                with zf.open(info) as fp:
                    arrays[key] = np.lib.format.read_array(fp, allow_pickle=False)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, zlib.error, ValueError,
            NotImplementedError, RuntimeError, MemoryError) as exc:
        raise EdgekdError(f"cannot read {path}: {reason(exc)}", f"pass a valid, complete .npz: {FIX}"
                          ) from None
    classes = [str(c) for c in arrays["classes"]] if "classes" in arrays else None
    x_train, x_test = _to_nchw(arrays["x_train"]), _to_nchw(arrays["x_test"])
    scale = 255.0 if x_train.dtype == np.uint8 else 1.0
    return RawData(x_train, arrays["y_train"], x_test, arrays["y_test"], scale, class_names=classes)
