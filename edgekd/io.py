"""Atomic file writes and hashing: a crash never leaves a half-written artifact behind."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def atomic_write(path: str | os.PathLike[str], writer: Callable[[Path], None]) -> Path:
    """Call ``writer(tmp_path)`` and rename the result onto ``path`` only if it succeeded."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        writer(tmp_path)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()
    return path


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def dumps(obj: Any, indent: int | None = None) -> str:
    """JSON text of ``obj`` with numpy values and paths as plain JSON (what readers and the schemas see)."""
    return json.dumps(obj, indent=indent, sort_keys=False, default=_json_default)


def write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    return write_text(path, dumps(obj, indent=2) + "\n")


def read_json_object(path: str | os.PathLike[str], what: str, fix: str) -> dict[str, Any]:
    """Read a JSON object; a missing, unreadable or non-object file is one EdgekdError naming ``what``."""
    from edgekd.errors import EdgekdError

    path = Path(path)
    if not path.is_file():
        raise EdgekdError(f"{what} not found: {path}", fix)
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise EdgekdError(f"{what} {path} is not valid JSON ({exc})", fix) from None
    if not isinstance(value, dict):
        raise EdgekdError(f"{what} {path} is not a JSON object", fix)
    return value


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def replace_dir(staging: Path, final: Path) -> None:
    """Swap a finished staging directory into place so readers never see a mix of old and new."""
    backup = final.with_name(f".{final.name}.old")
    if backup.exists():
        shutil.rmtree(backup)
    if final.exists():
        os.replace(final, backup)
    os.replace(staging, final)
    if backup.exists():
        shutil.rmtree(backup)
