"""Per-epoch training checkpoints: written atomically, keyed by a hash of everything that shapes the run.

A checkpoint holds model, loss-mix (adapters), optimizer, scheduler, grad-scaler and RNG states plus the
best-so-far weights and the history, so a resumed run continues exactly where the killed one stopped and ends
with bit-identical weights. The key covers the config, the data, the initial student weights and the teachers'
weights: a changed config starts afresh instead of resuming a stale run. Under torchrun rank 0 writes it (the
unwrapped model's state, so any world size can read it) and hands it to every rank on resume. The world size is not
in the key: a build killed on 4 processes resumes on 2 (or 1). Exactness then holds only for the same world size; a
different one shards and steps the data differently, so the loop re-places the per-step LR schedule at the epoch
reached (``distill/loop.py``, ``resume``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgekd.data import Dataset
from edgekd.io import atomic_write

CHECKPOINT_NAME = "checkpoint.pt"


def _update_with_state(digest: Any, module: nn.Module) -> None:
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())


def run_key(config: Any, data: Dataset, model: nn.Module, teachers: Sequence[nn.Module], extra: str = "") -> str:
    """16 hex chars over config (minus its display label), data, initial weights and teachers."""
    cfg = asdict(config) if is_dataclass(config) else dict(config)
    cfg.pop("label", None)
    digest = hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode())
    digest.update(data.fingerprint().encode())
    digest.update(extra.encode())
    _update_with_state(digest, model)
    for teacher in teachers:
        _update_with_state(digest, teacher)
    return digest.hexdigest()[:16]


def checkpoint_path(checkpoint_dir: str | Path, key: str) -> Path:
    return Path(checkpoint_dir) / f"train-{key}" / CHECKPOINT_NAME


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Temp file + rename: a kill mid-write leaves the previous epoch's checkpoint intact."""
    atomic_write(path, lambda p: torch.save(state, p))


def load_checkpoint(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    return torch.load(path, map_location="cpu", weights_only=True)
