"""The dataset cache: extracted archives and decoded image arrays under ``$EDGEKD_CACHE/datasets/``.

Entries are directories that appear only when complete: each is built in a hidden staging directory beside its
final place and renamed into place in one step, so an interrupted or failed build leaves no half entry (and
removes its staging directory). The cache lives in a directory only the user can write: a cache another user can
write could hand a build forged arrays. ``cache_entry`` is the one way into every cache edgekd keeps (datasets,
teachers, latency timings, the ONNX int8 scheme memo): it checks the root, each folder down to the entry and the
entry itself before anything is read from it.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from edgekd.errors import EdgekdError

ENV_CACHE = "EDGEKD_CACHE"


def default_cache_root() -> Path:
    """``$EDGEKD_CACHE`` or ``~/.cache/edgekd`` (read at call time, so tests and users can redirect it)."""
    return Path(os.environ.get(ENV_CACHE) or Path.home() / ".cache" / "edgekd")


def private_dir(path: Path, what: str = "dataset cache") -> Path:
    """Create ``path`` (mode 0700) if needed and refuse one that another user owns or can write."""
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        info = path.stat()
    except OSError as exc:
        raise EdgekdError(f"cannot create the {what} {path}: {exc}",
                          f"set {ENV_CACHE} to a writable directory") from None
    _check_private(path, info, what)
    return path


def _check_private(path: Path, info: os.stat_result, what: str) -> None:
    """Refuse ``path`` unless this user owns it and neither group nor others can write it."""
    owner_ok = not hasattr(os, "getuid") or info.st_uid == os.getuid()
    if not owner_ok or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise EdgekdError(f"the {what} {path} can be written by other users",
                          f"chmod go-w {path} (or delete it), or set {ENV_CACHE} to a directory only you can write")


def cache_entry(root: Path, *parts: str, what: str = "edgekd cache") -> Path:
    """``root/parts...``, checked before anything reads it: the root and every folder down to the entry are created
    private (0700) if missing and refused when another user owns or can write them, and so is the entry if it
    exists. Every cache reader goes through here, so a planted entry in a shared folder is never used."""
    folder = private_dir(Path(root), what)
    for part in parts[:-1]:
        folder = private_dir(folder / part, what)
    entry = folder / parts[-1]
    try:
        info = entry.lstat()
    except FileNotFoundError:
        return entry
    except OSError as exc:
        raise EdgekdError(f"cannot read the {what} entry {entry}: {exc.strerror or exc}",
                          f"delete it, or set {ENV_CACHE} to another directory") from None
    if stat.S_ISLNK(info.st_mode):
        raise EdgekdError(f"the {what} entry {entry} is a symbolic link", "delete it: edgekd never writes links there")
    _check_private(entry, info, f"{what} entry")
    return entry


class DataCache:
    """``root/datasets``: ``<sha256 of an archive>/`` (extracted) and ``decoded/<key>/`` (uint8 arrays)."""

    def __init__(self, root: Path | None = None) -> None:
        self.base = Path(root) if root else default_cache_root()
        self.root = self.base / "datasets"

    def entry(self, *parts: str) -> Path:
        """The entry's path, checked (``cache_entry``) before the caller looks inside."""
        return cache_entry(self.base, "datasets", *parts, what="dataset cache")

    @contextmanager
    def staging(self, final: Path) -> Iterator[Path]:
        """Yield an empty private directory; on success it becomes ``final`` (unless another process won the race)."""
        private_dir(self.root)
        private_dir(final.parent)
        work = Path(tempfile.mkdtemp(prefix=f".{final.name[:16]}.staging-", dir=final.parent))
        try:
            yield work
            try:
                os.rename(work, final)
            except OSError as exc:
                if not final.is_dir():
                    raise EdgekdError(f"cannot write the dataset cache entry {final}: {exc}",
                                      f"check the permissions of {final.parent}, or set {ENV_CACHE}") from None
        finally:
            shutil.rmtree(work, ignore_errors=True)
