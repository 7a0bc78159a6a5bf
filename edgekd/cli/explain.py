"""``edgekd explain-int8 RUN``: where a run's int8 artifact diverges from its fp32 one, layer by layer."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from edgekd.bundle import load_run
from edgekd.compress.int8_divergence import DEFAULT_SAMPLES, DEFAULT_THRESHOLD_DB, EXPLAINERS, Divergence, explain
from edgekd.counts import check_counts
from edgekd.data.inputs import model_input
from edgekd.errors import EdgekdError
from edgekd.io import sha256_file, write_json


def verified(run_dir: Path, entry: dict) -> Path:
    """The artifact's main file, after every one of its files matched the manifest's sha256."""
    for item in entry.get("files") or [{"path": entry["path"], "sha256": entry["sha256"]}]:
        path = run_dir / Path(item["path"]).name
        if not path.is_file() or sha256_file(path) != item["sha256"]:
            raise EdgekdError(f"{run_dir.name}/{item['path']} is missing or differs from the sha256 in manifest.json",
                              "rebuild the run with `edgekd build` (or restore its original files)")
    return run_dir / Path(entry["path"]).name


def int8_pair(run_dir: Path, manifest: dict, fmt: str | None) -> tuple[str, Path, Path]:
    """(format, fp32 file, int8 file) of the first format with both precisions and an explainer (or ``fmt``)."""
    students = [a for a in manifest["artifacts"] if a.get("role", "student") == "student"]
    formats = [fmt] if fmt else list(dict.fromkeys(a["format"] for a in students))
    for name in formats:
        by_precision = {a["precision"]: a for a in students if a["format"] == name}
        if "fp32" in by_precision and "int8" in by_precision and name in EXPLAINERS:
            return name, verified(run_dir, by_precision["fp32"]), verified(run_dir, by_precision["int8"])
    have = sorted({f"{a['format']} {a['precision']}" for a in students})
    raise EdgekdError(f"{run_dir.name} has no fp32 + int8 pair in a format edgekd can explain "
                      f"({', '.join(EXPLAINERS)}); it has: {', '.join(have) or 'no artifacts'}",
                      "build a target whose formats include onnx int8 (e.g. --target x86-cpu)")


def calibration_samples(run_dir: Path, manifest: dict, count: int) -> np.ndarray:
    """The run's calibration inputs (the samples the int8 grid was fitted on), sha256-checked, first ``count``."""
    info = manifest.get("calibration") or {}
    path = run_dir / Path(str(info.get("file", "calibration.npz"))).name
    if not path.is_file() or sha256_file(path) != info.get("sha256"):
        raise EdgekdError(f"{run_dir.name}/{path.name} is missing or differs from the sha256 in manifest.json",
                          "rebuild the run with `edgekd build`")
    with np.load(path, allow_pickle=False) as data:
        return model_input(data["x"][:count])


def print_table(result: Divergence, top: int) -> None:
    print(f"{result.format} {result.artifact}: per-layer SQNR (dB) over {result.samples} calibration samples "
          f"({result.tool}); ranked by the noise each layer adds itself")
    print(f"{'rank':>4}  {'layer':<40} {'op':<10} {'weight':>8} {'activation':>10} {'output':>8}")
    for rank, layer in enumerate(result.ranked[:top], 1):
        cells = [f"{v:.1f}" if v is not None else "-" for v in
                 (layer.weight_sqnr_db, layer.activation_sqnr_db, layer.output_sqnr_db)]
        print(f"{rank:>4}  {layer.layer[:40]:<40} {layer.op_type:<10} {cells[0]:>8} {cells[1]:>10} {cells[2]:>8}")
    where = result.first_below or f"none (every output above {result.threshold_db:g} dB)"
    print(f"first layer whose output falls below {result.threshold_db:g} dB: {where}")


def cmd_explain(args) -> int:
    check_counts({"--samples": args.samples, "--top": args.top})
    if not math.isfinite(args.threshold_db):
        raise EdgekdError(f"--threshold-db {args.threshold_db} is not a number of dB", "pass e.g. --threshold-db 20")
    run_dir = Path(args.run)
    _, manifest = load_run(run_dir)
    fmt, fp32, int8 = int8_pair(run_dir, manifest, args.format)
    result = explain(fmt, fp32, int8, calibration_samples(run_dir, manifest, args.samples), args.threshold_db)
    print_table(result, args.top)
    if args.json:
        write_json(args.json, result.to_dict())
    return 0


def register(sub) -> None:
    p = sub.add_parser("explain-int8", help="per-layer SQNR of a run's int8 artifact against its fp32 one",
                       description="Rank the layers of a run's int8 artifact by the quantization noise each adds "
                                   "(weight and activation SQNR, dB) and name the first layer whose output falls "
                                   "below the threshold. Exit 0, or 2 for bad input.")
    p.add_argument("run", help="run directory written by `edgekd build`")
    p.add_argument("--format", choices=sorted(EXPLAINERS), help="which format's int8 artifact (default: the first "
                                                                "the run has that edgekd can explain)")
    p.add_argument("--samples", type=int, default=DEFAULT_SAMPLES, help="calibration samples to run")
    p.add_argument("--threshold-db", type=float, default=DEFAULT_THRESHOLD_DB,
                   help="an output SQNR under this many dB marks where the int8 model starts to drift")
    p.add_argument("--top", type=int, default=10, help="rows to print")
    p.add_argument("--json", help="also write the full ranking as JSON here")
    p.set_defaults(func=cmd_explain)
