"""Resumable state for the benchmarks that run for hours: what a run has finished, on disk, so a killed or stopped
command picks up where it was instead of starting over.

The state is one JSON file, ``<cache>/<name>/<recipe hash>.json``: keyed by everything that shapes the results
(never the commit, so a later commit can finish a run; each piece records the commit it ran at), rewritten
atomically after each finished piece, read through the private-cache check so a planted file is refused.
A state whose recipe differs from the run's is ignored (a fresh start), never mixed in.

Imported by the scripts in this folder (``from _state import ResumeState``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from edgekd.data.cache import cache_entry
from edgekd.io import read_json_object, write_json


def recipe_key(recipe: dict) -> str:
    """16 hex digits of the recipe's sha256 (sorted keys, so the order it was built in does not matter)."""
    return hashlib.sha256(json.dumps(recipe, sort_keys=True, default=str).encode()).hexdigest()[:16]


class ResumeState:
    """``doc`` = ``{"recipe": ..., **fresh}`` on disk; :meth:`put` stores one finished piece and writes at once."""

    def __init__(self, cache_dir: str | Path, name: str, recipe: dict, fresh: dict[str, Any]):
        self.key = recipe_key(recipe)
        self.path = cache_entry(Path(cache_dir), name, f"{self.key}.json", what=f"{name} state")
        recipe = json.loads(json.dumps(recipe, default=str))
        self.doc: dict[str, Any] = {"recipe": recipe, **json.loads(json.dumps(fresh))}
        if self.path.exists():
            saved = read_json_object(self.path, f"{name} state", f"delete {self.path} to start afresh")
            if saved.get("recipe") == recipe:
                self.doc = saved

    def put(self, key: str, value: Any) -> None:
        self.doc[key] = value
        write_json(self.path, self.doc)
