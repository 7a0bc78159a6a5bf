"""What a reader is given (``ReadOptions``), what it hands back (``RawData``) and how it is registered (``DataFormat``).

Adding a data format: one module with a ``read(path, options) -> RawData`` and a ``detect(path) -> bool``, and one
``DataFormat`` row in ``edgekd/data/registry.py``. The loader does the rest (labels, split, limits, normalisation).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgekd.data.cache import DataCache
from edgekd.data.limits import DataLimits
from edgekd.data.preprocess import crop_plan


def reason(exc: BaseException, limit: int = 300) -> str:
    """A library's exception as one short line for an EdgekdError (some span several lines)."""
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True)
class ImageSize:
    """Resize (shorter side, antialiased bilinear) so the image covers ``size / crop_fraction``, then centre-crop."""

    height: int
    width: int
    crop_fraction: float = 1.0

    @property
    def size(self) -> tuple[int, int]:
        return self.height, self.width

    def plan(self, height: int, width: int) -> tuple[int, int, int, int]:
        return crop_plan(height, width, self.size, self.crop_fraction)

    def describe(self) -> dict:
        """The ``preprocess`` block of describe()/the manifest: enough for ``preprocess.preprocess_image``."""
        return {"image_size": [self.height, self.width], "crop_fraction": self.crop_fraction,
                "resize": "shorter side to image_size / crop_fraction, bilinear with antialiasing",
                "crop": "centre", "input": "decoded uint8 HWC", "function": "edgekd.data.preprocess.preprocess_image"}


@dataclass(frozen=True)
class ReadOptions:
    limits: DataLimits
    label_column: str | None = None
    image_size: ImageSize | None = None
    channels: int | None = None  # 3 when the requested normalisation needs RGB; None: as the data is
    cache: DataCache | None = None  # None: nothing cached (archives unpack to a temporary directory)
    # How a reader cuts splits the data did not come with (a folder of class folders): splits.three_way_split.
    seed: int = 0
    test_fraction: float = 0.2
    val_fraction: float = 0.1
    text_column: str | None = None  # a text table: this column is read as raw strings (edgekd.data.text_table)


@dataclass
class RawData:
    """A reader's output: unnormalised samples, labels as read, and facts for ``Dataset.describe()``.

    ``x_*``: N,C,H,W images (uint8 or float; possibly memory-mapped) or N,F features. ``y_*``: ids, integral
    floats or class-name strings. ``x_test is None``: a single table the loader splits (stratified, seeded).
    ``x_val``: a validation split the data came with (an ImageFolder's ``val/``); without one the loader holds out
    a seeded ``val_fraction`` of train. ``x_test`` is always the evaluation split: nothing is chosen on it.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray | None
    y_test: np.ndarray | None
    scale: float
    class_names: list[str] | None = None  # names of ids 0..K-1 (e.g. folder names)
    resized: bool = False  # the reader already applied ReadOptions.image_size
    meta: dict = field(default_factory=dict)
    # When the reader resized: the first test samples at their source size (C,H,W each, sizes may differ), so the
    # device can re-do the resize itself (bounded by SOURCE_SAMPLES_BYTES).
    x_test_source: list[np.ndarray] | None = None
    x_val: np.ndarray | None = None
    y_val: np.ndarray | None = None
    # Where each split came from, in words, for describe() and the report: {"train": "train/", "test": "val/"}.
    # The loader adds "val" when it holds validation out of train itself.
    splits_from: dict[str, str] | None = None


@dataclass(frozen=True)
class DataFormat:
    name: str
    layout: str  # one line for the "none of the known layouts" message
    detect: Callable[[Path], bool]
    read: Callable[[Path, ReadOptions], RawData]
