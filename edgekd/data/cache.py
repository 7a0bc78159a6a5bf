"""The dataset cache: extracted archives and decoded image arrays under ``$EDGEKD_CACHE/datasets/``.

Entries are directories that appear only when complete: each is built in a hidden staging directory beside its
final place and renamed into place in one step, so an interrupted or failed build leaves no half entry (and
removes its staging directory). The cache lives in a directory only the user can write: a cache another user can
write could hand a build forged arrays.
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
    owner_ok = not hasattr(os, "getuid") or info.st_uid == os.getuid()
    if not owner_ok or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise EdgekdError(f"the {what} {path} can be written by other users",
                          f"chmod 700 {path}, or set {ENV_CACHE} to a directory only you can write")
    return path


class DataCache:
    """``root/datasets``: ``<sha256 of an archive>/`` (extracted) and ``decoded/<key>/`` (uint8 arrays)."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = (Path(root) if root else default_cache_root()) / "datasets"

    def entry(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

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
