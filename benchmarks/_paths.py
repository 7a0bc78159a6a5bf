"""Where the benchmarks find the shared datasets (imported by scripts in this folder)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent


def shared_dataset(name: str) -> Path:
    """``../shared/datasets/<name>`` seen from the project root (or from a folder above, for a git worktree)."""
    for parent in ROOT.parents:
        if (parent / "shared" / "datasets" / name).exists():
            return parent / "shared" / "datasets" / name
    return ROOT.parent.parent / "shared" / "datasets" / name
