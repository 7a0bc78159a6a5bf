"""Every format x precision for one student trained on Fashion-MNIST, measured side by side in one run.

    python benchmarks/formats.py              # default size; every choice is printed
    python benchmarks/formats.py --quick --out /tmp/f.json   # digits, 1 epoch, 200 test images, 20 runs

For each artifact: size, test accuracy (in its real runtime), parity with the PyTorch student (max abs diff,
top-1 agreement), p50 latency (batch 1, runner.py in a fresh process without torch) and speed against the fp32
artifact of the same format. Writes ``benchmarks/results/formats.json`` (``data``, ``student``, ``threads``,
``runs``, one row per artifact, the provenance block, and the verdict computed from the rows by :func:`verdict`:
which artifacts failed parity, which precision ran fastest per format; "invalid: host busy" above ``QUIET_LOAD``).

The student is the rpi4 budget's (sized against the default teacher_cnn's MACs), trained alone for a few epochs
on a subset of the training data and cached under the git-ignored ``benchmarks/.cache/`` (the point here is the
conversions, not the accuracy; kd_quality.py measures distillation).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))
sys.path.insert(0, str(ROOT))

from _provenance import Recorder, add_quick_and_out, parse_quick, stamped  # noqa: E402

from edgekd.backends import check_parity  # noqa: E402
from edgekd.bench import run_local, write_eval_inputs  # noqa: E402
from edgekd.compress.calibration import build_calibration_set  # noqa: E402
from edgekd.data import load_dataset  # noqa: E402
from edgekd.distill.trainer import TrainConfig, train  # noqa: E402
from edgekd.formats import get_backend, get_format  # noqa: E402
from edgekd.io import atomic_write, write_json  # noqa: E402
from edgekd.models.budget import count_macs, fit_student_to_budget  # noqa: E402
from edgekd.models.students import build_model  # noqa: E402
from edgekd.models.teachers import predict_logits  # noqa: E402
from edgekd.targets import load_target  # noqa: E402

DEFAULT_DATA = ROOT.parent.parent / "shared" / "datasets" / "fashion-mnist"
MATRIX = {
    "onnx": ("fp32", "fp16", "int8"),
    "openvino": ("fp32", "fp16", "int8"),
    "tflite": ("fp32", "fp16", "dynamic_int8", "int8"),
}
QUIET_LOAD = 2.5  # 1-minute load average: training's two threads plus half a core of anyone else's
ROWS = "rows"
QUICK = {"data": "digits", "max_train": None, "epochs": 1, "test_samples": 200, "runs": 20}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--max-train", type=int, default=12000)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--test-samples", type=int, default=2000, help="test images evaluated per artifact")
    p.add_argument("--runs", type=int, default=300)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--cache-dir", default=str(ROOT / ".cache"), help="where the trained student is cached")
    add_quick_and_out(p, QUICK)
    return parse_quick(p, argv, "formats", QUICK)


def verdict(rows: list[dict]) -> dict:
    """The artifacts that failed parity, and per format the precision with the lowest p50."""
    fastest = {}
    for r in rows:
        best = fastest.get(r["format"])
        if best is None or r["p50_ms"] < best["p50_ms"]:
            fastest[r["format"]] = r
    return {"parity_failed": [f"{r['format']}/{r['precision']}" for r in rows if not r["parity_passed"]],
            "fastest_precision": {fmt: f"{r['precision']} ({r['speed_vs_fp32']:.2f}x fp32)"
                                  for fmt, r in fastest.items()}}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    recorder = Recorder(quick=args.quick, seeds=[0], quiet_load=QUIET_LOAD)
    if args.data != "digits" and not Path(args.data).exists():
        print(f"data not found: {args.data} (Fashion-MNIST lives in ../shared/datasets/); falling back to digits")
        args.data = "digits"
    data = load_dataset(args.data, seed=0, max_train=args.max_train)
    target = load_target("rpi4")
    teacher_macs = count_macs(build_model("teacher_cnn", data.input_shape, data.num_classes), data.input_shape)
    choice = fit_student_to_budget(data.input_shape, data.num_classes, target.student_budget, teacher_macs)
    print(f"data {data.name}: {len(data.y_train)} train (max_train={args.max_train}), "
          f"{args.test_samples} test; student {choice.family} {choice.config}: {choice.params} params, "
          f"{choice.macs} MACs (rpi4 budget vs teacher_cnn's {teacher_macs} MACs)")

    key = hashlib.sha256(json.dumps([data.fingerprint(), choice.config, args.epochs]).encode()).hexdigest()[:16]
    cache = Path(args.cache_dir) / f"formats-student-{key}.pt"
    student = choice.build(data.input_shape, data.num_classes)
    if cache.exists():
        student.load_state_dict(torch.load(cache, weights_only=True))
        print(f"student: reused from {cache}")
    else:
        torch.manual_seed(0)
        t0 = time.perf_counter()
        student = train(student, data, TrainConfig(epochs=args.epochs, label="student"), progress=True).model
        atomic_write(cache, lambda tmp: torch.save(student.state_dict(), tmp))
        print(f"student: trained alone for {args.epochs} epochs in {time.perf_counter() - t0:.0f}s, cached at {cache}")
    student.eval()

    x_test, y_test = data.x_test[: args.test_samples], data.y_test[: args.test_samples]
    reference = predict_logits(student, x_test)
    calibration = build_calibration_set(data, target.calibration.samples)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        eval_path = write_eval_inputs(work / "eval.npz", x_test, y_test, reference_logits=reference)
        for fmt, precisions in MATRIX.items():
            backend = get_backend(fmt, **({"threads": args.threads} if fmt == "onnx" else {}))
            for precision in precisions:
                path = work / f"{fmt}_{precision}{get_format(fmt).suffix}"
                needs_calib = precision == "int8"
                artifact = backend.export(student, x_test[:1], path, precision, calibration if needs_calib else None)
                parity = check_parity(artifact, reference, x_test)
                result = run_local(path, eval_path, runs=args.runs, warmup=30, threads=args.threads, verify=False,
                                   memory=False)
                rows.append({
                    "format": fmt, "precision": precision,
                    "size_bytes": sum(f.stat().st_size for f in artifact.files),
                    "accuracy": result["accuracy"],
                    "max_abs_diff": parity.max_abs_diff, "top1_agreement": parity.top1_agreement,
                    "parity_passed": parity.passed,
                    "p50_ms": result["latency_ms"]["p50"], "noise_pct": result["latency_ms"]["noise_pct"],
                    "runtime": f"{result['runtime']['name']} {result['runtime']['version']}",
                    "torch_imported": result["torch_imported"],
                    **({"scheme": artifact.details["scheme"]} if "scheme" in artifact.details else {}),
                })
                print(f"  {fmt:<9}{precision:<13} done", flush=True)
    for r in rows:
        fp32 = next(x for x in rows if x["format"] == r["format"] and x["precision"] == "fp32")
        r["speed_vs_fp32"] = fp32["p50_ms"] / r["p50_ms"]

    student_acc = float((reference.argmax(1) == y_test).mean())
    header = f"{'format':<9} {'precision':<13} {'size KiB':>9} {'accuracy':>9} {'max|diff|':>10} {'top-1':>7} " \
             f"{'p50 ms':>8} {'vs fp32':>8} {'noise':>6}"
    print(f"\nPyTorch student accuracy on these {len(y_test)} test images: {student_acc:.4f}; "
          f"batch 1, {args.threads} thread(s), {args.runs} runs each, host {os.uname().machine}")
    print(header + "\n" + "-" * len(header))
    for r in rows:
        print(f"{r['format']:<9} {r['precision']:<13} {r['size_bytes'] / 1024:>9.1f} {r['accuracy']:>9.4f} "
              f"{r['max_abs_diff']:>10.2e} {r['top1_agreement']:>7.2%} {r['p50_ms']:>8.4f} "
              f"{r['speed_vs_fp32']:>7.2f}x {r['noise_pct']:>5.1f}%")
    result = {"data": data.name, "student": {"config": choice.config, "params": choice.params, "macs": choice.macs,
                                             "accuracy": student_acc},
              "threads": args.threads, "runs": args.runs, "rows": rows}
    out = stamped(result, verdict(rows), recorder.finish())
    write_json(args.out, out)
    print(f"\nwrote {args.out} (verdict: {out['verdict']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
