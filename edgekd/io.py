"""Atomic file writes and hashing: a crash never leaves a half-written artifact behind."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from edgekd.errors import EdgekdError


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


# Limits on a user's JSON and YAML: the parsers recurse per nesting level, so ten thousand levels is a
# RecursionError deep inside them; real reports and configs nest about ten levels and weigh a few MB at most.
MAX_DEPTH = 100
MAX_FILE_BYTES = 64 << 20
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


def json_depth(text: str) -> int:
    """How deep ``text``'s arrays and objects nest (brackets inside strings do not count), found without recursing."""
    brackets = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text)).encode("ascii")
    if not brackets:
        return 0
    steps = np.frombuffer(brackets, np.uint8)
    return int(np.cumsum(np.where((steps == ord("[")) | (steps == ord("{")), 1, -1)).max())


def loads_json(text: str | bytes, what: str, fix: str) -> Any:
    """Decode JSON a user handed over; too large, too deep or invalid text is one EdgekdError naming ``what``."""
    if len(text) > MAX_FILE_BYTES:
        raise EdgekdError(f"{what} is {len(text):,} bytes, more than the {MAX_FILE_BYTES:,} edgekd reads", fix)
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise EdgekdError(f"{what} is not UTF-8 text ({exc.reason} at byte {exc.start})", fix) from None
    depth = json_depth(text)
    if depth > MAX_DEPTH:
        raise EdgekdError(f"{what} nests {depth:,} levels deep, more than the {MAX_DEPTH} edgekd reads", fix)
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:  # ValueError: bad syntax, or an integer of over 4,300 digits
        raise EdgekdError(f"{what} is not valid JSON ({_first_line(exc)})", fix) from None


def read_file_capped(path: str | os.PathLike[str], what: str, fix: str, limit: int = MAX_FILE_BYTES) -> bytes:
    """A user's file, refused by its size before a byte is read (a path that is missing or a folder: named too)."""
    path = Path(path)
    if not path.is_file():
        raise EdgekdError(f"{what} not found: {path}" if not path.exists() else f"{what} {path} is not a file", fix)
    try:
        size = path.stat().st_size
        if size > limit:
            raise EdgekdError(f"{what} {path} is {size:,} bytes, more than the {limit:,} edgekd reads", fix)
        with open(path, "rb") as fh:
            return fh.read(limit + 1)
    except OSError as exc:
        raise EdgekdError(f"cannot read {what} {path}: {exc.strerror or exc}", fix) from None


def read_json(path: str | os.PathLike[str], what: str, fix: str) -> Any:
    """The JSON value in a user's file, read through the size and depth limits of ``loads_json``."""
    return loads_json(read_file_capped(path, what, fix), f"{what} {path}", fix)


def read_json_object(path: str | os.PathLike[str], what: str, fix: str) -> dict[str, Any]:
    """Read a JSON object; a missing, unreadable, oversized, too deep or non-object file is one EdgekdError."""
    value = read_json(path, what, fix)
    if not isinstance(value, dict):
        raise EdgekdError(f"{what} {path} is not a JSON object", fix)
    return value


def load_yaml(text: str, what: str, fix: str) -> Any:
    """``yaml.safe_load`` with the JSON limits (size, nesting depth) and a cap on the value it expands to: aliases
    (``*a``) reuse a node, so ten lines of them can stand for a billion values ("billion laughs")."""
    if len(text) > MAX_FILE_BYTES:
        raise EdgekdError(f"{what} is {len(text):,} characters, more than the {MAX_FILE_BYTES:,} edgekd reads", fix)
    loader = None
    try:
        loader = _BoundedLoader(text)  # its reader refuses control characters here, before parsing
        return loader.get_single_data()
    except _TooLarge as exc:
        raise EdgekdError(f"{what} {exc}", fix) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise EdgekdError(f"{what} is not valid YAML{where}", fix) from None
    except (ValueError, TypeError, OverflowError) as exc:  # a tagged scalar its constructor refuses (!!int 0x)
        raise EdgekdError(f"{what} holds a value YAML cannot convert ({_first_line(exc)})", fix) from None
    finally:
        if loader is not None:
            loader.dispose()


MAX_YAML_VALUES = 1_000_000  # values a YAML document may expand to, aliases counted at their full size


class _TooLarge(Exception):
    pass


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader, measuring each node as it is composed: how deep and how many values it expands to
    (an alias counts as the whole node it names), refused past ``MAX_DEPTH`` or ``MAX_YAML_VALUES``."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._shape: dict[int, tuple[int, int]] = {}  # id(node) -> (values, depth) once expanded

    def compose_node(self, parent, index):  # noqa: ANN001, ANN201 - PyYAML's signature
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:  # the composer recurses per level: stop before Python's limit
                raise _TooLarge(f"nests more than {MAX_DEPTH} levels deep")
            alias = self.check_event(yaml.AliasEvent)
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if not alias:
            self._shape[id(node)] = self._measure(node)
        elif id(node) not in self._shape:  # an alias to a node still being composed: one that holds itself
            raise _TooLarge("holds itself through an alias (a cycle no setting can be)")
        return node

    def _measure(self, node: yaml.Node) -> tuple[int, int]:
        children = node.value if isinstance(node, yaml.SequenceNode) else (
            [item for pair in node.value for item in pair] if isinstance(node, yaml.MappingNode) else [])
        shapes = [self._shape[id(child)] for child in children]
        values, depth = 1 + sum(v for v, _ in shapes), 1 + max((d for _, d in shapes), default=0)
        if depth > MAX_DEPTH:
            raise _TooLarge(f"nests more than {MAX_DEPTH} levels deep once its aliases are expanded")
        if values > MAX_YAML_VALUES:
            raise _TooLarge(f"expands to more than {MAX_YAML_VALUES:,} values (aliases repeat what they name)")
        return values, depth


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


def _json_default(obj: Any) -> Any:
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
