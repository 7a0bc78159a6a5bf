"""ImageFolder directories: ``train/<class>/*.jpg`` and ``test/<class>/*.jpg``, decoded to uint8 N,C,H,W.

Bounded before decoding: the file count is capped while listing; every image's size is read from its header
(``PIL.Image.open`` is lazy) and checked against a pixel cap; Pillow's decompression-bomb warnings are errors; each
file is opened only by the decoder its suffix names (a ``.png`` that is really an EPS never reaches Ghostscript).
A file that cannot be decoded is named in the error.

Decoding 60,000 JPEGs takes a while, so the decoded arrays are cached (uint8 ``.npy``, memory-mapped on reuse)
under ``$EDGEKD_CACHE/datasets/decoded/<key>/``, the key hashing the files' names, sizes and mtimes and the
requested size: a changed, added or removed file, or another size, is another entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from edgekd.data.base import ImageSize, RawData, ReadOptions, reason
from edgekd.data.labels import check_class_names
from edgekd.data.limits import DataLimits
from edgekd.data.preprocess import resize_and_crop
from edgekd.errors import EdgekdError

SUFFIX_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".gif": "GIF", ".webp": "WEBP"}
GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
SPLITS = ("train", "test")
CACHE_VERSION = 2  # 2: + the first test photos at their source size
DECODE_CHUNK = 256
FIX = "remove or replace the file"


def detect(path: Path) -> bool:
    return path.is_dir() and (path / "train").is_dir() and (path / "test").is_dir()


@dataclass(frozen=True)
class ImageFile:
    path: str  # a str, not a Path: listing 60,000 files should not cost seconds of pathlib
    label: int
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class Listing:
    classes: list[str]
    files: dict[str, list[ImageFile]]  # split -> files in class, then name order


def _visible(entries: Iterator[os.DirEntry]) -> list[os.DirEntry]:
    return sorted((e for e in entries if not e.name.startswith(".")), key=lambda e: e.name)


def list_images(root: Path, limits: DataLimits) -> Listing:
    """Classes (train's folders) and image files per split, capped at ``limits.max_files`` while listing."""
    with os.scandir(root / "train") as entries:
        classes = [e.name for e in _visible(entries) if e.is_dir()]
    if not classes:
        raise EdgekdError(f"ImageFolder dir {root}/train has no class folders", "add train/<class>/*.jpg")
    limits.check_classes(len(classes), f"ImageFolder dir {root}")
    check_class_names(classes, f"ImageFolder dir {root}")
    with os.scandir(root / "test") as entries:
        extra = [e.name for e in _visible(entries) if e.is_dir() and e.name not in classes]
    if extra:
        raise EdgekdError(f"ImageFolder dir {root}/test has classes that train lacks: {extra[:5]}",
                          "give train and test the same class folders")
    files: dict[str, list[ImageFile]] = {}
    count = 0
    for split in SPLITS:
        files[split] = []
        for label, name in enumerate(classes):
            folder = root / split / name
            if not folder.is_dir():
                continue
            with os.scandir(folder) as entries:
                for entry in _visible(entries):
                    if os.path.splitext(entry.name)[1].lower() not in SUFFIX_FORMATS or not entry.is_file():
                        continue
                    count += 1
                    limits.check_files(count, f"ImageFolder dir {root}")
                    info = entry.stat()
                    files[split].append(ImageFile(entry.path, label, info.st_size, info.st_mtime_ns))
        if not files[split]:
            raise EdgekdError(f"ImageFolder dir {root}/{split} has no images",
                              f"add {split}/<class>/*.jpg (or .png, .bmp, .gif, .webp)")
    return Listing(classes, files)


@contextmanager
def pillow_limits(max_pixels: int) -> Iterator[None]:
    """Pillow's bomb threshold set to our cap, and its DecompressionBombWarning raised as an error."""
    from PIL import Image

    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = old


def _open(file: ImageFile, max_pixels: int):
    """The image, opened lazily by the one decoder its suffix names, its header size checked against the cap."""
    from PIL import Image

    try:
        img = Image.open(file.path, formats=[SUFFIX_FORMATS[os.path.splitext(file.path)[1].lower()]])
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        img = None
    except Exception as exc:  # any decoder failure on a user's file is that file's problem, named
        raise EdgekdError(f"cannot read image {file.path}: {reason(exc)}", FIX) from None
    width, height = img.size if img is not None else (0, 0)
    if img is None or width * height > max_pixels:
        if img is not None:
            img.close()
        raise EdgekdError(f"image {file.path} is over the pixel cap of {max_pixels:,} (a decompression bomb?)",
                          "shrink the image, or raise EDGEKD_DATA_MAX_PIXELS if it is genuine")
    return img


def scan_headers(listing: Listing, options: ReadOptions) -> tuple[str, tuple[int, int] | None]:
    """From headers only: the colour mode for all (``"L"`` if every image is grey, else ``"RGB"``) and, without
    a requested size, the one size all images share (refusing a mix)."""
    modes, first = set(), None
    for file in (f for split in SPLITS for f in listing.files[split]):
        with _open(file, options.limits.max_pixels) as img:
            modes.add(img.mode)
            if options.image_size is None:
                first = first or (file.path, img.size)
                if img.size != first[1]:
                    raise EdgekdError(
                        f"image {file.path} is {img.size[0]}x{img.size[1]}, {first[0]} is {first[1][0]}x{first[1][1]}",
                        "resize all images to one size, or request one (image_size=...)")
    mode = "L" if modes <= GRAY_MODES and options.channels != 3 else "RGB"
    return mode, None if first is None else (first[1][1], first[1][0])


def decode(file: ImageFile, mode: str, image_size: ImageSize | None, max_pixels: int) -> np.ndarray:
    """One image as uint8 C,H,W in ``mode``, resized and cropped when a size is requested."""
    try:
        with _open(file, max_pixels) as img:
            pixels = np.asarray(img.convert(mode), dtype=np.uint8)
    except EdgekdError:
        raise
    except Exception as exc:  # truncated or corrupt data behind a valid header
        raise EdgekdError(f"cannot decode image {file.path}: {reason(exc)}", FIX) from None
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if image_size is not None:
        pixels = resize_and_crop(pixels, image_size.size, image_size.crop_fraction)
    return pixels.transpose(2, 0, 1)


def decode_into(out: np.ndarray, files: list[ImageFile], mode: str, options: ReadOptions) -> None:
    """Decode ``files`` into the rows of ``out`` on a few threads (Pillow and numpy release the GIL)."""

    def work(start: int) -> None:
        for i in range(start, min(start + DECODE_CHUNK, len(files))):
            image = decode(files[i], mode, options.image_size, options.limits.max_pixels)
            if image.shape != out.shape[1:]:
                raise EdgekdError(f"image {files[i].path} decodes to {image.shape}, others to {out.shape[1:]}", FIX)
            out[i] = image

    pool = ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1))
    try:
        for future in [pool.submit(work, s) for s in range(0, len(files), DECODE_CHUNK)]:
            future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


class DecodedMeta(BaseModel):
    """``meta.json`` of a decoded-cache entry, checked on reuse."""

    model_config = ConfigDict(extra="forbid")
    version: int
    key: str
    shapes: dict[str, list[int]]


def cache_key(listing: Listing, options: ReadOptions) -> str:
    digest = hashlib.sha256(json.dumps([CACHE_VERSION, options.image_size and options.image_size.describe(),
                                        options.channels, listing.classes]).encode())
    for split in SPLITS:
        for f in listing.files[split]:
            digest.update(f"{split}\0{os.path.basename(f.path)}\0{f.label}\0{f.size}\0{f.mtime_ns}\n".encode())
    return digest.hexdigest()[:32]


def _load_cached(entry: Path, key: str, listing: Listing) -> dict[str, np.ndarray] | None:
    """The cached arrays (memory-mapped), or None when the entry is absent or does not match."""
    try:
        meta = DecodedMeta.model_validate_json((entry / "meta.json").read_text(encoding="utf-8"))
        arrays = {s: np.load(entry / f"{s}.npy", mmap_mode="r", allow_pickle=False) for s in SPLITS}
        for name in ("source_data", "source_shapes"):
            if (entry / f"{name}.npy").is_file():
                arrays[name] = np.load(entry / f"{name}.npy", allow_pickle=False)
    except (OSError, ValueError, ValidationError):
        return None
    for split in SPLITS:
        shape = tuple(meta.shapes.get(split, ()))
        arr = arrays[split]
        if meta.key != key or arr.dtype != np.uint8 or arr.shape != shape or len(arr) != len(listing.files[split]):
            return None
    return arrays


def _decode_all(listing: Listing, options: ReadOptions, where: Path | None) -> dict[str, np.ndarray]:
    """Scan headers, then decode both splits: into ``.npy`` files under ``where``, or into memory."""
    with pillow_limits(options.limits.max_pixels):
        mode, size = scan_headers(listing, options)
        height, width = options.image_size.size if options.image_size else size
        channels = 1 if mode == "L" else 3
        arrays = {}
        for split in SPLITS:
            shape = (len(listing.files[split]), channels, height, width)
            options.limits.check_bytes(int(np.prod(shape)), f"decoding the {split} images {shape}",
                                       "request a smaller image_size or use fewer images")
            arrays[split] = (np.lib.format.open_memmap(where / f"{split}.npy", "w+", np.uint8, shape)
                             if where else np.empty(shape, np.uint8))
            decode_into(arrays[split], listing.files[split], mode, options)
        if options.image_size is not None:
            arrays.update(source_samples(listing.files["test"], mode, options))
            if where:
                for key in ("source_data", "source_shapes"):
                    np.save(where / f"{key}.npy", arrays[key], allow_pickle=False)
    return arrays


SOURCE_SAMPLES_BYTES = 64 << 20  # source-size test photos kept for the device's own pre-processing


def source_samples(files: list[ImageFile], mode: str, options: ReadOptions) -> dict[str, np.ndarray]:
    """The first test photos decoded at their own size (no resize), as many as fit in SOURCE_SAMPLES_BYTES, as one
    flat buffer and each photo's C,H,W (they may differ): what the device's own pre-processing starts from."""
    out, total = [], 0
    for file in files:
        image = decode(file, mode, None, options.limits.max_pixels)
        total += image.nbytes
        if total > SOURCE_SAMPLES_BYTES:
            break
        out.append(image)
    return {"source_data": np.concatenate([i.ravel() for i in out]) if out else np.zeros(0, np.uint8),
            "source_shapes": np.asarray([i.shape for i in out], np.int64).reshape(len(out), 3)}


def split_sources(arrays: dict[str, np.ndarray]) -> list[np.ndarray] | None:
    if "source_shapes" not in arrays:
        return None
    ends = np.cumsum(np.prod(arrays["source_shapes"], axis=1))
    return [np.asarray(arrays["source_data"][end - int(np.prod(shape)):end]).reshape(tuple(shape))
            for end, shape in zip(ends, arrays["source_shapes"], strict=True)]


def read(root: Path, options: ReadOptions) -> RawData:
    listing = list_images(root, options.limits)
    labels = {s: np.asarray([f.label for f in listing.files[s]], np.int64) for s in SPLITS}
    if options.cache is None:
        arrays = _decode_all(listing, options, None)
    else:
        key = cache_key(listing, options)
        entry = options.cache.entry("decoded", key)
        arrays = _load_cached(entry, key, listing)
        if arrays is None:
            shutil.rmtree(entry, ignore_errors=True)  # a stale or damaged entry
            with options.cache.staging(entry) as work:
                decoded = _decode_all(listing, options, work)
                shapes = {s: list(decoded[s].shape) for s in SPLITS}
                for s in SPLITS:
                    decoded[s].flush()
                del decoded
                meta = DecodedMeta(version=CACHE_VERSION, key=key, shapes=shapes)
                (work / "meta.json").write_text(meta.model_dump_json(), encoding="utf-8")
            arrays = _load_cached(entry, key, listing)
            if arrays is None:
                raise EdgekdError(f"the decoded-image cache entry {entry} could not be read back",
                                  "delete it and build again, or pass use_cache=False")
    meta = {"image_files": {s: len(listing.files[s]) for s in SPLITS}}
    sources = split_sources(arrays) if options.image_size is not None else None
    return RawData(arrays["train"], labels["train"], arrays["test"], labels["test"], 255.0,
                   class_names=listing.classes, resized=options.image_size is not None, meta=meta,
                   x_test_source=sources)
