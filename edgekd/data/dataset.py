"""``Dataset`` (what every stage consumes) and ``Normalization`` (what the device must apply to raw inputs)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgekd.data.inputs import input_dtype_name
from edgekd.errors import EdgekdError

# Named statistics in [0, 1] units (x = raw / scale), as torchvision and timm document them.
NORMALIZATION_PRESETS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "inception": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
}
FIT = "fit"  # statistics of the training split: per channel for images, per feature for flat data
STATS_CHUNK = 2048  # samples per step when fitting statistics (bounds the float64 working copy)


@dataclass(frozen=True)
class Normalization:
    """``x = (raw / scale - mean[c]) / std[c]``: what the device must do to raw inputs.

    ``c`` runs over channels for images (NCHW) and over features for flat data (N x F); one value applies to all.
    """

    scale: float
    mean: list[float]
    std: list[float]

    def apply(self, raw: np.ndarray) -> np.ndarray:
        """float32 copy of ``raw`` normalised (in place on the copy: one float32 array at a time)."""
        x = raw.astype(np.float32)
        x /= np.float32(self.scale)
        shape = (1, -1) + (1,) * (x.ndim - 2) if x.ndim > 2 else (1, -1)
        x -= np.asarray(self.mean, np.float32).reshape(shape)
        x /= np.asarray(self.std, np.float32).reshape(shape)
        return x

    def to_dict(self) -> dict:
        return {"scale": self.scale, "mean": list(self.mean), "std": list(self.std)}


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
    # The test inputs as a device receives them, before edgekd's pre-processing: at the model's size before
    # normalisation (``raw_test``), and at the source size when the loader resized them (``source_test``). The
    # runner re-does the pre-processing from these on the device and times it.
    raw_test: np.ndarray | None = None
    source_test: np.ndarray | list[np.ndarray] | None = None  # all test samples, or the first ones (ragged)
    # Text (edgekd.text): the tokenizer that made the int32 ids (trained on the training split) and the raw test
    # strings, which the runner re-tokenizes on the device. None for images and tables.
    tokenizer: Any = None
    test_texts: list[str] | None = None

    def preprocessing(self) -> dict:
        """What turns ``source_test`` (else ``raw_test``) into ``x_test``: the manifest's ``preprocessing``."""
        resize = self.meta.get("preprocess") if self.source_test is not None else None
        return {"applies_to": "source" if resize else "raw", "normalization": self.normalization.to_dict(),
                **({"image_size": resize["image_size"], "crop_fraction": resize.get("crop_fraction", 1.0)}
                   if resize else {})}

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

    @property
    def is_text(self) -> bool:
        return self.tokenizer is not None

    @property
    def input_dtype(self) -> str:
        """What the model takes: ``"float32"`` (normalised images/features) or ``"int32"`` (token ids)."""
        return input_dtype_name(self.x_train)

    @property
    def vocab_size(self) -> int:
        return len(self.tokenizer.vocab) if self.tokenizer is not None else 0

    def fingerprint(self) -> str:
        """A short hash of the data and split, to key caches (e.g. a trained default teacher)."""
        digest = hashlib.sha256()
        for arr in (self.x_train, self.y_train, self.x_val, self.x_test):
            digest.update(np.ascontiguousarray(arr).tobytes())
        return digest.hexdigest()[:16]

    def describe(self) -> dict:
        """JSON-ready facts for the manifest: shape, layout, classes, splits, normalisation, and the reader's notes."""
        return {
            "name": self.name,
            "source": self.source,
            "input_shape": list(self.input_shape),
            "layout": self.layout if self.is_image or self.is_text else "NF",
            "input_dtype": self.input_dtype,
            "classes": self.classes,
            "splits": {"train": len(self.y_train), "val": len(self.y_val), "test": len(self.y_test)},
            "normalization": self.normalization.to_dict(),
            **self.meta,
        }


def data_notes(described: dict) -> list[str]:
    """How the data was read and split, in words: printed when a build starts, and in report.md. A user whose
    photos were split for them, or whose val/ is the only held-out folder, should not have to read JSON for it."""
    notes, folder = [], described.get("image_folder") or {}
    sources, counts = described.get("splits_from"), described.get("splits", {})
    if sources:
        notes.append("Splits: " + "; ".join(f"{role} {counts.get(role, '?')} from {sources[role]}"
                                            for role in ("train", "val", "test")) + ".")
    if "split" in folder:
        split = folder["split"]
        notes.append(f"The {folder['layout']} folders were split here, stratified by class and seeded (seed "
                     f"{split['seed']}; the same seed cuts the same split); recorded under data.image_folder.split.")
    if described.get("evaluation_split"):
        name = described["evaluation_split"]
        notes.append(f"Evaluation split: {name}/ (no separate test split exists). It is only scored: early stopping, "
                     f"pruning and the int8 accuracy contract use the validation split held out of train/.")
    skipped = folder.get("skipped_not_images", 0)
    if skipped:
        examples = folder.get("skipped_examples", [])
        what = "entry that is not an image" if skipped == 1 else "entries that are not images"
        notes.append(f"Skipped {skipped} {what}: "
                     f"{', '.join(examples)}{', ...' if skipped > len(examples) else ''}.")
    return notes


def fit_normalization(raw: np.ndarray, scale: float) -> Normalization:
    """Per-channel (images) or per-feature (flat) mean/std of ``raw / scale``, in float64 chunks.

    A statistic with no spread (a constant feature or channel) gets std 1, so it never divides by zero.
    """
    axes = (0, 2, 3) if raw.ndim == 4 else (0,)
    count = raw.size // max(1, raw.shape[1] if raw.ndim > 1 else 1)
    chunks = [slice(i, i + STATS_CHUNK) for i in range(0, len(raw), STATS_CHUNK)]
    total = sum(np.asarray(raw[c], np.float64).sum(axis=axes) for c in chunks)
    mean = np.atleast_1d(total / count)
    shape = (1, -1) + (1,) * (raw.ndim - 2)
    squares = sum(((np.asarray(raw[c], np.float64) - mean.reshape(shape)) ** 2).sum(axis=axes) for c in chunks)
    std = np.sqrt(np.atleast_1d(squares / count)) / scale
    mean = mean / scale
    std = np.where(std < 1e-8, 1.0, std)
    return Normalization(float(scale), [float(m) for m in mean], [float(s) for s in std])


def _stats(values: object, what: str) -> list[float]:
    try:
        out = [float(v) for v in np.asarray(values, dtype=np.float64).ravel()]
    except (TypeError, ValueError):
        out = []
    if not out or not all(np.isfinite(out)):
        raise EdgekdError(f"normalization {what} {values!r} is not a list of finite numbers", "e.g. [0.5, 0.5, 0.5]")
    return out


def resolve_normalization(spec: object, raw_train: np.ndarray, scale: float) -> tuple[Normalization, str]:
    """The normalisation a ``load_dataset(normalization=...)`` asks for, and a name for describe().

    ``None``/``"fit"``: fit on the training split; a preset name (``"imagenet"``, ``"inception"``); a
    ``Normalization``; a mapping ``{"mean": [...], "std": [...], "scale"?: 255}``; or a ``(mean, std)`` pair.
    Given statistics are in ``raw / scale`` units; one value or one per channel (per feature for flat data).
    """
    if spec is None or spec == FIT:
        return fit_normalization(raw_train, scale), FIT
    if isinstance(spec, str):
        if spec not in NORMALIZATION_PRESETS:
            raise EdgekdError(f"unknown normalization {spec!r}",
                              f"use one of {[FIT, *NORMALIZATION_PRESETS]} or give mean/std")
        mean, std = NORMALIZATION_PRESETS[spec]
        norm, name = Normalization(float(scale), list(mean), list(std)), spec
    elif isinstance(spec, Normalization):
        norm, name = spec, "given"
    elif isinstance(spec, Mapping) and {"mean", "std"} <= set(spec):
        norm = Normalization(float(spec.get("scale", scale)), _stats(spec["mean"], "mean"), _stats(spec["std"], "std"))
        name = "given"
    elif isinstance(spec, Sequence) and len(spec) == 2:
        norm, name = Normalization(float(scale), _stats(spec[0], "mean"), _stats(spec[1], "std")), "given"
    else:
        raise EdgekdError(f"normalization {spec!r} is not understood",
                          "pass None, 'fit', 'imagenet', {'mean': [...], 'std': [...]} or (mean, std)")
    _check_fits(norm, raw_train)
    return norm, name


def _check_fits(norm: Normalization, raw_train: np.ndarray) -> None:
    stats = raw_train.shape[1] if raw_train.ndim > 1 else 1
    kind = "channels" if raw_train.ndim == 4 else "features"
    if len(norm.mean) != len(norm.std) or len(norm.mean) not in (1, stats):
        either = f", or {stats} of each" if stats > 1 else ""
        raise EdgekdError(f"normalization has {len(norm.mean)} means and {len(norm.std)} stds; the data has "
                          f"{stats} {kind}", f"give one mean and one std{either} (named presets are for RGB images)")
    if min(norm.std) <= 0 or not norm.scale > 0:
        raise EdgekdError("normalization std and scale must be > 0", "fix the statistics")
