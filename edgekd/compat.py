"""Operator compatibility: which operators of an artifact the target's delegate takes, and which fall back.

An artifact that runs is not an artifact that runs *fast*: an operator the NPU delegate doesn't take splits the
graph and runs on the CPU. The supported-operator lists are data files (``edgekd/data_files/ops_*.yaml``), each
naming its source, so a reader can check or update them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from edgekd.errors import ContractError, EdgekdError
from edgekd.formats import get_backend
from edgekd.runner import RunnerError, artifact_format

DATA_DIR = Path(__file__).with_name("data_files")


@dataclass(frozen=True)
class DelegateSpec:
    name: str
    format: str
    supported: frozenset[str]
    sources: tuple[str, ...]
    notes: str
    min_api: dict[str, int] = field(default_factory=dict)
    ignored: frozenset[str] = frozenset()  # graph plumbing that never reaches the delegate as a compute op


@cache
def load_delegate(name: str) -> DelegateSpec:
    path = DATA_DIR / f"ops_{name}.yaml"
    if not path.exists():
        known = sorted(p.stem[4:] for p in DATA_DIR.glob("ops_*.yaml"))
        raise EdgekdError(f"no operator list for delegate '{name}'", f"use one of: {', '.join(known)} or 'none'")
    raw = yaml.safe_load(path.read_text())
    supported = raw.get("supported") or list(raw.get("min_api", {}))
    return DelegateSpec(raw["delegate"], raw["format"], frozenset(supported), tuple(raw["sources"]),
                        raw.get("notes", ""), dict(raw.get("min_api", {})), frozenset(raw.get("ignored", [])))


def list_operators(path: str | Path) -> dict[str, int]:
    """Operator type -> count in the artifact, read by its format's backend with the format's own tooling."""
    try:
        fmt = artifact_format(str(path))
    except RunnerError as exc:
        raise EdgekdError(f"cannot list operators of {Path(path).name}: {exc}",
                          "pass an artifact edgekd built") from None
    return dict(sorted(get_backend(fmt).list_operators(Path(path)).items()))


@dataclass
class Compatibility:
    artifact: str
    delegate: str
    operators: dict[str, int]
    fallback: dict[str, int]
    sources: tuple[str, ...]
    min_api: int | None = None

    @property
    def fully_delegated(self) -> bool:
        return not self.fallback

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "fully_delegated": self.fully_delegated}


def check_compatibility(artifact: str | Path, delegate: str) -> Compatibility:
    """Operators of ``artifact`` that ``delegate`` would not take (they fall back to the CPU)."""
    spec = load_delegate(delegate)
    try:
        fmt = artifact_format(str(artifact))
    except RunnerError:
        fmt = None
    if fmt != spec.format:
        raise EdgekdError(f"delegate '{delegate}' takes {spec.format} models, not {Path(artifact).name}",
                          f"check a {spec.format} artifact against it")
    ops = list_operators(artifact)
    fallback = {op: n for op, n in ops.items() if op not in spec.supported and op not in spec.ignored}
    min_api = max((spec.min_api[op] for op in ops if op in spec.min_api), default=None) if spec.min_api else None
    return Compatibility(Path(artifact).name, delegate, ops, fallback, spec.sources, min_api)


def enforce_full_delegation(compat: Compatibility) -> None:
    if not compat.fully_delegated:
        listing = ", ".join(f"{op} (x{n})" for op, n in compat.fallback.items())
        raise ContractError(
            f"artifact {compat.artifact} is not fully delegated to {compat.delegate}: {listing} would fall back to "
            "the CPU, and the target requires full delegation",
            "replace those layers in the student, or set runtime.require_full_delegation: false in the target",
        )
