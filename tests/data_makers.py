"""Small data files made in the tests: IDX dirs, ImageFolders, .npz, tables and archives (valid or broken)."""

from __future__ import annotations

import gzip
import io
import struct
import tarfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image


def idx_bytes(arr: np.ndarray, dtype_byte: int = 0x08, ndim: int | None = None, dims=None) -> bytes:
    ndim = arr.ndim if ndim is None else ndim
    dims = arr.shape if dims is None else dims
    return bytes([0, 0, dtype_byte, ndim]) + struct.pack(f">{len(dims)}I", *dims) + arr.astype(np.uint8).tobytes()


def write_idx(path: Path, arr: np.ndarray, gz: bool = True) -> Path:
    payload = idx_bytes(arr)
    path.write_bytes(gzip.compress(payload, 1) if gz else payload)
    return path


def idx_dir(root: Path, n_train: int = 40, n_test: int = 8, side: int = 6, classes: int = 4, gz=False) -> Path:
    """A valid IDX dir; returns it. Plain files unless ``gz``, so tests can overwrite one with broken bytes."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    suffix = ".gz" if gz else ""
    write_idx(root / f"train-images-idx3-ubyte{suffix}", rng.integers(0, 255, (n_train, side, side)), gz)
    write_idx(root / f"train-labels-idx1-ubyte{suffix}", np.arange(n_train) % classes, gz)
    write_idx(root / f"t10k-images-idx3-ubyte{suffix}", rng.integers(0, 255, (n_test, side, side)), gz)
    write_idx(root / f"t10k-labels-idx1-ubyte{suffix}", np.arange(n_test) % classes, gz)
    return root


def image_folder(root: Path, classes=("cat", "dog"), per_class=(6, 2), size=(5, 5), mode="RGB", suffix=".png",
                 seed: int = 0) -> Path:
    """train/<class>/*.png and test/<class>/*.png with distinct random pixels."""
    rng = np.random.default_rng(seed)
    for split, n in zip(("train", "test"), per_class, strict=True):
        for cls in classes:
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                shape = (size[1], size[0]) + ((3,) if mode == "RGB" else ())
                pixels = rng.integers(0, 255, shape).astype(np.uint8)
                Image.fromarray(pixels, mode).save(root / split / cls / f"{i}{suffix}")
    return root


PHOTO_LAYOUTS = {"classes": ("",), "train+val": ("train", "val"), "train+val+test": ("train", "val", "test"),
                 "train+test": ("train", "test")}


def photo_folders(root: Path, layout: str = "classes", classes=("cat", "dog", "owl"), per_class: int = 8,
                  sides=(12, 40), seed: int = 0) -> Path:
    """Photos as users keep them (``PHOTO_LAYOUTS``): JPEGs of varied sizes, each class its own tint (learnable),
    under ``<split>/<class>/`` or, for ``classes``, straight under ``<class>/``."""
    rng = np.random.default_rng(seed)
    tints = rng.integers(40, 215, (len(classes), 3))
    for split in PHOTO_LAYOUTS[layout]:
        for tint, cls in zip(tints, classes, strict=True):
            folder = root / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                width, height = (int(v) for v in rng.integers(sides[0], sides[1], 2))
                noise = rng.integers(-40, 40, (height, width, 3))
                Image.fromarray(np.clip(tint + noise, 0, 255).astype(np.uint8)).save(folder / f"IMG_{i:04d}.jpg")
    return root


def npz_arrays(n_train: int = 20, n_test: int = 6, features: int = 4, classes: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"x_train": rng.normal(size=(n_train, features)).astype(np.float32), "y_train": np.arange(n_train) % classes,
            "x_test": rng.normal(size=(n_test, features)).astype(np.float32), "y_test": np.arange(n_test) % classes}


def write_npz(path: Path, **arrays) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path


def npy_bytes(header: dict, data: bytes) -> bytes:
    """A raw ``.npy`` (format 1.0) with any header, for headers that lie about their data."""
    text = repr(header).encode("latin1")
    pad = 64 - (10 + len(text) + 1) % 64
    text += b" " * pad + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text + data


def zip_members(path: Path, members: dict[str, bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def tar_members(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    """A .tar.gz of hand-made members (any type, any name)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def tar_info(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [",".join(header)] + [",".join(str(v) for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def fraud_table(n: int = 600, features: int = 8, minority: float = 0.05, seed: int = 0):
    """A seeded, imbalanced binary table (like fraud): (X, y) from scikit-learn's make_classification."""
    from sklearn.datasets import make_classification

    return make_classification(n_samples=n, n_features=features, n_informative=max(2, features // 2), n_redundant=0,
                               weights=[1 - minority], flip_y=0.0, random_state=seed)
