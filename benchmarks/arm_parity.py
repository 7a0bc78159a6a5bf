"""A run's shipped int8 artifacts on emulated aarch64 (the target's own core, QEMU user mode) vs this x86 host.

    python benchmarks/arm_parity.py RUN_DIR --label "rpi4 digits" --build-command "edgekd build ..." [--from-nothing]

For each shipped artifact (rpi4: TFLite int8 on XNNPACK and ONNX int8), on the run's full evaluation split:
accuracy on each side, top-1 agreement, max and mean |logit difference|, whether the logits are bit-exact, the
runtime versions on each side, the emulator and CPU model, and the set-up time of the emulated environment
(``--from-nothing`` builds it in an empty cache, so that time is from nothing: mmdebstrap root + aarch64 wheels).
``--control-cpu max`` (the default) runs them once more on QEMU's default ``max`` CPU (SME on) and records its
agreement with the target core's run: why the core is always pinned. Rows are kept per ``--label`` in
``benchmarks/results/arm_parity.json`` (a label measured again replaces its row), each with its provenance; the
file's ``verdict`` is recomputed from all rows. Timing under emulation is QEMU's, so none is reported. ``--quick``
skips the control run (it still needs RUN_DIR, QEMU and mmdebstrap, so tests/test_emulate.py's slow end-to-end test
stands in for it in CI).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))

from _provenance import Recorder, add_quick_and_out, appended, parse_quick  # noqa: E402

from edgekd.bundle import load_run  # noqa: E402
from edgekd.emulate import bench_emulated, compare_logits, host_versions  # noqa: E402
from edgekd.io import write_json  # noqa: E402

ROWS = "rows"
QUICK = {"control_cpu": ""}  # the target core's run only (the checks are the same; no control on QEMU's max)
AGREE = 0.99  # below this top-1 agreement with the target core's run, the control CPU changed the answers


def verdict(rows: dict[str, dict]) -> dict[str, str]:
    """Per build: bit-exact on the emulated core, or how far from it; and whether the control CPU changed it."""
    out = {}
    for label, row in rows.items():
        arts, core = row["artifacts"], row["emulation"]["core"]
        names = ", ".join(a["artifact"] for a in arts)
        text = (f"bit-exact on emulated {core} ({names})" if all(a["bit_exact"] for a in arts) else
                f"on emulated {core} ({names}): top-1 agreement >= {min(a['top1_agreement'] for a in arts):.4f}, "
                f"max |logit diff| {max(a['max_abs_logit_diff'] for a in arts):.3g}")
        changed = [f"{a['artifact']} ({a['control_vs_target_core']['top1_agreement']:.3f})" for a in arts
                   if (a.get("control_vs_target_core") or {}).get("top1_agreement", 1.0) < AGREE]
        if changed:
            text += f"; QEMU's max CPU changes {', '.join(changed)}: the core must be pinned"
        out[label] = text
    return out


def built_from(run_dir: Path, command: str | None) -> dict:
    """What the run directory was built from: its report's target, data and student, and the build command."""
    report, _ = load_run(run_dir)
    student = report.get("student") or {}
    return {"run_dir": str(run_dir), "build_command": command, "target": report.get("target"),
            "edgekd_version": report.get("edgekd_version"), "data": report.get("data"),
            "student": {k: student.get(k) for k in ("arch", "config", "params", "accuracy") if k in student}}


def control(run_dir: Path, threads: int, pinned: dict, cpu: str) -> dict:
    """The same artifacts on another QEMU CPU model (``max``: SME on), against the run on the target's core."""
    run = bench_emulated(run_dir, "aarch64", threads, say=lambda m: print(m, flush=True), qemu_cpu=cpu)
    with np.load(run_dir / "eval.npz") as data:
        labels = data["y"]
    renamed = {"accuracy_host": "accuracy_target_core", "accuracy_emulated": f"accuracy_{cpu}"}
    return {name: {"qemu_cpu": cpu, **{renamed.get(k, k): v for k, v in
                                       compare_logits(pinned[name], logits, labels).items()}}
            for name, logits in run.logits.items()}


def measure(run_dir: Path, threads: int, command: str | None, control_cpu: str | None) -> dict:
    report, _ = load_run(run_dir)
    run = bench_emulated(run_dir, "aarch64", threads, say=lambda m: print(m, flush=True))
    controls = control(run_dir, threads, run.logits, control_cpu) if control_cpu else {}
    host_rows = {a["path"]: a for a in report["artifacts"]}
    rows = []
    for r in run.results:
        c = run.comparison[r["artifact"]]
        rows.append({"artifact": r["artifact"], "format": r["format"], "precision": r["precision"],
                     "sha256": r["sha256"], "sha256_verified": r["sha256_verified"],
                     "runtime_emulated": f"{r['runtime']['name']} {r['runtime']['version']}",
                     "runtime_host": f"{host_rows[r['artifact']].get('runtime')} "
                                     f"{host_rows[r['artifact']].get('runtime_version')}",
                     "accuracy_runner_emulated": r.get("accuracy"), **c,
                     **({"control_vs_target_core": controls[r["artifact"]]} if controls else {})})
    return {"built_from": built_from(run_dir, command), "emulation": run.emulation, "host_wheels": host_versions(),
            "machine_emulated": run.results[0]["machine"], "artifacts": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a run directory written by `edgekd build --target rpi4`")
    parser.add_argument("--label", required=True, help="the row's name, e.g. 'rpi4 fashion-mnist'")
    parser.add_argument("--threads", type=int, default=1, help="threads on each side (default 1)")
    parser.add_argument("--from-nothing", action="store_true",
                        help="build the emulated environment in an empty cache, timing its set-up from nothing")
    parser.add_argument("--build-command", help="the `edgekd build` command that wrote RUN_DIR (recorded)")
    parser.add_argument("--control-cpu", default="max",
                        help="also run on this QEMU CPU model and compare with the target core's run (default max, "
                             "which enables SME; '' to skip)")
    add_quick_and_out(parser, QUICK)
    args = parse_quick(parser, argv, "arm_parity", QUICK)
    recorder = Recorder(quick=args.quick)  # no timing is judged: no quiet-load threshold
    with tempfile.TemporaryDirectory(prefix="arm-parity-cache-") as fresh:
        if args.from_nothing:
            os.environ["EDGEKD_CACHE"] = fresh
        row = measure(args.run_dir, args.threads, args.build_command, args.control_cpu or None)
    provenance = recorder.finish()
    row["provenance"] = provenance.model_dump()
    out = Path(args.out)
    doc = json.loads(out.read_text()) if out.is_file() else {}
    rows = {**doc.get(ROWS, {}), args.label: row}
    doc = appended({"what": __doc__.splitlines()[0], ROWS: rows}, verdict(rows), provenance)
    write_json(out, doc)
    for r in row["artifacts"]:
        print(f"{args.label}: {r['artifact']:<22} host {r['accuracy_host']:.4f} emulated {r['accuracy_emulated']:.4f} "
              f"agreement {r['top1_agreement']:.4f} max|diff| {r['max_abs_logit_diff']:.3g} "
              f"({row['emulation']['core']}, {r['runtime_emulated']})")
    print(f"wrote {out} (verdict: {doc['verdict'][args.label]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
