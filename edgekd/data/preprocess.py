"""Image pre-processing in plain numpy: resize (shorter side), centre crop, normalise.

Why numpy only: the device must apply exactly the transform the student was trained and scored with, and the
runner (``edgekd/runner.py``) carries nothing but numpy and the runtime. This module imports numpy alone, works
on Python 3.9, and every parameter is a plain number or list, so the functions can be copied into the runner and
fed the ``preprocess`` block of the manifest.

The resize is bilinear with antialiasing when shrinking (the triangle filter widened by the shrink factor, as
Pillow's ``BILINEAR`` does), so a 4000-pixel photo reduced to 224 does not alias.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def crop_plan(height: int, width: int, size: Sequence[int], crop_fraction: float = 1.0) -> tuple[int, int, int, int]:
    """``(full_h, full_w, top, left)``: the image is resized to ``full_h x full_w``, then ``size`` is cut at top/left.

    The scale makes the resized image cover ``size / crop_fraction`` (the shorter side, relative to the requested
    aspect ratio, lands exactly there); ``crop_fraction=0.875`` with size 224 is the usual "resize 256, crop 224".
    """
    out_h, out_w = int(size[0]), int(size[1])
    scale = max(out_h / (crop_fraction * height), out_w / (crop_fraction * width))
    full_h = max(out_h, int(round(height * scale)))
    full_w = max(out_w, int(round(width * scale)))
    return full_h, full_w, (full_h - out_h) // 2, (full_w - out_w) // 2


def axis_taps(in_len: int, full_len: int, start: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Input indices and weights (each ``count x taps``) of output pixels ``start .. start+count`` of one axis."""
    scale = in_len / full_len
    support = max(scale, 1.0)  # widened when shrinking: the antialiasing
    centers = (np.arange(start, start + count, dtype=np.float64) + 0.5) * scale
    first = np.ceil(centers - support - 0.5).astype(np.int64)
    taps = int(math.ceil(2 * support)) + 1
    idx = first[:, None] + np.arange(taps)[None, :]
    weights = np.clip(1.0 - np.abs(idx + 0.5 - centers[:, None]) / support, 0.0, None)
    weights[(idx < 0) | (idx >= in_len)] = 0.0
    weights /= weights.sum(axis=1, keepdims=True)
    return np.clip(idx, 0, in_len - 1), weights.astype(np.float32)


def _resample(image: np.ndarray, axis: int, idx: np.ndarray, weights: np.ndarray) -> np.ndarray:
    shape = [1] * image.ndim
    shape[axis] = -1
    out = np.zeros(image.shape[:axis] + (idx.shape[0],) + image.shape[axis + 1:], np.float32)
    for k in range(idx.shape[1]):
        out += np.take(image, idx[:, k], axis=axis) * weights[:, k].reshape(shape)
    return out


def resize_and_crop(image: np.ndarray, size: Sequence[int], crop_fraction: float = 1.0) -> np.ndarray:
    """An HWC (or HW) image resized so it covers ``size / crop_fraction``, then centre-cropped to ``size``.

    uint8 in, uint8 out (rounded); float in, float32 out. An image already at ``size`` with ``crop_fraction=1``
    comes back unchanged.
    """
    height, width = image.shape[:2]
    full_h, full_w, top, left = crop_plan(height, width, size, crop_fraction)
    out_h, out_w = int(size[0]), int(size[1])
    if (full_h, full_w) == (height, width):  # no resize: only the centre crop (none when already at size)
        return image[top : top + out_h, left : left + out_w].copy()
    pixels = image.astype(np.float32)
    rows_idx, rows_w = axis_taps(height, full_h, top, out_h)
    cols_idx, cols_w = axis_taps(width, full_w, left, out_w)
    out = _resample(_resample(pixels, 0, rows_idx, rows_w), 1, cols_idx, cols_w)
    if image.dtype == np.uint8:
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)
    return out


def normalize_chw(image: np.ndarray, scale: float, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """HWC (or HW) raw pixels -> float32 CHW, ``(x / scale - mean[c]) / std[c]``: the model's input."""
    pixels = image if image.ndim == 3 else image[:, :, None]
    x = pixels.transpose(2, 0, 1).astype(np.float32) / np.float32(scale)
    x -= np.asarray(mean, np.float32).reshape(-1, 1, 1)
    x /= np.asarray(std, np.float32).reshape(-1, 1, 1)
    return x


def preprocess_image(image: np.ndarray, spec: dict) -> np.ndarray:
    """Decoded HWC uint8 -> float32 CHW ready for the model, from a manifest's ``preprocess`` + ``normalization``.

    ``spec``: ``{"image_size": [H, W], "crop_fraction": f, "normalization": {"scale", "mean", "std"}}``;
    without ``image_size`` the image is only normalised.
    """
    if spec.get("image_size"):
        image = resize_and_crop(image, spec["image_size"], float(spec.get("crop_fraction", 1.0)))
    norm = spec["normalization"]
    return normalize_chw(image, norm["scale"], norm["mean"], norm["std"])


def preprocess_sample(raw: np.ndarray, spec: dict) -> np.ndarray:
    """One raw sample as stored in eval.npz -> the model's float32 input: CHW images (stored CHW) or features.

    This is what the runner applies on the device (``spec`` = the manifest's ``preprocessing``), so the time it takes
    is measured there too.
    """
    if raw.ndim == 1:  # flat features, standardised per feature
        norm = spec["normalization"]
        mean, std = np.asarray(norm["mean"], np.float32), np.asarray(norm["std"], np.float32)
        return (raw.astype(np.float32) / np.float32(norm["scale"]) - mean) / std
    return preprocess_image(raw.transpose(1, 2, 0), spec)
