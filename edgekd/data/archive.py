"""Archives (``.tar.gz``, ``.tgz``, ``.tar``, ``.tar.bz2``, ``.tar.xz``, ``.zip``) of any other layout, unpacked safely.

Unpacked once into ``$EDGEKD_CACHE/datasets/<sha256 of the archive>/`` (built in a staging directory and renamed
into place only when complete), then read by the format found inside. edgekd writes every file itself:

- only regular files and directories; links, devices and FIFOs are refused (nothing is created from them);
- member names must stay inside the directory: no absolute paths, no ``..``, no repeated names;
- the file count and the unpacked bytes are capped (checked member by member while streaming, so a compressed
  bomb is refused once the declared sizes pass the cap, not after inflating it); files are written 0600.
"""

from __future__ import annotations

import lzma
import os
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import IO

from edgekd.data.base import DataFormat, RawData, ReadOptions, reason
from edgekd.data.limits import DataLimits, human_bytes
from edgekd.errors import EdgekdError
from edgekd.io import sha256_file

SUFFIXES = (".tar.gz", ".tgz", ".tar", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".zip")
COPY_CHUNK = 1 << 20
FIX = "re-create the archive from a plain folder of files (e.g. tar -czf data.tar.gz train test)"


def detect(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(SUFFIXES)


def stem(path: Path) -> str:
    """``cifar10-jpg.tar.gz`` -> ``cifar10-jpg``."""
    name = path.name
    for suffix in SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def safe_member_path(name: str, archive: Path) -> PurePosixPath | None:
    """The member's relative path, or None for the archive's root; refuses anything that leaves the directory."""
    if "\0" in name or "\\" in name or name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise EdgekdError(f"archive {archive}: member {name!r} has an absolute or non-portable path", FIX)
    parts = [p for p in PurePosixPath(name).parts if p not in ("", ".")]
    if ".." in parts:
        raise EdgekdError(f"archive {archive}: member {name!r} points outside the archive's folder", FIX)
    return PurePosixPath(*parts) if parts else None


class Extractor:
    """Writes members under ``dest``, keeping the running count and byte total under the caps."""

    def __init__(self, archive: Path, dest: Path, limits: DataLimits) -> None:
        self.archive, self.dest, self.limits = archive, dest, limits
        self.budget, self.budget_source = limits.extract_budget(dest)
        self.files = self.bytes = 0
        self.seen: set[PurePosixPath] = set()
        self.made: set[Path] = set()  # folders already created: 60,000 files need not stat their folder each

    def directory(self, name: str) -> None:
        relative = safe_member_path(name, self.archive)
        if relative is not None:
            (self.dest / relative).mkdir(parents=True, exist_ok=True, mode=0o700)

    def file(self, name: str, size: int, open_stream) -> None:
        """Check the member's declared size against the caps, then copy at most that many bytes."""
        relative = safe_member_path(name, self.archive)
        if relative is None or relative in self.seen:
            problem = "has no name" if relative is None else "repeats an earlier member"
            raise EdgekdError(f"archive {self.archive}: member {name!r} {problem}", FIX)
        self.seen.add(relative)
        self.files += 1
        self.bytes += size
        self.limits.check_files(self.files, f"archive {self.archive}")
        if self.bytes > self.budget:
            raise EdgekdError(f"archive {self.archive} unpacks to more than {human_bytes(self.budget)} "
                              f"({self.budget_source})", "use a smaller archive, or raise "
                              "EDGEKD_DATA_MAX_EXTRACT_BYTES if the disk has room")
        target = self.dest / relative
        if target.parent not in self.made:
            target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            self.made.add(target.parent)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
        with os.fdopen(fd, "wb") as out, open_stream() as stream:
            _copy(stream, out, size, name, self.archive)


def _copy(stream: IO[bytes], out: IO[bytes], size: int, name: str, archive: Path) -> None:
    left = size
    while left > 0:
        block = stream.read(min(COPY_CHUNK, left))
        if not block:
            raise EdgekdError(f"archive {archive}: member {name!r} is truncated", FIX)
        out.write(block)
        left -= len(block)


def _extract_tar(archive: Path, extractor: Extractor) -> None:
    with tarfile.open(archive, "r:*") as tar:
        for member in _tar_members(tar):
            if member.isdir():
                extractor.directory(member.name)
            elif member.isreg():
                extractor.file(member.name, member.size, lambda m=member: tar.extractfile(m))
            else:
                kind = "link" if member.issym() or member.islnk() else "device or FIFO"
                raise EdgekdError(f"archive {archive}: member {member.name!r} is a {kind}; only regular files "
                                  "and folders are unpacked", FIX)


def _tar_members(tar: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    """Members one at a time (``tar.next()``), so each is checked before the stream moves past it."""
    while (member := tar.next()) is not None:
        yield member


def _extract_zip(archive: Path, extractor: Extractor) -> None:
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            kind = (info.external_attr >> 16) & 0o170000  # Unix file type, when the zip records one
            if info.flag_bits & 0x1:
                raise EdgekdError(f"archive {archive}: member {info.filename!r} is encrypted", FIX)
            if kind and kind not in (0o100000, 0o040000):  # a link, device or FIFO
                raise EdgekdError(f"archive {archive}: member {info.filename!r} is not a regular file or folder", FIX)
            if info.is_dir():
                extractor.directory(info.filename)
            else:
                extractor.file(info.filename, info.file_size, lambda i=info: zf.open(i))


def extract(archive: Path, dest: Path, limits: DataLimits) -> None:
    """Unpack ``archive`` into the empty directory ``dest`` under the checks above."""
    extractor = Extractor(archive, dest, limits)
    try:
        if archive.name.lower().endswith(".zip"):
            _extract_zip(archive, extractor)
        else:
            _extract_tar(archive, extractor)
    except (tarfile.TarError, zipfile.BadZipFile, OSError, EOFError, zlib.error, lzma.LZMAError, ValueError,
            NotImplementedError, RuntimeError) as exc:
        raise EdgekdError(f"cannot unpack {archive}: {reason(exc)}", FIX) from None
    if extractor.files == 0:
        raise EdgekdError(f"archive {archive} holds no files", FIX)


def data_root(folder: Path) -> Path:
    """The folder itself, or its one visible entry (a wrapping folder, or a single data file)."""
    entries = [p for p in folder.iterdir() if not p.name.startswith(".") and p.name != "__MACOSX"]
    return entries[0] if len(entries) == 1 else folder


# The registry's lookup of the layout inside an archive (it lists the archive format itself, so it is passed in).
FindFormat = Callable[[Path], DataFormat | None]


def _read_inside(folder: Path, archive: Path, options: ReadOptions, find_format: FindFormat) -> RawData:
    root = data_root(folder)
    fmt = find_format(root)
    if fmt is None:
        raise EdgekdError(f"archive {archive} holds none of the known layouts",
                          "pack an ImageFolder (train/<class>/..., test/<class>/...), an IDX dir or one data file")
    raw = fmt.read(root, options)
    raw.meta["archive"] = {"format": fmt.name}
    return raw


def read(archive: Path, options: ReadOptions, find_format: FindFormat) -> RawData:
    """Unpack (once) and read the layout ``find_format`` recognises inside; the cache entry appears only after the
    contents were read successfully."""
    digest = sha256_file(archive)
    if options.cache is None:
        with tempfile.TemporaryDirectory(prefix="edgekd-data-") as tmp:
            extract(archive, Path(tmp), options.limits)
            raw = _read_inside(Path(tmp), archive, options, find_format)
    else:
        entry = options.cache.entry(digest)
        if entry.is_dir():
            raw = _read_inside(entry, archive, options, find_format)
        else:
            with options.cache.staging(entry) as work:
                extract(archive, work, options.limits)
                raw = _read_inside(work, archive, options, find_format)
    raw.meta["archive"]["sha256"] = digest
    return raw
