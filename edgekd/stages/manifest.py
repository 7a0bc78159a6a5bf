"""manifest.json: what a device needs to run and verify the artifacts (written before anything is benchmarked,
because the runner refuses an artifact whose sha256 the manifest does not vouch for)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from edgekd import __version__
from edgekd.data import preprocess
from edgekd.data.tokenizer import SETTINGS_FILE, VOCAB_FILE
from edgekd.formats import get_format
from edgekd.io import dumps, sha256_file, write_json
from edgekd.schema import MANIFEST_SCHEMA_VERSION, Manifest
from edgekd.stages.context import BuildContext
from edgekd.stages.export import Built


def manifest_entry(built: Built) -> dict[str, Any]:
    a = built.artifact
    files = [{"path": f.name, "sha256": sha256_file(f), "size_bytes": f.stat().st_size} for f in a.files]
    return {
        "path": a.path.name,
        "role": built.role,
        "format": a.format,
        "precision": a.precision,
        "runtime": a.runtime,
        "sha256": files[0]["sha256"],
        "size_bytes": sum(f["size_bytes"] for f in files),
        "files": files,
        **{k: v for k, v in a.details.items() if k != "calibration"},
        **({"calibration": a.details["calibration"]} if "calibration" in a.details else {}),
    }


def session_plugins(built: list[Built], stage: Path) -> list[dict[str, Any]]:
    """Formats whose runner session is not built into runner.py: their plugin file, copied beside the artifacts."""
    plugins = []
    for fmt in dict.fromkeys(b.artifact.format for b in built):
        source = get_format(fmt).plugin_file
        if source is None:
            continue
        shutil.copyfile(source, stage / source.name)
        plugins.append({"format": fmt, "path": source.name, "sha256": sha256_file(stage / source.name)})
    return plugins


PREPROCESS_MODULE = "edgekd_preprocess.py"  # edgekd/data/preprocess.py, shipped so a device pre-processes itself


def preprocessing(ctx: BuildContext, stage: Path) -> dict[str, Any] | None:
    """How raw test samples become model inputs, and the module (copied beside the artifacts) that does it."""
    if ctx.data.raw_test is None:
        return None
    shutil.copyfile(preprocess.__file__, stage / PREPROCESS_MODULE)
    return {**ctx.data.preprocessing(),
            "module": {"path": PREPROCESS_MODULE, "sha256": sha256_file(stage / PREPROCESS_MODULE)}}


def tokenizer(ctx: BuildContext, stage: Path) -> dict[str, Any] | None:
    """Text: vocab.txt + tokenizer.json written beside the artifacts, with the sha256 the runner checks before it
    tokenizes raw strings with them (runner.py's pure-Python WordPiece encoder)."""
    tok = ctx.data.tokenizer
    if tok is None:
        return None

    hashes = tok.save(stage)
    return {**tok.describe(), "vocab_sha256": hashes[VOCAB_FILE], "settings_sha256": hashes[SETTINGS_FILE],
            "device_encoder": "runner.py (pure Python WordPiece: numpy only, no tokenizers package)"}


def write_manifest(ctx: BuildContext, stage: Path, built: list[Built], calibration: dict[str, Any],
                   eval_path: Path) -> dict[str, Any]:
    data = ctx.data
    manifest = {
        "manifest_version": MANIFEST_SCHEMA_VERSION,
        "edgekd_version": __version__,
        "target": ctx.target.name,
        "input": {"shape": [1, *data.input_shape], "dtype": data.input_dtype,
                  "layout": data.describe()["layout"], "name": "input"},
        "output": {"shape": [1, data.num_classes], "dtype": "float32", "name": "logits", "kind": "logits"},
        "normalization": data.describe()["normalization"],
        "classes": data.classes,
        "data": data.describe(),
        "calibration": calibration,
        "eval_inputs": {"path": eval_path.name, "sha256": sha256_file(eval_path)},
        "preprocessing": preprocessing(ctx, stage),
        "tokenizer": tokenizer(ctx, stage),
        "session_plugins": session_plugins(built, stage),
        "artifacts": [manifest_entry(b) for b in built],
    }
    Manifest.model_validate_json(dumps(manifest))  # a writer bug fails here, never in a reader on a device
    write_json(stage / "manifest.json", manifest)
    return manifest
