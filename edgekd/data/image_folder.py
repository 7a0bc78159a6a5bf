"""ImageFolder directories, as users keep them, decoded to uint8 N,C,H,W. Four layouts (``find_layout``):

- ``ROOT/<class>/*``: one pool of class folders (torchvision's ``ImageFolder``, Keras'
  ``image_dataset_from_directory``), split here into train/val/test, stratified and seeded (``splits.py``);
- ``train/ + val/``: val/ is scored as the evaluation split and nothing is chosen on it (the loader holds
  validation out of train/), since no separate test split exists;
- ``train/ + val/ + test/``: each folder is its split;
- ``train/ + test/``: the loader holds validation out of train/.
Class folder names are the labels. Files that are not images are skipped and counted (``skipped_not_images``);
an image that cannot be read is named in the error.

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
from PIL import Image
from pydantic import BaseModel, ConfigDict, ValidationError

from edgekd.data.base import ImageSize, RawData, ReadOptions, reason
from edgekd.data.labels import check_class_names
from edgekd.data.limits import DataLimits
from edgekd.data.preprocess import resize_and_crop
from edgekd.data.splits import check_fraction, describe_three_way, three_way_split
from edgekd.errors import EdgekdError

SUFFIX_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".gif": "GIF", ".webp": "WEBP"}
GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
SPLITS = ("train", "val", "test")  # roles, in cache-key order; "test" is the evaluation split, whatever its folder
VAL_FOLDERS = ("val", "valid", "validation")  # PyTorch's tutorial, Roboflow and Keras spell it these ways
CLASS_FOLDERS = "<class>/*"  # the layout with no split folders: edgekd cuts train/val/test itself
SKIPPED_EXAMPLES = 5
CACHE_VERSION = 2  # 2: + the first test photos at their source size
DECODE_CHUNK = 256
FIX = "remove or replace the file"
IMAGE_SUFFIXES = ", ".join(SUFFIX_FORMATS)


def _is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in SUFFIX_FORMATS


def _holds_images(folder: str) -> bool:
    try:
        with os.scandir(folder) as entries:
            return any(_is_image_name(e.name) and e.is_file() for e in _visible(entries))
    except OSError:
        return False


def detect(path: Path) -> bool:
    """Split folders (train/, val/, test/), or class folders holding images directly under ``path``."""
    if not path.is_dir():
        return False
    if any((path / name).is_dir() for name in ("train", "test", *VAL_FOLDERS)):
        return True
    with os.scandir(path) as entries:
        return any(e.is_dir() and _holds_images(e.path) for e in _visible(entries))


@dataclass(frozen=True)
class ImageFile:
    path: str  # a str, not a Path: listing 60,000 files should not cost seconds of pathlib
    label: int
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class Layout:
    """How a user keeps photos: ``name`` for the report, ``folders`` role -> split folder (none: class folders)."""

    name: str  # "<class>/*", "train/ + test/", "train/ + val/", "train/ + val/ + test/"
    folders: dict[str, str]


@dataclass(frozen=True)
class Listing:
    classes: list[str]
    files: dict[str, list[ImageFile]]  # role (SPLITS order) -> files in class, then name order
    layout: Layout
    skipped: int  # entries that are not images (other files, sub-folders)
    skipped_examples: tuple[str, ...]  # the first few, relative to the root (folders end in "/")
    split: dict | None = None  # how class folders were split (splits.describe_three_way)


def _visible(entries: Iterator[os.DirEntry]) -> list[os.DirEntry]:
    return sorted((e for e in entries if not e.name.startswith(".")), key=lambda e: e.name)


def find_layout(root: Path) -> Layout:
    """Which of the four layouts ``root`` is in; a half layout (test/ without train/) is refused, named."""
    vals = [name for name in VAL_FOLDERS if (root / name).is_dir()]
    if len(vals) > 1:
        raise EdgekdError(f"ImageFolder dir {root} has several validation folders: {vals}", "keep one, named val/")
    has_test = (root / "test").is_dir()
    if not (root / "train").is_dir():
        if vals or has_test:
            found = "/ and ".join([*vals, *(["test"] if has_test else [])])
            raise EdgekdError(f"ImageFolder dir {root} has {found}/ but no train/",
                              "add train/<class>/*.jpg, or put the class folders directly in the root "
                              "(edgekd then splits them)")
        return Layout(CLASS_FOLDERS, {})
    if not vals and not has_test:
        raise EdgekdError(f"ImageFolder dir {root} has train/ but neither val/ nor test/",
                          "add val/<class>/*.jpg (or test/), or move the class folders up into the root "
                          "(edgekd then splits them)")
    folders = {"train": "train", **({"val": vals[0]} if vals and has_test else {}),
               "test": "test" if has_test else vals[0]}
    return Layout(" + ".join(f"{n}/" for n in ["train", *vals, *(["test"] if has_test else [])]), folders)


class _Lister:
    """Walks one layout's folders: image files per class, the file cap checked while listing, the rest counted."""

    def __init__(self, root: Path, limits: DataLimits) -> None:
        self.root, self.limits, self.count, self.skipped, self.examples = root, limits, 0, 0, []

    def _skip(self, entry: os.DirEntry) -> None:
        self.skipped += 1
        if len(self.examples) < SKIPPED_EXAMPLES:
            name = os.path.relpath(entry.path, self.root) + ("/" if entry.is_dir() else "")
            self.examples.append(name if name.isprintable() else ascii(name))  # they reach a terminal and report.md

    def classes(self, folder: Path, where: str) -> list[str]:
        """The class folders under ``folder``; any loose file beside them is skipped and counted."""
        with os.scandir(folder) as entries:
            visible = _visible(entries)
        classes = [e.name for e in visible if e.is_dir()]
        for entry in (e for e in visible if not e.is_dir()):
            self._skip(entry)
        if not classes:
            raise EdgekdError(f"ImageFolder dir {folder} has no class folders", f"add {where}<class>/*.jpg")
        return classes

    def images(self, folder: Path, label: int) -> list[ImageFile]:
        """The image files of one class folder, in name order; other files and sub-folders skipped, counted."""
        out = []
        with os.scandir(folder) as entries:
            for entry in _visible(entries):
                if not (_is_image_name(entry.name) and entry.is_file()):
                    self._skip(entry)
                    continue
                self.count += 1
                self.limits.check_files(self.count, f"ImageFolder dir {self.root}")
                info = entry.stat()
                out.append(ImageFile(entry.path, label, info.st_size, info.st_mtime_ns))
        return out


def list_images(root: Path, options: ReadOptions) -> Listing:
    """Classes (train's folders, or the root's) and image files per split, capped at ``max_files`` while listing;
    class folders at the root are split here (stratified, seeded), the same way on every call."""
    layout, lister = find_layout(root), _Lister(root, options.limits)
    train = root / layout.folders.get("train", "")
    classes = lister.classes(train, f"{layout.folders['train']}/" if layout.folders else "")
    options.limits.check_classes(len(classes), f"ImageFolder dir {root}")
    check_class_names(classes, f"ImageFolder dir {root}")
    if not layout.folders:
        found = [f for label, name in enumerate(classes) for f in lister.images(root / name, label)]
        files, split = _split_class_folders(root, found, classes, options)
        return Listing(classes, files, layout, lister.skipped, tuple(lister.examples), split)
    files = {}
    for role in (r for r in SPLITS if r in layout.folders):
        folder = layout.folders[role]
        if role != "train":
            extra = [n for n in lister.classes(root / folder, f"{folder}/") if n not in classes]
            if extra:
                raise EdgekdError(f"ImageFolder dir {root}/{folder} has classes that train lacks: {extra[:5]}",
                                  f"give train and {folder} the same class folders")
        files[role] = [f for label, name in enumerate(classes) if (root / folder / name).is_dir()
                       for f in lister.images(root / folder / name, label)]
        if not files[role]:
            raise EdgekdError(f"ImageFolder dir {root}/{folder} has no images",
                              f"add {folder}/<class>/*.jpg (or {IMAGE_SUFFIXES})")
    return Listing(classes, files, layout, lister.skipped, tuple(lister.examples))


def _split_class_folders(root: Path, found: list[ImageFile], classes: list[str],
                         options: ReadOptions) -> tuple[dict[str, list[ImageFile]], dict]:
    """Train/val/test lists cut from one pool of class folders by ``splits.three_way_split``."""
    test_fraction = check_fraction(options.test_fraction, "test_fraction")
    val_fraction = check_fraction(options.val_fraction, "val_fraction", low_inclusive=True)
    labels = np.asarray([f.label for f in found], np.int64)
    counts = np.bincount(labels, minlength=len(classes))
    empty_classes = [name for name, n in zip(classes, counts, strict=True) if not n]
    if empty_classes:
        raise EdgekdError(f"ImageFolder dir {root}: class folders without images: {empty_classes[:5]}",
                          f"add images ({IMAGE_SUFFIXES}) to them, or remove them: each folder is a class")
    indices = three_way_split(labels, test_fraction, val_fraction, options.seed)
    empty = [role for role in SPLITS if not len(indices[role])]
    if empty:
        raise EdgekdError(f"ImageFolder dir {root}: {len(found)} images in {len(classes)} classes are too few for a "
                          f"train/validation/test split (no {' or '.join(empty)} images)",
                          "add images (3 or more per class), or split them yourself into train/ and val/")
    files = {role: [found[i] for i in indices[role]] for role in SPLITS}
    return files, describe_three_way(test_fraction, val_fraction, options.seed)


@contextmanager
def pillow_limits(max_pixels: int) -> Iterator[None]:
    """Pillow's bomb threshold set to our cap, and its DecompressionBombWarning raised as an error."""
    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = old


class Unreadable(EdgekdError):
    """An image file that cannot be read or decoded: collected while scanning, so one error names them all."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(problem, FIX)
        self.path = path


def unreadable_error(found: list[Unreadable]) -> EdgekdError:
    """One error for every unreadable image: the first one's message, then the other files by name."""
    if len(found) == 1:
        return found[0]
    found = sorted(found, key=lambda e: e.path)
    others = ", ".join(e.path for e in found[1:SKIPPED_EXAMPLES])
    more = f" and {len(found) - SKIPPED_EXAMPLES} more" if len(found) > SKIPPED_EXAMPLES else ""
    return EdgekdError(f"{len(found)} images cannot be read: {found[0].problem}; also {others}{more}",
                       "remove or replace these files")


def _open(file: ImageFile, max_pixels: int):
    """The image, opened lazily by the one decoder its suffix names, its header size checked against the cap."""
    try:
        img = Image.open(file.path, formats=[SUFFIX_FORMATS[os.path.splitext(file.path)[1].lower()]])
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        img = None
    except Exception as exc:  # any decoder failure on a user's file is that file's problem, named
        raise Unreadable(file.path, f"cannot read image {file.path}: {reason(exc)}") from None
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
    modes, first, unreadable = set(), None, []
    for file in (f for files in listing.files.values() for f in files):
        try:
            img = _open(file, options.limits.max_pixels)
        except Unreadable as exc:
            unreadable.append(exc)
            continue
        with img:
            modes.add(img.mode)
            if options.image_size is None:
                first = first or (file.path, img.size)
                if img.size != first[1]:
                    raise EdgekdError(
                        f"image {file.path} is {img.size[0]}x{img.size[1]}, {first[0]} is {first[1][0]}x{first[1][1]}",
                        "resize all images to one size, or request one (--image-size N; in Python image_size=N)")
    if unreadable:
        raise unreadable_error(unreadable)
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
        raise Unreadable(file.path, f"cannot decode image {file.path}: {reason(exc)}") from None
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if image_size is not None:
        pixels = resize_and_crop(pixels, image_size.size, image_size.crop_fraction)
    return pixels.transpose(2, 0, 1)


def decode_into(out: np.ndarray, files: list[ImageFile], mode: str, options: ReadOptions) -> None:
    """Decode ``files`` into the rows of ``out`` on a few threads (Pillow and numpy release the GIL); every file
    that fails to decode is named in one error at the end."""
    unreadable: list[Unreadable] = []

    def work(start: int) -> None:
        for i in range(start, min(start + DECODE_CHUNK, len(files))):
            try:
                image = decode(files[i], mode, options.image_size, options.limits.max_pixels)
            except Unreadable as exc:
                unreadable.append(exc)
                continue
            if image.shape != out.shape[1:]:
                raise EdgekdError(f"image {files[i].path} decodes to {image.shape}, others to {out.shape[1:]}", FIX)
            out[i] = image

    pool = ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1))
    try:
        for future in [pool.submit(work, s) for s in range(0, len(files), DECODE_CHUNK)]:
            future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    if unreadable:
        raise unreadable_error(unreadable)


class DecodedMeta(BaseModel):
    """``meta.json`` of a decoded-cache entry, checked on reuse."""

    model_config = ConfigDict(extra="forbid")
    version: int
    key: str
    shapes: dict[str, list[int]]


def cache_key(listing: Listing, options: ReadOptions) -> str:
    digest = hashlib.sha256(json.dumps([CACHE_VERSION, options.image_size and options.image_size.describe(),
                                        options.channels, listing.classes]).encode())
    for split, files in listing.files.items():
        for f in files:
            digest.update(f"{split}\0{os.path.basename(f.path)}\0{f.label}\0{f.size}\0{f.mtime_ns}\n".encode())
    return digest.hexdigest()[:32]


def _load_cached(entry: Path, key: str, listing: Listing) -> dict[str, np.ndarray] | None:
    """The cached arrays (memory-mapped), or None when the entry is absent or does not match."""
    try:
        meta = DecodedMeta.model_validate_json((entry / "meta.json").read_text(encoding="utf-8"))
        arrays = {s: np.load(entry / f"{s}.npy", mmap_mode="r", allow_pickle=False) for s in listing.files}
        for name in ("source_data", "source_shapes"):
            if (entry / f"{name}.npy").is_file():
                arrays[name] = np.load(entry / f"{name}.npy", allow_pickle=False)
    except (OSError, ValueError, ValidationError):
        return None
    for split in listing.files:
        shape = tuple(meta.shapes.get(split, ()))
        arr = arrays[split]
        if meta.key != key or arr.dtype != np.uint8 or arr.shape != shape or len(arr) != len(listing.files[split]):
            return None
    return arrays


def _decode_all(listing: Listing, options: ReadOptions, where: Path | None) -> dict[str, np.ndarray]:
    """Scan headers, then decode every split: into ``.npy`` files under ``where``, or into memory."""
    with pillow_limits(options.limits.max_pixels):
        mode, size = scan_headers(listing, options)
        height, width = options.image_size.size if options.image_size else size
        channels = 1 if mode == "L" else 3
        arrays = {}
        for split in listing.files:
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
    listing = list_images(root, options)
    labels = {s: np.asarray([f.label for f in files], np.int64) for s, files in listing.files.items()}
    arrays = _arrays(listing, options)
    sources = split_sources(arrays) if options.image_size is not None else None
    given_val = "val" in listing.files
    return RawData(arrays["train"], labels["train"], arrays["test"], labels["test"], 255.0,
                   class_names=listing.classes, resized=options.image_size is not None, meta=_describe(listing),
                   x_test_source=sources, x_val=arrays["val"] if given_val else None,
                   y_val=labels["val"] if given_val else None, splits_from=splits_from(listing))


def _arrays(listing: Listing, options: ReadOptions) -> dict[str, np.ndarray]:
    """Every split decoded: from the cache when an entry matches, else decoded (and cached unless it is off)."""
    if options.cache is None:
        return _decode_all(listing, options, None)
    key = cache_key(listing, options)
    entry = options.cache.entry("decoded", key)
    arrays = _load_cached(entry, key, listing)
    if arrays is None:
        shutil.rmtree(entry, ignore_errors=True)  # a stale or damaged entry
        with options.cache.staging(entry) as work:
            decoded = _decode_all(listing, options, work)
            shapes = {s: list(decoded[s].shape) for s in listing.files}
            for s in listing.files:
                decoded[s].flush()
            del decoded
            meta = DecodedMeta(version=CACHE_VERSION, key=key, shapes=shapes)
            (work / "meta.json").write_text(meta.model_dump_json(), encoding="utf-8")
        arrays = _load_cached(entry, key, listing)
        if arrays is None:
            raise EdgekdError(f"the decoded-image cache entry {entry} could not be read back",
                              "delete it and build again, or pass use_cache=False")
    return arrays


def splits_from(listing: Listing) -> dict[str, str]:
    """Where each split came from, in words: the folder, or the share of the class folders it was cut from."""
    if listing.split is not None:
        s = listing.split
        return {"train": f"{CLASS_FOLDERS}: the rest",
                "val": f"{CLASS_FOLDERS}: {s['val_fraction_of_rest']:.0%} of each class after the test share",
                "test": f"{CLASS_FOLDERS}: {s['test_fraction']:.0%} of each class"}
    return {role: f"{folder}/" for role, folder in listing.layout.folders.items()}


def _describe(listing: Listing) -> dict:
    """The reader's facts for describe(): counts per split, the layout, what was skipped, how it was split."""
    folder = {"layout": listing.layout.name, "skipped_not_images": listing.skipped,
              "skipped_examples": list(listing.skipped_examples)}
    if listing.split is not None:
        folder["split"] = listing.split
    names = listing.layout.folders  # counts under the user's folder names (val/ of train/ + val/ is not "test")
    meta = {"image_files": {names.get(s, s): len(files) for s, files in listing.files.items()}, "image_folder": folder}
    if listing.layout.folders.get("test", "test") != "test":
        meta["evaluation_split"] = listing.layout.folders["test"]  # train/ + val/: val/ is scored, nothing chosen
    return meta
