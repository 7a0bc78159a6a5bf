"""Drive the standalone runner: locally in a fresh process (no torch in it), exactly as on a device."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from edgekd.errors import EdgekdError
from edgekd.io import atomic_write

RUNNER_PATH = Path(__file__).with_name("runner.py")


def write_eval_inputs(path: Path, x: np.ndarray, y: np.ndarray, teacher_logits: np.ndarray | None = None,
                      reference_logits: np.ndarray | None = None) -> Path:
    """The evaluation inputs a device needs: normalised x, labels and the teacher's recorded outputs."""
    arrays = {"x": x.astype(np.float32), "y": y.astype(np.int64)}
    if teacher_logits is not None:
        arrays["teacher_logits"] = teacher_logits.astype(np.float32)
    if reference_logits is not None:
        arrays["reference_logits"] = reference_logits.astype(np.float32)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)

    return atomic_write(path, write)


def run_local(artifact: Path, inputs: Path, runs: int = 200, warmup: int = 20, threads: int = 1,
              verify: bool = True, memory: bool = True) -> dict:
    """Benchmark ``artifact`` with runner.py in a child process and return its JSON result."""
    out = artifact.parent / f".bench-{artifact.name}.json"
    cmd = [sys.executable, str(RUNNER_PATH), str(artifact), "--inputs", str(inputs), "--runs", str(runs),
           "--warmup", str(warmup), "--threads", str(threads), "--json", str(out)]
    if not verify:
        cmd.append("--no-verify")
    if not memory:
        cmd.append("--no-memory")
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
    try:
        if proc.returncode != 0:
            lines = proc.stderr.strip().splitlines() or ["(no output)"]
            raise EdgekdError(f"benchmarking {artifact.name} failed: {lines[-1]}", "see the runner's message above")
        return json.loads(out.read_text())
    finally:
        out.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------- CLI
def cmd_bench(args) -> int:
    path = Path(args.artifact)
    if path.is_dir():
        manifest_path = path / "manifest.json"
        if not manifest_path.is_file():
            raise EdgekdError(f"{path} has no manifest.json", "pass a run directory written by `edgekd build`")
        manifest = json.loads(manifest_path.read_text())
        artifacts = [path / a["path"] for a in manifest["artifacts"]]
        inputs = Path(args.inputs) if args.inputs else path / manifest["eval_inputs"]["path"]
    else:
        artifacts = [path]
        inputs = Path(args.inputs) if args.inputs else path.parent / "eval.npz"
    results = [run_local(a, inputs, args.runs, args.warmup, args.threads) for a in artifacts]
    for r in results:
        lat = r["latency_ms"]
        print(f"{r['artifact']:<24} {r['runtime']['name']:<12} p50 {lat['p50']:.4f} ms  p99 {lat['p99']:.4f} ms  "
              f"accuracy {r.get('accuracy', float('nan')):.4f}  peak {r.get('peak_memory_mb', float('nan')):.1f} MB")
    if args.json:
        from edgekd.io import write_json

        write_json(args.json, {"results": results})
    return 0


def register_cli(sub) -> None:
    p = sub.add_parser("bench", help="benchmark a run directory or one artifact with the standalone runner")
    p.add_argument("artifact", help="run directory or artifact file")
    p.add_argument("--inputs", help="EVAL.npz (default: the run's eval.npz)")
    p.add_argument("--runs", type=int, default=200)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", help="write the results here")
    p.set_defaults(func=cmd_bench)
