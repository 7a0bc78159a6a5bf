"""Datasets: built-in digits, IDX directories, ImageFolder directories and .npz files.

Everything becomes float32 NCHW (or N x F for flat data), normalised by per-channel statistics of the
training split. The normalisation is recorded so the device applies exactly the same transform.
"""

from __future__ import annotations

import gzip
import hashlib
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgekd.errors import EdgekdError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif"}
IDX_STEMS = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}


@dataclass(frozen=True)
class Normalization:
    """``x = (raw / scale - mean[c]) / std[c]``: what the device must do to raw inputs."""

    scale: float
    mean: list[float]
    std: list[float]

    def apply(self, raw: np.ndarray) -> np.ndarray:
        x = raw.astype(np.float32) / np.float32(self.scale)
        shape = (1, -1) + (1,) * (x.ndim - 2) if x.ndim > 2 else (1, -1)
        mean = np.asarray(self.mean, np.float32).reshape(shape)
        std = np.asarray(self.std, np.float32).reshape(shape)
        return (x - mean) / std


@dataclass
class Dataset:
    name: str
    source: str
    classes: list[str]
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    normalization: Normalization
    layout: str = "NCHW"
    meta: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one sample (no batch dimension)."""
        return tuple(self.x_train.shape[1:])

    @property
    def is_image(self) -> bool:
        return self.x_train.ndim == 4

    def fingerprint(self) -> str:
        """A short hash of the data and split, to key caches (e.g. a trained default teacher)."""
        digest = hashlib.sha256()
        for arr in (self.x_train, self.y_train, self.x_val, self.x_test):
            digest.update(np.ascontiguousarray(arr).tobytes())
        return digest.hexdigest()[:16]

    def describe(self) -> dict:
        return {
            "name": self.name,
            "source": self.source,
            "input_shape": list(self.input_shape),
            "layout": self.layout if self.is_image else "NF",
            "classes": self.classes,
            "splits": {"train": len(self.y_train), "val": len(self.y_val), "test": len(self.y_test)},
            "normalization": {
                "scale": self.normalization.scale,
                "mean": self.normalization.mean,
                "std": self.normalization.std,
            },
            **self.meta,
        }


def load_dataset(
    spec: str = "digits", *, seed: int = 0, val_fraction: float = 0.1, max_train: int | None = None
) -> Dataset:
    """Load ``spec``: ``digits`` or a path whose layout (IDX, ImageFolder, .npz) is auto-detected."""
    if spec == "digits":
        name, raw = "digits", _load_digits(seed)
    else:
        path = Path(spec)
        if not path.exists():
            raise EdgekdError(
                f"data path not found: {spec}", "pass 'digits' or a path to an IDX dir, ImageFolder dir or .npz"
            )
        name = path.stem if path.is_file() else path.name
        raw = _load_path(path)
    x_train, y_train, x_test, y_test, classes, scale = raw
    _check_labels(y_train, y_test, len(classes), spec)
    if not np.isfinite(x_train).all() or not np.isfinite(x_test).all():
        raise EdgekdError(f"data '{spec}' contains NaN or infinite values", "clean the data before building")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y_train))
    if max_train is not None and max_train < len(order):
        order = order[:max_train]
    n_val = max(len(classes), int(round(len(order) * val_fraction)))
    val_idx, train_idx = order[:n_val], order[n_val:]
    raw_train = x_train[train_idx]
    norm = _fit_normalization(raw_train, scale)
    return Dataset(
        name=name,
        source=spec,
        classes=classes,
        x_train=norm.apply(raw_train),
        y_train=y_train[train_idx].astype(np.int64),
        x_val=norm.apply(x_train[val_idx]),
        y_val=y_train[val_idx].astype(np.int64),
        x_test=norm.apply(x_test),
        y_test=y_test.astype(np.int64),
        normalization=norm,
        meta={"seed": seed, "val_fraction": val_fraction},
    )


def _fit_normalization(raw: np.ndarray, scale: float) -> Normalization:
    x = raw.astype(np.float64) / scale
    axes = (0, 2, 3) if x.ndim == 4 else (0,)
    if x.ndim == 4:
        mean, std = x.mean(axis=axes), x.std(axis=axes)
    else:  # flat features: one statistic for all, so a feature that is constant doesn't divide by zero
        mean, std = np.array([x.mean()]), np.array([x.std()])
    std = np.where(std < 1e-8, 1.0, std)
    return Normalization(float(scale), [float(m) for m in mean], [float(s) for s in std])


def _check_labels(y_train: np.ndarray, y_test: np.ndarray, n: int, spec: str) -> None:
    for split, y in (("train", y_train), ("test", y_test)):
        if len(y) == 0:
            raise EdgekdError(f"data '{spec}' has an empty {split} split", f"add {split} samples")
        if y.min() < 0 or y.max() >= n:
            raise EdgekdError(f"data '{spec}': {split} labels must lie in [0, {n})", "relabel classes as 0..N-1")


Raw = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str], float]


def _load_digits(seed: int) -> Raw:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = bunch.images.astype(np.float32)[:, None, :, :]  # values 0..16
    labels = bunch.target.astype(np.int64)
    order = np.random.default_rng(seed + 7919).permutation(len(labels))
    n_test = int(round(0.2 * len(labels)))
    test, train = order[:n_test], order[n_test:]
    classes = [str(c) for c in bunch.target_names]
    return images[train], labels[train], images[test], labels[test], classes, 16.0


def _load_path(path: Path) -> Raw:
    if path.is_file() and path.suffix == ".npz":
        return _load_npz(path)
    if path.is_dir():
        if _find_idx(path, "x_train") is not None:
            return _load_idx_dir(path)
        if (path / "train").is_dir() and (path / "test").is_dir():
            return _load_image_folder(path)
    raise EdgekdError(
        f"data path {path} is in none of the known layouts",
        "use an IDX dir (train-images-idx3-ubyte[.gz] ...), an ImageFolder dir (train/<class>/*.png, "
        "test/<class>/*.png) or an .npz with x_train, y_train, x_test, y_test",
    )


def _find_idx(root: Path, key: str) -> Path | None:
    stem = IDX_STEMS[key]
    for candidate in (root / stem, root / f"{stem}.gz", root / stem.replace("-idx", ".idx")):
        if candidate.exists():
            return candidate
    return None


def read_idx(path: Path) -> np.ndarray:
    """Parse one IDX file (big-endian header, then raw uint8), gzip or plain."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            data = fh.read()
        magic = struct.unpack(">I", data[:4])[0]
        if magic >> 8 != 0x08:
            raise ValueError("only unsigned-byte IDX files are supported")
        ndim = magic & 0xFF
        dims = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
        arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
        return arr.reshape(dims)
    except (OSError, ValueError, struct.error, EOFError) as exc:
        raise EdgekdError(f"cannot read IDX file {path}: {exc}", "re-download or re-create the file") from None


def _load_idx_dir(root: Path) -> Raw:
    parts = {}
    for key in IDX_STEMS:
        found = _find_idx(root, key)
        if found is None:
            raise EdgekdError(f"IDX dir {root} lacks {IDX_STEMS[key]}[.gz]", "add the missing file")
        parts[key] = read_idx(found)
    x_train, x_test = parts["x_train"][:, None], parts["x_test"][:, None]
    y_train, y_test = parts["y_train"].astype(np.int64), parts["y_test"].astype(np.int64)
    if len(x_train) != len(y_train) or len(x_test) != len(y_test):
        raise EdgekdError(f"IDX dir {root}: image and label counts differ", "use matching image/label files")
    n = int(max(y_train.max(), y_test.max())) + 1
    return x_train, y_train, x_test, y_test, [str(i) for i in range(n)], 255.0


def _load_image_folder(root: Path) -> Raw:
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow is a core dependency
        raise EdgekdError("ImageFolder data needs Pillow", "pip install pillow") from None
    classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
    if not classes:
        raise EdgekdError(f"ImageFolder dir {root}/train has no class folders", "add train/<class>/*.png")
    out = []
    size, mode = None, None
    for split in ("train", "test"):
        xs, ys = [], []
        for label, cls in enumerate(classes):
            for file in sorted((root / split / cls).glob("*")) if (root / split / cls).is_dir() else []:
                if file.suffix.lower() not in IMAGE_SUFFIXES:
                    continue
                try:
                    img = Image.open(file)
                    mode = mode or ("L" if img.mode in ("L", "1", "I;16") else "RGB")
                    img = img.convert(mode)
                except OSError as exc:
                    raise EdgekdError(f"cannot read image {file}: {exc}", "remove or replace the file") from None
                size = size or img.size
                if img.size != size:
                    raise EdgekdError(
                        f"image {file} is {img.size[0]}x{img.size[1]}, others are {size[0]}x{size[1]}",
                        "resize all images to one size",
                    )
                arr = np.asarray(img, dtype=np.uint8)
                xs.append(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1))
                ys.append(label)
        if not xs:
            raise EdgekdError(f"ImageFolder dir {root}/{split} has no images", f"add {split}/<class>/*.png")
        out += [np.stack(xs), np.asarray(ys, np.int64)]
    return out[0], out[1], out[2], out[3], classes, 255.0


def _load_npz(path: Path) -> Raw:
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in npz.files]
            if missing:
                raise EdgekdError(f"{path} lacks the arrays {missing}", "save x_train, y_train, x_test, y_test")
            arrays = {k: npz[k] for k in ("x_train", "y_train", "x_test", "y_test")}
            classes = [str(c) for c in npz["classes"]] if "classes" in npz.files else None
    except (OSError, ValueError) as exc:
        raise EdgekdError(f"cannot read {path}: {exc}", "pass a valid .npz file") from None
    x_train, x_test = arrays["x_train"], arrays["x_test"]
    if x_train.shape[1:] != x_test.shape[1:]:
        raise EdgekdError(f"{path}: x_train and x_test sample shapes differ", "give both the same shape")
    if x_train.ndim == 3:  # N,H,W grayscale
        x_train, x_test = x_train[:, None], x_test[:, None]
    elif x_train.ndim == 4 and x_train.shape[-1] in (1, 3) and x_train.shape[1] not in (1, 3):
        x_train, x_test = x_train.transpose(0, 3, 1, 2), x_test.transpose(0, 3, 1, 2)  # NHWC -> NCHW
    elif x_train.ndim not in (2, 4):
        raise EdgekdError(f"{path}: x_train has shape {x_train.shape}", "use N,F or N,H,W or N,C,H,W arrays")
    y_train, y_test = arrays["y_train"].astype(np.int64).ravel(), arrays["y_test"].astype(np.int64).ravel()
    if len(x_train) != len(y_train) or len(x_test) != len(y_test):
        raise EdgekdError(f"{path}: sample and label counts differ", "give one label per sample")
    n = int(max(y_train.max(initial=0), y_test.max(initial=0))) + 1
    classes = classes or [str(i) for i in range(n)]
    scale = 255.0 if x_train.dtype == np.uint8 else 1.0
    return x_train.astype(np.float32), y_train, x_test.astype(np.float32), y_test, classes, scale
