"""Datasets: built-in digits, IDX dirs, ImageFolder dirs, .npz, CSV/Parquet tables, and archives of them.

One reader per format behind one registry (``registry.FORMATS``); ``load_dataset`` turns any of them into a
normalised ``Dataset``. Formats, limits and what is trusted: docs/data.md.
"""

from edgekd.data.dataset import NORMALIZATION_PRESETS, Dataset, Normalization, fit_normalization
from edgekd.data.idx import read_idx
from edgekd.data.limits import DataLimits
from edgekd.data.loader import image_size_option, load_dataset, resize_batch, stratified_split
from edgekd.data.preprocess import preprocess_image, resize_and_crop

__all__ = [
    "NORMALIZATION_PRESETS", "DataLimits", "Dataset", "Normalization", "fit_normalization", "image_size_option",
    "load_dataset", "preprocess_image", "read_idx", "resize_and_crop", "resize_batch", "stratified_split",
]
