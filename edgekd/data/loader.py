"""``load_dataset``: a spec -> a reader (registry) -> labels, splits, limits, normalisation -> ``Dataset``.

Everything becomes float32 N,C,H,W (or N,F for flat data), normalised by statistics of the training split (per
channel for images, per feature for tables) or by given/named statistics; the normalisation and any resize are
recorded so the device applies exactly the same transform.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from edgekd.data import archive, text_table
from edgekd.data.base import ImageSize, RawData, ReadOptions
from edgekd.data.cache import DataCache
from edgekd.data.dataset import NORMALIZATION_PRESETS, Dataset, Normalization, resolve_normalization
from edgekd.data.digits import SEED_OFFSET, read_digits
from edgekd.data.labels import Labels, encode_labels
from edgekd.data.limits import DataLimits
from edgekd.data.preprocess import resize_and_crop
from edgekd.data.registry import find_format, known_layouts
from edgekd.data.splits import check_fraction, stratified_split
from edgekd.errors import EdgekdError

MAX_IMAGE_SIDE = 8192


def load_dataset(
    spec: str | os.PathLike = "digits", *, seed: int = 0, val_fraction: float = 0.1, max_train: int | None = None,
    label_column: str | None = None, image_size: int | tuple[int, int] | None = None, crop_fraction: float = 1.0,
    normalization: object = None, test_fraction: float = 0.2, cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True, text_column: str | None = None, text_vocab: object = None,
) -> Dataset:
    """Load ``spec``: ``digits`` or a path whose layout (IDX, ImageFolder, .npz, CSV, Parquet, archive) is detected.

    ``label_column``: the class column of a table. ``image_size``: resize (shorter side) + centre-crop images to
    ``(H, W)`` (an int: square), covering ``image_size / crop_fraction`` before the crop. ``normalization``: None or
    ``"fit"`` (train statistics), ``"imagenet"``/``"inception"``, or explicit statistics (see
    ``resolve_normalization``). ``test_fraction``: the stratified test share of a single table or of a folder of
    class folders (whose validation share is ``val_fraction`` of the rest, stratified too). ``cache_dir``/
    ``use_cache``: where archives are unpacked and decoded images kept (default ``$EDGEKD_CACHE/datasets``).
    ``text_column``: the table (or folder of ``train.csv`` + ``test.csv``) is text: that column is tokenized
    (``edgekd.data.text_table``) into int32 ids by a tokenizer trained on the training split only, or by ``text_vocab``
    (``edgekd.data.text_table.TeacherVocabulary``: a Hugging Face teacher's vocabulary).
    """
    limits = DataLimits.from_env()
    size = image_size_option(image_size, crop_fraction)
    options = ReadOptions(limits, label_column, size, _channels_wanted(normalization),
                          DataCache(Path(cache_dir) if cache_dir else None) if use_cache else None,
                          seed=seed, test_fraction=test_fraction, val_fraction=val_fraction,
                          text_column=text_column)
    spec = os.fspath(spec)
    name, fmt, raw = _read(spec, options, seed)
    labels, test_split, y_val_given = _labels_and_test_split(raw, spec, limits, test_fraction, seed)
    source_test = raw.x_test_source
    if size is not None and not raw.resized:
        source_test = raw.x_test  # the device gets these and resizes them itself (runner pre-processing)
        raw.x_train, raw.x_test = (resize_batch(x, size, limits) for x in (raw.x_train, raw.x_test))
        if raw.x_val is not None:
            raw.x_val = resize_batch(raw.x_val, size, limits)
    _check_sample_shapes(raw, spec)
    _check_finite(raw, spec)
    train_idx, x_val_raw, y_val = _train_and_val(raw, labels, y_val_given, seed, val_fraction, max_train)
    sample = math.prod(raw.x_train.shape[1:])
    limits.check_bytes(4 * sample * (len(train_idx) + len(y_val) + len(labels.y_test)),
                       f"data '{spec}' as float32", "pass max_train (CLI: --max-train) or a smaller image_size")
    meta = {"seed": seed, "val_fraction": val_fraction, "format": fmt, "labels": labels.encoding, **raw.meta}
    if test_split:
        meta["test_split"] = test_split
    if raw.splits_from:
        meta["splits_from"] = _splits_from(raw.splits_from, val_fraction, seed)
    if text_column is not None:
        if normalization is not None:
            raise EdgekdError("normalization applies to images and tables; text becomes token ids", "drop it")
        return text_table.text_dataset(name, spec, raw, labels, train_idx, x_val_raw, y_val, meta, options.cache,
                                       text_vocab)
    raw_train = raw.x_train[train_idx]
    norm, norm_source = resolve_normalization(normalization, raw_train, raw.scale)
    meta["normalization_source"] = norm_source
    if size is not None:
        meta["preprocess"] = size.describe()
    return Dataset(
        name=name, source=spec, classes=labels.classes,
        x_train=norm.apply(raw_train), y_train=labels.y_train[train_idx],
        x_val=norm.apply(x_val_raw), y_val=y_val,
        x_test=norm.apply(raw.x_test), y_test=labels.y_test,
        normalization=norm, meta=meta, raw_test=raw.x_test, source_test=source_test,
    )


def image_size_option(image_size: int | tuple[int, int] | None, crop_fraction: float = 1.0) -> ImageSize | None:
    """``224`` or ``(224, 224)`` (+ crop fraction) -> ``ImageSize``, refusing sizes that make no sense."""
    if image_size is None:
        return None
    try:
        height, width = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        ok = all(isinstance(v, int) and 1 <= v <= MAX_IMAGE_SIDE for v in (height, width))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise EdgekdError(f"image_size {image_size!r} is not a size", f"give H or (H, W), each 1..{MAX_IMAGE_SIDE}")
    if not 0.05 <= float(crop_fraction) <= 1.0:
        raise EdgekdError(f"crop_fraction {crop_fraction} is outside [0.05, 1]", "e.g. 0.875 (resize 256, crop 224)")
    return ImageSize(height, width, float(crop_fraction))


def _channels_wanted(normalization: object) -> int | None:
    """3 when the requested statistics are per RGB channel (so grey photos are read as RGB), else None."""
    if isinstance(normalization, str) and normalization in NORMALIZATION_PRESETS:
        return len(NORMALIZATION_PRESETS[normalization][0])
    mean = normalization.mean if isinstance(normalization, Normalization) else (
        normalization.get("mean") if isinstance(normalization, dict) else None)
    return 3 if mean is not None and np.size(mean) == 3 else None


def _read(spec: str, options: ReadOptions, seed: int) -> tuple[str, str, RawData]:
    if spec == "digits" and options.text_column is None:
        return "digits", "digits", read_digits(seed)
    path = Path(spec)
    if not path.exists():
        raise EdgekdError(f"data path not found: {spec}", f"pass 'digits' or a path to {known_layouts()}")
    if options.text_column is not None:
        return path.stem if path.is_file() else path.name, "text", text_table.read(path, options)
    fmt = find_format(path)
    if fmt is None:
        raise EdgekdError(f"data path {path} is in none of the known layouts", f"use {known_layouts()}")
    name = archive.stem(path) if fmt.name == "archive" else path.stem if path.is_file() else path.name
    return name, fmt.name, fmt.read(path, options)


def resize_batch(x: np.ndarray, size: ImageSize, limits: DataLimits) -> np.ndarray:
    """N,C,H,W images resized and cropped one by one (``preprocess.resize_and_crop``)."""
    if x.ndim != 4:
        raise EdgekdError("image_size applies to images; this data is flat (N x F)", "drop image_size")
    shape = (len(x), x.shape[1], size.height, size.width)
    out_dtype = np.uint8 if x.dtype == np.uint8 else np.float32
    limits.check_bytes(math.prod(shape) * np.dtype(out_dtype).itemsize, f"resizing images to {shape}",
                       "request a smaller image_size")
    out = np.empty(shape, out_dtype)
    for i in range(len(x)):
        out[i] = resize_and_crop(x[i].transpose(1, 2, 0), size.size, size.crop_fraction).transpose(2, 0, 1)
    return out


def _labels_and_test_split(raw: RawData, spec: str, limits: DataLimits, test_fraction: float,
                           seed: int) -> tuple[Labels, dict | None, np.ndarray | None]:
    """Encoded labels (and a given validation split's); a single table (``x_test is None``) is split here,
    stratified and seeded."""
    if raw.x_test is not None:
        y_rest = raw.y_test if raw.y_val is None else np.concatenate([np.asarray(raw.y_test), np.asarray(raw.y_val)])
        labels = encode_labels(raw.y_train, y_rest, raw.class_names, limits, f"data '{spec}'")
        y_val = _split_off_given_val(raw, labels)
        _check_counts(raw, labels, spec)
        return labels, None, y_val
    check_fraction(test_fraction, "test_fraction")
    everything = encode_labels(raw.y_train, raw.y_train[:0], raw.class_names, limits, f"data '{spec}'")
    train_idx, test_idx = stratified_split(everything.y_train, test_fraction, seed)
    raw.x_train, raw.x_test = raw.x_train[train_idx], raw.x_train[test_idx]
    labels = Labels(everything.y_train[train_idx], everything.y_train[test_idx], everything.classes,
                    everything.encoding)
    _check_counts(raw, labels, spec)
    return labels, {"from": "single table", "fraction": test_fraction, "stratified": True,
                    "seed": seed + SEED_OFFSET}, None


def _check_counts(raw: RawData, labels: Labels, spec: str) -> None:
    for split, x, y in (("train", raw.x_train, labels.y_train), ("test", raw.x_test, labels.y_test)):
        if len(y) == 0:
            raise EdgekdError(f"data '{spec}' has an empty {split} split", f"add {split} samples")
        if len(x) != len(y):
            raise EdgekdError(f"data '{spec}': {len(x)} {split} samples but {len(y)} labels",
                              "give one label per sample")
    if len(np.unique(labels.y_train)) < 2:
        raise EdgekdError(f"data '{spec}': the training split holds a single class", "give at least two classes")


def _check_sample_shapes(raw: RawData, spec: str) -> None:
    """Every split's samples have the training split's shape, whichever reader made them (an IDX test file of
    2x4 images beside 4x4 training images would otherwise load, and fail deep in training or export)."""
    for split, x in (("test", raw.x_test), ("validation", raw.x_val)):
        if x is not None and tuple(x.shape[1:]) != tuple(raw.x_train.shape[1:]):
            raise EdgekdError(f"data '{spec}': {split} samples have shape {tuple(x.shape[1:])}, training samples "
                              f"{tuple(raw.x_train.shape[1:])}", "give every split the same sample shape")


def _check_finite(raw: RawData, spec: str) -> None:
    for x in (raw.x_train, raw.x_test, *([] if raw.x_val is None else [raw.x_val])):
        if x.dtype.kind == "f" and not np.isfinite(x).all():
            raise EdgekdError(f"data '{spec}' contains NaN or infinite values", "clean the data before building")


def _validation_split(n_train: int, n_classes: int, seed: int, val_fraction: float,
                      max_train: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (train, val) indices into the training split, after capping it at ``max_train``."""
    check_fraction(val_fraction, "val_fraction", low_inclusive=True)
    order = _capped_train(n_train, seed, max_train)
    n_val = max(n_classes, int(round(len(order) * val_fraction)))
    if n_val >= len(order):
        raise EdgekdError(f"{len(order)} training samples leave none to train on after {n_val} for validation",
                          "use more samples or a smaller val_fraction")
    return order[n_val:], order[:n_val]


def _train_and_val(raw: RawData, labels: Labels, y_val_given: np.ndarray | None, seed: int, val_fraction: float,
                   max_train: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Training indices, and the validation split (raw samples, ids): the data's own, else held out of train."""
    if y_val_given is not None:
        return _capped_train(len(labels.y_train), seed, max_train), raw.x_val, y_val_given
    train_idx, val_idx = _validation_split(len(labels.y_train), len(labels.classes), seed, val_fraction, max_train)
    return train_idx, raw.x_train[val_idx], labels.y_train[val_idx]


def _capped_train(n_train: int, seed: int, max_train: int | None) -> np.ndarray:
    """The training split in a seeded order, cut to ``max_train``: validation, when held out, comes off its front."""
    if max_train is not None and max_train < 1:
        raise EdgekdError(f"max_train {max_train} must be >= 1", "pass a positive number of samples")
    order = np.random.default_rng(seed).permutation(n_train)
    return order[:max_train] if max_train is not None and max_train < len(order) else order


def _split_off_given_val(raw: RawData, labels: Labels) -> np.ndarray | None:
    """A validation split the data came with (encoded with test, so one class list): its ids, taken off y_test."""
    if raw.x_val is None:
        return None
    n_test = len(raw.y_test)
    y_val = labels.y_test[n_test:]
    labels.y_test = labels.y_test[:n_test]
    if len(y_val) == 0 or len(y_val) != len(raw.x_val):
        raise EdgekdError(f"the validation split has {len(raw.x_val)} samples and {len(y_val)} labels",
                          "give it one label per sample, and at least one sample")
    return y_val


def _splits_from(given: dict[str, str], val_fraction: float, seed: int) -> dict[str, str]:
    """The reader's account of its splits, plus validation when it is held out of train here."""
    out = dict(given)
    if "val" not in out:
        out["val"] = f"{out['train']}: a seeded {val_fraction:.0%} (seed {seed}, not stratified)"
        out["train"] = f"{out['train']}: the rest"
    return {role: out[role] for role in ("train", "val", "test")}
