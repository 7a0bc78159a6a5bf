"""What a benchmark's ``--quick`` build targets: a packaged target with ONNX as its only format.

A quick run proves a script's plumbing and provenance, not a number, and one format proves it: every other format is
one more pre-flight, export, parity check and timing block per build (OpenVINO's fp32 export alone took 46 s of a
tiny digits build at load 12 on 2 cores). The student budget and the int8 contract stay the target's own.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from edgekd.io import write_text
from edgekd.targets import load_target


def onnx_only_target(name: str, folder: Path) -> str:
    """``name``'s target file with ONNX int8 as its only format, written into ``folder``; the file's path."""
    raw = yaml.safe_load(Path(load_target(name).path).read_text(encoding="utf-8"))
    raw["name"] = f"{raw['name']}-onnx-only"
    raw["runtime"] = {**raw["runtime"], "format": "onnx", "precision": "int8", "also": []}
    raw["runtime"].pop("delegate", None)  # a TFLite delegate means nothing to onnxruntime
    path = Path(folder) / f"{raw['name']}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, yaml.safe_dump(raw, sort_keys=False))
    return str(path)
