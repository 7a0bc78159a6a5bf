"""How long a first real-data build takes: ``edgekd build --target rpi4 --baseline`` on Fashion-MNIST, per stage.

    python benchmarks/build_time.py                                  # this checkout, all 60,000 images
    python benchmarks/build_time.py --repo /path/to/older/checkout   # the same build with another edgekd
    python benchmarks/build_time.py --device cuda [--nproc 8]        # on this host's GPU(s), torchrun for N > 1
    python benchmarks/build_time.py --max-train 2000 --epochs 1 --teacher-epochs 1 --runs 20 --label smoke
    python benchmarks/build_time.py --quick --out /tmp/b.json    # digits, a few epochs: checks the script runs

Runs the CLI in a fresh process, exactly as a new user would (default teacher, default epochs, a fresh teacher
cache so the teacher is trained, not loaded), and reads the run's report.json: ``wall_s`` per stage
(``stage_times_s``), the whole build, the test accuracies of the teacher, the KD student and the student trained
alone, and which training optimisations were used. Each run is appended to ``benchmarks/results/build_time.json``
under ``runs`` (keyed by ``--label``), so "today's build" (``--repo`` at the old commit) and this one sit side by
side. Each run carries its own provenance block (load before and after, CPU, commit, command); the file's
verdict, one line per run computed from the runs by :func:`verdict`, says "invalid: host busy" for a run whose host
was busier than ``QUIET_LOAD``. ``--device cuda`` trains on this host's GPU (the row labelled with the GPU's name,
``--nproc N``: N processes under torchrun, one GPU each); ``--device cpu`` (the default) hides any GPU from the build.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _paths import shared_dataset
from _provenance import Recorder, add_quick_and_out, appended, judged, parse_quick

from edgekd.io import write_text

ROOT = Path(__file__).resolve().parent
DEFAULT_DATA_NAME = "fashion-mnist"
QUIET_LOAD = 2.5  # 1-minute load average: the build's two training threads plus half a core of anyone else's
ROWS = "runs"
# int8 parity needs a student that is sure of its answers: after 1 epoch on digits it is not (the build stops, exit 2).
# The plumbing, not the number (the slow test runs it): the student chosen by MACs (the accuracy-ranked search was
# 40 % of the quick run's CPU, the same student either way; rpi4 with ONNX only saved nothing: 124 s CPU vs 121 s).
QUICK = {"data": "digits", "max_train": None, "epochs": 8, "teacher_epochs": 4, "runs": 20, "label": "quick",
         "extra": "--selection mac"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repo", default=str(ROOT.parent), help="edgekd checkout to run (default: this one)")
    p.add_argument("--data", default=str(shared_dataset(DEFAULT_DATA_NAME)))
    p.add_argument("--target", default="rpi4")
    p.add_argument("--label", help="name of this run in the JSON (default: the checkout's commit)")
    p.add_argument("--max-train", type=int, help="subset, for a quick check of the script (omit for the real run)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--teacher-epochs", type=int)
    p.add_argument("--runs", type=int, help="benchmark runs per artifact (the CLI's default when omitted)")
    p.add_argument("--extra", default="", help="more CLI flags, space separated (e.g. --no-fast-train)")
    p.add_argument("--cache-dir", help="teacher cache to use and keep (default: a fresh temporary one, so the teacher "
                                       "is trained); a second run with the same folder reuses that teacher, to "
                                       "compare the later stages (e.g. --extra=--no-side-by-side)")
    p.add_argument("--python", default=sys.executable)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="train on the CPU (any GPU hidden from the build) or on this host's GPU(s)")
    p.add_argument("--nproc", type=int, default=1, help="processes under torchrun (--standalone), one GPU each")
    add_quick_and_out(p, QUICK)
    return parse_quick(p, argv, "build_time", QUICK)


def commit_of(repo: str) -> str:
    proc = subprocess.run(["git", "-C", repo, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return proc.stdout.strip() or "unknown"


def device_of(args: argparse.Namespace) -> dict:
    """What the build trains on, for the row and its default label; --device cuda without a GPU stops here."""
    if args.device == "cpu":
        from edgekd.distill.fast import cpu_name

        return {"kind": "cpu", "name": cpu_name(), "processes": args.nproc}
    import torch

    if not torch.cuda.is_available() or torch.cuda.device_count() < args.nproc:
        raise SystemExit(f"--device cuda --nproc {args.nproc}: this host has {torch.cuda.device_count()} GPU(s)")
    return {"kind": "cuda", "name": torch.cuda.get_device_name(0), "processes": args.nproc,
            "torch": torch.__version__, "cuda": torch.version.cuda}


def build_command(args: argparse.Namespace, out: Path, cache: Path) -> list[str]:
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(args.nproc)] \
        if args.nproc > 1 else []
    cmd = [args.python, *launcher, "-m", "edgekd", "build", "--target", args.target, "--data", args.data, "--baseline",
           "--out", str(out), "--cache-dir", str(cache), "--no-progress"]
    for flag, value in (("--max-train", args.max_train), ("--epochs", args.epochs),
                        ("--teacher-epochs", args.teacher_epochs), ("--runs", args.runs)):
        if value is not None:
            cmd += [flag, str(value)]
    return cmd + args.extra.split()


def run_build(args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory(prefix="edgekd-build-time-") as tmp:
        out, cache = Path(tmp) / "run", Path(args.cache_dir or Path(tmp) / "cache")
        cmd = build_command(args, out, cache)
        env = {**os.environ, "PYTHONPATH": args.repo, "EDGEKD_CACHE": str(cache)}
        if args.device == "cpu":
            env["CUDA_VISIBLE_DEVICES"] = ""  # a CPU row stays one on a GPU host
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=args.repo, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode not in (0, 1):  # 1: built, gate failed (the timing still counts)
            raise SystemExit(f"build failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
        report = json.loads((out / "report.json").read_text())
    return summarise(report, wall, cmd, proc.returncode)


def summarise(report: dict, wall: float, cmd: list[str], rc: int) -> dict:
    student, teacher = report["student"], report["teacher"]

    def epochs(section: dict | None) -> dict | None:
        return None if not section else {k: section.get(k) for k in ("epochs", "epochs_run", "epoch_time_s",
                                                                      "train_time_s", "batch_size")}

    return {
        "command": " ".join(cmd[1:]), "exit_code": rc, "wall_s": round(wall, 1),
        "build_time_s": report.get("build_time_s"), "stage_times_s": report.get("stage_times_s", {}),
        "train_samples": report["data"].get("splits", {}).get("train"),
        "accuracy": {"teacher": teacher.get("accuracy"),
                     "student_kd": student.get("accuracy_before_compression"),
                     "student_shipped": student.get("accuracy"),
                     "student_alone": student.get("accuracy_trained_alone")},
        "teacher": {"arch": teacher.get("arch"), "macs": teacher.get("macs"), "source": teacher.get("source"),
                    "training": epochs(teacher.get("training"))},
        "student": {"family": student.get("family"), "config": student.get("config"), "macs": student.get("macs"),
                    "distillation": epochs(student.get("distillation")),
                    "trained_alone": epochs(student.get("trained_alone"))},
        "training_optimisations": report.get("training_optimisations"),
        "training": report.get("training"),  # world size, backend, device and precision of the students' training
    }


def verdict(runs: dict[str, dict]) -> dict[str, str]:
    """One line per run: its wall time and the KD student's test accuracy against the student trained alone."""
    out = {}
    for label, row in runs.items():
        acc = row["accuracy"]
        gain = ("" if acc.get("student_alone") is None or acc.get("student_kd") is None
                else f"; KD student {100 * (acc['student_kd'] - acc['student_alone']):+.2f} points vs alone")
        line = f"{row['wall_s']:.0f} s wall{gain}"
        out[label] = judged(line, row["provenance"]) if "provenance" in row else f"{line} (no provenance)"
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    recorder = Recorder(quick=args.quick, seeds=[0], quiet_load=QUIET_LOAD)
    device = device_of(args)
    label = args.label or commit_of(args.repo) + ("" if args.device == "cpu" else
                                                  f"-{args.nproc}x-{device['name'].replace(' ', '-')}")
    print(f"building ({label}): {' '.join(build_command(args, Path('OUT'), Path('CACHE')))}", flush=True)
    row = {"label": label, "repo": args.repo, "commit": commit_of(args.repo), "device": device,
           "full_data": args.max_train is None and not args.quick, **run_build(args)}
    provenance = recorder.finish()
    row["provenance"] = provenance.model_dump()
    path = Path(args.out)
    doc = json.loads(path.read_text()) if path.exists() else {"runs": {}}
    doc["runs"][label] = row
    doc = appended(doc, verdict(doc["runs"]), provenance)
    write_text(path, json.dumps(doc, indent=2, sort_keys=True) + "\n")
    times = ", ".join(f"{k} {v:.0f}s" for k, v in row["stage_times_s"].items())
    print(f"{label}: {row['wall_s']:.0f}s wall ({times}); accuracy {row['accuracy']}; wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
