"""One teacher, two files: a torchvision ResNet-18 state dict and its ONNX export give the same student.

    python benchmarks/teacher_formats.py                 # CIFAR-10, 20,000 train+val images, two rpi4 builds
    python benchmarks/teacher_formats.py --quick --out /tmp/tf.json   # tiny 16x16 images, x86-cpu ONNX: it runs

A user arrives with a network trained elsewhere, as weights (``--teacher resnet18.pt --teacher-arch
torchvision:resnet18``) or as ONNX (``--teacher resnet18.onnx``). ``examples/make_resnet18_teacher.py`` trains the
teacher once on edgekd's training split (cached in the git-ignored ``benchmarks/.cache``); then ``edgekd build
--target rpi4`` runs twice, as a user would (a fresh process each, the CLI), identical but for the teacher file:
logit KD with cached teaching (the ONNX teacher's outputs are computed once by onnxruntime), the same seed, split
and augmentation. "The same student within noise": the two students' test accuracies differ by less than twice the
standard error of a paired difference (sqrt(discordant) / n, McNemar), computed from the per-sample predictions of
their PyTorch fp32 models (``reference_logits`` in each run's eval.npz). The teachers' recorded test logits are
compared too (max |diff|, top-1 agreement). Writes ``benchmarks/results/teacher_formats.json`` with a provenance
block; the verdict is computed from the comparison by :func:`verdict`.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))
sys.path.insert(0, str(ROOT))

from _paths import shared_dataset  # noqa: E402
from _provenance import Recorder, add_quick_and_out, parse_quick, stamped  # noqa: E402
from _quick import onnx_only_target  # noqa: E402

from edgekd.io import write_json  # noqa: E402

ARCH = "torchvision:resnet18"
ROWS = "comparison"
# --quick: the plumbing, not the number (the slow test runs it): ONNX only, of the two formats x86-cpu ships
QUICK = {"data": "tiny 3x16x16 images made here", "max_train": 900, "teacher_epochs": 2, "epochs": 6,
         "target": "x86-cpu, ONNX only", "runs": 10}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(shared_dataset("cifar10") / "cifar10-jpg.tar.gz"))
    p.add_argument("--max-train", type=int, default=20000, help="train+val images (the teacher's and the builds')")
    p.add_argument("--teacher-epochs", type=int, default=5)
    p.add_argument("--epochs", type=int, default=4, help="student epochs in each build")
    p.add_argument("--target", default="rpi4")
    p.add_argument("--runs", type=int, default=50, help="benchmark runs per artifact in each build")
    p.add_argument("--cache-dir", default=str(ROOT / ".cache"))
    add_quick_and_out(p, QUICK)
    return parse_quick(p, argv, "teacher_formats", QUICK)


def tiny_images(folder: Path, classes: int = 4, side: int = 16) -> str:
    """--quick's data: a small learnable RGB set (each class its own mean image) as an .npz of uint8 pixels. The
    CIFAR-10 builds score 10,000 test images per artifact, minutes on a busy host; these score 100. Easy enough
    that a few epochs give a student sure of its answers: a weak one fails the build's int8 contract (exit 2)."""
    rng = np.random.default_rng(0)
    centers = rng.integers(40, 215, (classes, side, side, 3))

    def split(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, classes, n)
        return np.clip(centers[y] + rng.normal(0, 12, (n, side, side, 3)), 0, 255).astype(np.uint8), y

    (x_train, y_train), (x_test, y_test) = split(900), split(100)
    path = folder / "tiny-images.npz"
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return str(path)


def make_teacher(args: argparse.Namespace, say) -> tuple[Path, Path, dict]:
    """The state dict and its ONNX export, trained once per (data, subset, epochs) and then reused."""
    key = hashlib.sha256(json.dumps([str(Path(args.data).resolve()), args.max_train, args.teacher_epochs, ARCH])
                         .encode()).hexdigest()[:12]
    pt, onnx = Path(args.cache_dir) / f"resnet18-{key}.pt", Path(args.cache_dir) / f"resnet18-{key}.onnx"
    info_path = pt.with_suffix(".json")
    if pt.is_file() and onnx.is_file() and info_path.is_file():
        say(f"teacher: REUSED {pt.name} and {onnx.name} from {args.cache_dir}")
        return pt, onnx, {**json.loads(info_path.read_text()), "cached": True}
    spec = importlib.util.spec_from_file_location("make_resnet18_teacher",
                                                  ROOT.parent / "examples" / "make_resnet18_teacher.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    say(f"teacher: training {ARCH} for {args.teacher_epochs} epochs on {args.max_train} images")
    info = example.make_teacher(args.data, pt, onnx, args.teacher_epochs, args.max_train, progress=False)
    write_json(info_path, info)
    return pt, onnx, {**info, "cached": False}


def build(args: argparse.Namespace, teacher: Path, arch: str | None, out: Path, cache: Path) -> dict:
    """One ``edgekd build`` in a fresh process; its report and the run's eval arrays."""
    cmd = [sys.executable, "-m", "edgekd", "build", "--target", args.target, "--data", args.data,
           "--teacher", str(teacher), *(["--teacher-arch", arch] if arch else []), "--normalization", "imagenet",
           "--max-train", str(args.max_train), "--epochs", str(args.epochs), "--teaching", "cached",
           "--losses", "kd=0.7,ce=0.3", "--runs", str(args.runs), "--out", str(out), "--cache-dir", str(cache),
           "--no-progress"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "EDGEKD_CACHE": str(cache)})
    wall = time.perf_counter() - t0
    if proc.returncode not in (0, 1):  # 1: built, a budget missed (the comparison still stands)
        raise SystemExit(f"build failed (exit {proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    with np.load(out / "eval.npz") as arrays:
        evals = {k: arrays[k] for k in ("y", "teacher_logits", "reference_logits")}
    return {"command": " ".join(cmd[1:]), "exit_code": proc.returncode, "wall_s": round(wall, 1),
            "report": json.loads((out / "report.json").read_text()), **evals}


def summary(run: dict) -> dict:
    r = run["report"]
    shipped = next(a for a in r["artifacts"] if a.get("shipped"))
    return {"command": run["command"], "exit_code": run["exit_code"], "wall_s": run["wall_s"],
            "teacher": {k: r["teacher"].get(k) for k in ("arch", "format", "macs", "accuracy")},
            "student": {"family": r["student"]["family"], "config": r["student"]["config"],
                        "macs": r["student"]["macs"], "accuracy_fp32": r["student"]["accuracy_before_compression"],
                        "accuracy_shipped": r["student"]["accuracy"]},
            "shipped": {"format": shipped["format"], "precision": shipped["precision"],
                        "accuracy": shipped.get("accuracy")}}


def compare(a: dict, b: dict) -> dict:
    """Paired comparison of the two students (and teachers) on the same test samples."""
    y = a["y"]
    assert np.array_equal(y, b["y"]), "the two builds scored different test samples"
    pa, pb = a["reference_logits"].argmax(1), b["reference_logits"].argmax(1)
    n, discordant = len(y), int((pa != pb).sum())
    diff = float((pa == y).mean() - (pb == y).mean())
    se = math.sqrt(discordant) / n
    return {"test_samples": n,
            "teacher_max_abs_logit_diff": float(np.abs(a["teacher_logits"] - b["teacher_logits"]).max()),
            "teacher_top1_agreement": float((a["teacher_logits"].argmax(1) == b["teacher_logits"].argmax(1)).mean()),
            "student_accuracy_diff": diff, "student_top1_agreement": float((pa == pb).mean()),
            "paired_standard_error": se,
            "rule": "|accuracy(pt) - accuracy(onnx)| <= 2 x sqrt(discordant predictions) / n (McNemar's SE)"}


def verdict(comparison: dict) -> str:
    """Whether the two students (state-dict and ONNX teacher) score the same within twice the paired SE."""
    diff, se = comparison["student_accuracy_diff"], comparison["paired_standard_error"]
    within = abs(diff) <= 2 * se
    return (f"the same student {'within' if within else 'NOT within'} noise: {100 * diff:+.2f} points "
            f"(2 x paired SE {200 * se:.2f})")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t_start = time.perf_counter()
    recorder = Recorder(quick=args.quick, seeds=[0])

    def say(message: str) -> None:
        print(f"[{time.perf_counter() - t_start:6.0f}s] {message}", flush=True)

    if args.quick:
        args.data = tiny_images(Path(args.cache_dir))
        args.target = onnx_only_target("x86-cpu", Path(args.cache_dir))
    if not Path(args.data).exists():
        raise SystemExit(f"data {args.data} not found (../shared/datasets/cifar10/cifar10-jpg.tar.gz)")
    pt, onnx, teacher = make_teacher(args, say)
    with tempfile.TemporaryDirectory(prefix="edgekd-teacher-formats-") as tmp:
        runs = {}
        for name, path, arch in (("state_dict", pt, ARCH), ("onnx", onnx, None)):
            say(f"build with the {name} teacher ({path.name})")
            runs[name] = build(args, path, arch, Path(tmp) / name, Path(tmp) / f"cache-{name}")
            say(f"  {json.dumps(summary(runs[name])['student'])}")
        result = compare(runs["state_dict"], runs["onnx"])
    out = {"benchmark": "teacher_formats", "data": args.data, "max_train": args.max_train, "target": args.target,
           "student_epochs": args.epochs, "teacher_training": teacher,
           "builds": {name: summary(run) for name, run in runs.items()}, "comparison": result}
    out = stamped(out, verdict(result), recorder.finish())
    write_json(args.out, out)
    print(f"{'teacher file':<12} {'teacher acc':>11} {'student fp32':>12} {'shipped':>8} {'wall s':>7}")
    for name, s in out["builds"].items():
        print(f"{name:<12} {s['teacher']['accuracy']:>11.4f} {s['student']['accuracy_fp32']:>12.4f} "
              f"{s['student']['accuracy_shipped']:>8.4f} {s['wall_s']:>7.0f}")
    print(f"students: diff {100 * result['student_accuracy_diff']:+.2f} points, paired SE "
          f"{100 * result['paired_standard_error']:.2f}, agreement {result['student_top1_agreement']:.4f} -> "
          f"{out['verdict']}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
