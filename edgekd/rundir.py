"""Run directories that never eat a user's files.

``edgekd build --out DIR`` replaces DIR at the end of a build. It may do so only when DIR does not exist, is empty,
or carries the edgekd run marker (``.edgekd-run.json``, written into every run at build start): a folder of the
user's own files is refused with exit 2 before any training. Everything else lives in one hidden sibling,
``.DIR.edgekd/``:

- the folder itself is locked (``fcntl.flock``) for the whole build, so two builds into the same DIR cannot
  interleave (the second exits 2 naming the lock);
- ``staging/``: the new run, written there and swapped in only when complete (removed on failure or SIGTERM);
- ``previous/``: the old run during the swap; a swap interrupted between its two renames is finished (or undone)
  by the next build, so a previous run is never lost;
- ``checkpoints/``: distillation checkpoints, so the same command resumes a killed build.

The folder is removed when it holds nothing (after a successful build, or a failure before any checkpoint).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from edgekd import __version__
from edgekd.errors import EdgekdError

MARKER = ".edgekd-run.json"
_PICK = "pick a new or empty directory for --out (or remove what is there yourself)"


class RunMarker(BaseModel):
    """The file that makes a directory an edgekd run, and so one a later build may replace."""

    model_config = ConfigDict(extra="forbid")
    edgekd_run: Literal[1] = 1
    edgekd_version: str
    target: str
    created: str


def home_of(out: Path) -> Path:
    """The hidden sibling holding the lock, the staging directory, the previous run and the checkpoints."""
    return out.parent / f".{out.name}.edgekd"


def resolve_out(out: str | os.PathLike[str] | None, target_name: str) -> Path:
    """``--out`` (default ``runs/<target>``) as an absolute path with a real name (never ``/`` or ``.``)."""
    path = Path(os.path.abspath(out if out is not None else Path("runs") / target_name))
    if not path.name or path.name in (".", ".."):
        raise EdgekdError(f"--out {out} has no directory name of its own", _PICK)
    return path


def read_marker(out: Path) -> RunMarker | None:
    """The run marker of ``out``, or None when it has none (or one that is not edgekd's)."""
    path = out / MARKER
    if path.is_symlink() or not path.is_file():
        return None
    try:
        return RunMarker.model_validate_json(path.read_bytes()[:4096])
    except (OSError, ValidationError):
        return None


def check_out(out: Path) -> None:
    """Refuse an ``--out`` that is not ours to replace: a file, a link, or a folder of someone's files."""
    if out.is_symlink():
        raise EdgekdError(f"--out {out} is a symbolic link; refusing to replace it", _PICK)
    if out.exists() and not out.is_dir():
        raise EdgekdError(f"--out {out} is a file, not a run directory; refusing to replace it", _PICK)
    if out.is_dir() and any(out.iterdir()) and read_marker(out) is None:
        names = sorted(p.name for p in out.iterdir())
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        legacy = (out / "report.json").is_file() and (out / "manifest.json").is_file()
        raise EdgekdError(f"--out {out} holds files that are not an edgekd run ({shown}; no {MARKER}); "
                          "refusing to replace it",
                          "a run from an edgekd without run markers? remove it yourself, or pick a new directory "
                          "for --out" if legacy else _PICK)
    home = home_of(out)
    if home.is_symlink() or (home.exists() and not home.is_dir()):
        raise EdgekdError(f"{home} (edgekd's working folder for --out {out}) is not a directory", _PICK)


@dataclass
class RunDir:
    """A claimed ``--out``: locked, recovered, with a fresh staging directory that already holds the marker."""

    out: Path

    @property
    def home(self) -> Path:
        return home_of(self.out)

    @property
    def staging(self) -> Path:
        return self.home / "staging"

    @property
    def previous(self) -> Path:
        return self.home / "previous"

    @property
    def checkpoints(self) -> Path:
        return self.home / "checkpoints"

    def recover(self) -> None:
        """Finish or undo a swap a killed build left half-done; drop a dead build's staging directory."""
        if self.previous.exists():
            if self.out.exists():
                shutil.rmtree(self.previous)  # the new run was swapped in: the old one only waited for removal
            else:
                os.replace(self.previous, self.out)  # killed between the renames: the old run comes back
        if self.staging.exists():
            shutil.rmtree(self.staging)

    def commit(self) -> None:
        """Swap the finished staging directory in; a crash at any point is recovered by ``recover``."""
        if self.out.exists():
            os.replace(self.out, self.previous)
        os.replace(self.staging, self.out)
        if self.previous.exists():
            shutil.rmtree(self.previous)
        shutil.rmtree(self.checkpoints, ignore_errors=True)  # the run is complete: nothing left to resume


def _lock(home: Path, out: Path) -> int:
    """An exclusive lock on the folder itself (no lock file to leave behind); refused at once when held."""
    import fcntl  # lazy: POSIX only

    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(home, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if os.stat(home).st_ino != os.fstat(fd).st_ino:  # removed by the build that just finished: ours is stale
            raise OSError("stale")
    except OSError:
        os.close(fd)
        raise EdgekdError(f"another edgekd build is writing --out {out} (lock on {home} is held)",
                          "wait for that build to finish, or pick another --out") from None
    return fd


def check_unlocked(out: Path) -> None:
    """Refuse at once (before data loading) when another build holds ``out``; ``claim`` takes the lock itself."""
    home = home_of(out)
    if home.is_dir():
        os.close(_lock(home, out))


@contextlib.contextmanager
def claim(out: Path, target: str) -> Iterator[RunDir]:
    """Lock ``out``, check it (again, under the lock), recover an interrupted swap and give a fresh staging dir.

    On any exit (error, Ctrl-C, SIGTERM raised as an exception) the staging directory is removed and the lock
    released; the checkpoints stay for a resume.
    """
    check_out(out)
    run = RunDir(out)
    fd = _lock(run.home, out)
    try:
        run.recover()
        check_out(out)  # a recovered previous run, or a folder created while we waited, is checked too
        run.staging.mkdir()
        marker = RunMarker(edgekd_version=__version__, target=target, created=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        (run.staging / MARKER).write_text(marker.model_dump_json(indent=2) + "\n", encoding="utf-8")
        yield run
    finally:
        if run.staging.exists():
            shutil.rmtree(run.staging, ignore_errors=True)
        with contextlib.suppress(OSError):
            run.home.rmdir()  # only when empty: checkpoints of a failed build stay for the resume
        os.close(fd)
