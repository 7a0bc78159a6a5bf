"""Load a ``torch.export`` archive (``.pt2``) without running code from it.

``torch.export.load`` in torch 2.13 unpickles several archive members with ``weights_only=False`` (pickled
weights and constants), falls back to full unpickling when the sample inputs fail the safe loader, and unpickles
custom and opaque objects with plain ``pickle``. A crafted archive therefore runs code while it loads. So edgekd
reads the archive itself first: the bytes are read once into memory (no re-open after checking), every member is
classified, and every member torch would unpickle must load with ``torch.load(weights_only=True)``. Members that
can only be loaded by full unpickling (custom/opaque objects) or that hold compiled code (AOTInductor) are refused
unless the user opts in with ``--trust-pickle``. The verified bytes are then loaded with ``torch.load`` pinned to
``weights_only=True``, so a fallback inside torch cannot unpickle anything either.
"""

from __future__ import annotations

import contextlib
import io
import zipfile
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import torch

from edgekd.errors import EdgekdError
from edgekd.io import loads_json

TRUST_FIX = "re-export it with torch.export.save from a trusted model, or pass --trust-pickle if you trust its author"
# Members read as text/JSON by torch.export.load: nothing in them is unpickled.
TEXT_NAMES = {"archive_format", "archive_version", "byteorder", "version", ".data/version",
              ".data/serialization_id"}
MAX_MEMBERS = 100_000


def _strip_root(name: str) -> str:
    """Archive members live under one top-level folder (the archive's name); torch strips it the same way."""
    return name.split("/", 1)[1] if "/" in name else name


def _raw_payloads(members: dict[str, bytes]) -> tuple[set[str], list[str]]:
    """Payload files torch reads as raw tensor bytes, and the members holding objects only pickle can load."""
    raw: set[str] = set()
    objects: list[str] = []
    for name, blob in members.items():
        if not name.endswith("_config.json") or not name.startswith(("data/weights/", "data/constants/")):
            continue
        folder = name.rsplit("/", 1)[0]
        fix = "re-export the teacher with torch.export.save"
        value = loads_json(blob, f"torch.export archive member {name}", fix)
        if not isinstance(value, dict):
            raise EdgekdError(f"torch.export archive member {name} is not a JSON object", fix)
        config = value.get("config", {})
        for meta in config.values() if isinstance(config, dict) else []:
            path_name = str((meta or {}).get("path_name", ""))
            member = f"{folder}/{path_name}"
            if path_name.startswith(("custom_obj", "opaque_obj")):
                objects.append(member)
            elif not meta.get("use_pickle", False):
                raw.add(member)
    return raw, objects


def _needs_check(name: str, raw: set[str]) -> bool:
    if name in TEXT_NAMES or name.endswith(".json") or name.startswith("extra/") or name in raw:
        return False
    return not name.endswith("/")


def scan_pt2(blob: bytes, label: str) -> None:
    """Refuse an archive with any member that only full unpickling (or native code) could load."""
    try:
        with zipfile.ZipFile(io.BytesIO(blob)) as zf:
            infos = zf.infolist()
            if len(infos) > MAX_MEMBERS:
                raise EdgekdError(f"teacher {label} has {len(infos)} archive members (limit {MAX_MEMBERS})",
                                  "pass a torch.export archive written by torch.export.save")
            members = {_strip_root(i.filename): zf.read(i) for i in infos}
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, NotImplementedError) as exc:
        raise EdgekdError(f"teacher {label} is not a readable torch.export archive: {exc}",
                          "pass a .pt2 file written by torch.export.save") from None
    compiled = [n for n in members if n.startswith("data/aotinductor/") or n.endswith((".so", ".dll", ".dylib"))]
    if compiled:
        raise EdgekdError(f"teacher {label} holds compiled native code ({compiled[0]}), which edgekd never loads",
                          "export the model with torch.export.save (no AOTInductor package)")
    raw, objects = _raw_payloads(members)
    if objects:
        raise EdgekdError(f"teacher {label}: archive member {objects[0]} is a pickled Python object that only full "
                          "unpickling (which can run code) could load", TRUST_FIX)
    for name, data in members.items():
        if not _needs_check(name, raw):
            continue
        try:
            torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any failure means torch would need full unpickling
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise EdgekdError(f"teacher {label}: archive member {name} does not load with weights_only=True "
                              f"({first}); loading it would need full unpickling, which can run code",
                              TRUST_FIX) from None


@contextlib.contextmanager
def _weights_only_torch_load() -> Iterator[None]:
    """Pin every ``torch.load`` inside torch.export.load to ``weights_only=True`` (its fallback included)."""
    original = torch.load

    def safe_load(*args, **kwargs):
        kwargs["weights_only"] = True
        return original(*args, **kwargs)

    with mock.patch.object(torch, "load", safe_load):
        yield


def load_exported_program(path: Path, trust_pickle: bool = False) -> torch.export.ExportedProgram:
    """``torch.export.load`` of ``path``; without ``trust_pickle`` nothing in the archive is fully unpickled."""
    blob = path.read_bytes()
    if trust_pickle:
        return torch.export.load(io.BytesIO(blob))
    scan_pt2(blob, str(path))
    with _weights_only_torch_load():
        return torch.export.load(io.BytesIO(blob))
