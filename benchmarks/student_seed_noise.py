"""How far does the rpi4 Fashion-MNIST student move with its training seed alone — and is KD's gain larger?

    python benchmarks/student_seed_noise.py --teacher CACHE/teachers/teacher-XXXX.pt --seeds 0,1,2
    python benchmarks/student_seed_noise.py --teacher T.pt --teacher-arch teacher_resnet    # a build's --teacher-arch
    python benchmarks/student_seed_noise.py --quick --out /tmp/s.json   # digits, a 1-epoch teacher trained here

``benchmarks/build_time.py`` compares single builds: one seed each. Two builds that differed only in the torch
thread count (same teacher, seed, initial weights) scored 0.9266 vs 0.9215 for the student alone, so a single build
cannot tell a default change from noise. This trains what ``edgekd build --target rpi4 --baseline`` trains after its
teacher — the KD student and the same student alone, side by side, the build's defaults (8 epochs, KD 0.7 / CE 0.3
at T=4, the CPU fast path) — from one fixed teacher (the default teacher's state_dict a build cached, loaded with
``weights_only``; ``--teacher-arch`` when the build named another one) and one fixed data split (seed 0, as the
build's default), once per student seed (initial weights and batch order). The student is the one the build picks
for that teacher (rpi4 caps it at 1/10 of the teacher's MACs). Each model's test accuracy is scored once. Writes
``benchmarks/results/student_seed_noise_<teacher arch>.json``: per seed, and mean / sample sd of KD, alone and the
paired gain. About 11 minutes per seed on a 2-core AVX2 host for teacher_resnet's 5 M-MAC student, 19 for
teacher_cnn's 10.7 M-MAC one. Each seed's row carries its own provenance block (``--append`` may add seeds measured
elsewhere); the verdict is computed from the rows by :func:`verdict`.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))

from _paths import shared_dataset  # noqa: E402
from _provenance import Recorder, appended, results_path  # noqa: E402

from edgekd.data import load_dataset  # noqa: E402
from edgekd.distill.side_by_side import train_side_by_side  # noqa: E402
from edgekd.distill.trainer import TrainConfig, accuracy, train  # noqa: E402
from edgekd.io import atomic_write, write_json  # noqa: E402
from edgekd.models.budget import StudentChoice, count_macs, fit_student_to_budget  # noqa: E402
from edgekd.models.students import build_model  # noqa: E402
from edgekd.models.teachers import default_teacher_arch  # noqa: E402
from edgekd.targets import load_target  # noqa: E402

ROWS = "seeds"
QUICK = {"data": "digits", "seeds": "0", "epochs": 1}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher", help="a default teacher's state_dict cached by a build (required but with --quick)")
    p.add_argument("--teacher-arch", help="its architecture (the build's --teacher-arch; default: the build's default "
                                          "teacher for the data)")
    p.add_argument("--data", default=str(shared_dataset("fashion-mnist")))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--epochs", type=int, default=8, help="the build's default for 54,000 training images")
    p.add_argument("--out", help="default: benchmarks/results/student_seed_noise_<teacher arch>.json (--quick: "
                                 "benchmarks/.cache/quick/)")
    p.add_argument("--append", action="store_true",
                   help="keep the seeds already in --out (same teacher, data and epochs) and add these")
    p.add_argument("--quick", action="store_true", help=f"a check that the script runs: {QUICK}, a default teacher "
                   "trained here for 1 epoch when --teacher is not given")
    args = p.parse_args(argv)
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    elif not args.teacher:
        p.error("--teacher is required (a default teacher's state_dict cached by a build)")
    return args


def quick_teacher(data, arch: str, folder: Path) -> str:
    """--quick without --teacher: the default teacher trained for one epoch, saved as a build caches it."""
    torch.manual_seed(0)
    model = train(build_model(arch, data.input_shape, data.num_classes), data,
                  TrainConfig(epochs=1, seed=0, label="teacher"), progress=False).model
    return str(atomic_write(folder / f"quick-teacher-{arch}.pt", lambda tmp: torch.save(model.state_dict(), tmp)))


def earlier_rows(args: argparse.Namespace, setup: dict) -> list[dict]:
    """With --append, the rows of an earlier run of the same setup; any other file is an error, not a merge."""
    if not args.append or not Path(args.out).is_file():
        return []
    earlier = json.loads(Path(args.out).read_text())
    if {k: earlier.get(k) for k in setup} != setup:
        raise SystemExit(f"--append: {args.out} was measured with another teacher, data or epochs")
    return earlier["seeds"]


def one_seed(data, teacher: torch.nn.Module, student: StudentChoice, seed: int, epochs: int) -> dict:
    config = TrainConfig(epochs=epochs, seed=seed, fast=True, label="student (KD)")
    models = []
    for _ in range(2):
        torch.manual_seed(seed)  # the KD and the alone student start from the same weights, as in the build
        models.append(student.build(data.input_shape, data.num_classes))
    t0 = time.perf_counter()
    kd, alone = train_side_by_side(
        functools.partial(train, models[0], data, config, teacher=teacher, progress=False),
        functools.partial(train, models[1], data, dataclasses.replace(config, label="student (alone)"),
                          progress=False))
    row = {"seed": seed, "wall_s": round(time.perf_counter() - t0, 1)}
    for name, result in (("kd", kd), ("alone", alone)):
        row[name] = {"val": round(accuracy(result.model, data.x_val, data.y_val), 4),
                     "test": round(accuracy(result.model, data.x_test, data.y_test), 4),
                     "best_epoch": result.best_epoch}
    row["gain"] = round(row["kd"]["test"] - row["alone"]["test"], 4)
    return row


def summary(rows: list[dict]) -> dict:
    def stats(values: list[float]) -> dict:
        sd = statistics.stdev(values) if len(values) > 1 else None
        return {"mean": round(statistics.fmean(values), 4), "sd": None if sd is None else round(sd, 4),
                "min": min(values), "max": max(values)}

    return {"kd_test": stats([r["kd"]["test"] for r in rows]), "alone_test": stats([r["alone"]["test"] for r in rows]),
            "gain_test": stats([r["gain"] for r in rows])}


def verdict(rows: list[dict]) -> str:
    """KD's paired test gain over the student alone across the seeds, against its seed-to-seed spread."""
    gain = summary(rows)["gain_test"]
    ahead = sum(r["gain"] > 0 for r in rows)
    spread = "" if gain["sd"] is None else f" (sd {100 * gain['sd']:.2f})"
    return f"KD {100 * gain['mean']:+.2f} test points vs alone over {len(rows)} seed(s){spread}; ahead in {ahead}"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    data = load_dataset(args.data, seed=0)
    args.teacher_arch = args.teacher_arch or default_teacher_arch(data.input_shape)
    args.out = args.out or str(results_path(f"student_seed_noise_{args.teacher_arch}", args.quick))
    args.teacher = args.teacher or quick_teacher(data, args.teacher_arch, Path(args.out).parent)
    teacher = build_model(args.teacher_arch, data.input_shape, data.num_classes)
    teacher.load_state_dict(torch.load(args.teacher, map_location="cpu", weights_only=True))
    teacher.eval()
    teacher_test = accuracy(teacher, data.x_test, data.y_test)
    student = fit_student_to_budget(data.input_shape, data.num_classes, load_target("rpi4").student_budget,
                                    count_macs(teacher, data.input_shape))  # the rpi4 build's student
    print(f"teacher {Path(args.teacher).name}: test {teacher_test:.4f}; {len(data.y_train)} train images")
    setup = {"data": args.data, "epochs": args.epochs,
             "teacher": {"file": Path(args.teacher).name, "arch": args.teacher_arch, "test": round(teacher_test, 4)}}
    rows = earlier_rows(args, setup)
    for seed in (int(s) for s in args.seeds.split(",")):
        recorder = Recorder(quick=args.quick, seeds=[seed])
        rows = [r for r in rows if r["seed"] != seed]
        rows.append(one_seed(data, teacher, student, seed, args.epochs))
        provenance = recorder.finish()
        rows[-1]["provenance"] = provenance.model_dump()
        r = rows[-1]
        print(f"seed {seed}: KD {r['kd']['test']:.4f}  alone {r['alone']['test']:.4f}  gain {r['gain']:+.4f}  "
              f"({r['wall_s']:.0f} s)", flush=True)
    rows.sort(key=lambda r: r["seed"])
    result = {**setup, "train_images": len(data.y_train),
              "student": {"family": student.family, "config": student.config}, "seeds": rows, "summary": summary(rows)}
    result = appended(result, verdict(rows), provenance)
    print(json.dumps(result["summary"], indent=1))
    write_json(args.out, result)
    print(f"wrote {args.out}: {result['verdict']}")


if __name__ == "__main__":
    main()
