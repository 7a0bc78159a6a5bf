"""Does the fast path (channels_last + bf16 autocast) cost the default teacher accuracy? Full data, full schedule.

    python benchmarks/teacher_precision.py --arch teacher_cnn --epochs 6 --mode fast     # ~16 min on 2 AMD cores
    python benchmarks/teacher_precision.py --arch teacher_cnn --epochs 6 --mode eager    # fp32, no fast path
    python benchmarks/teacher_precision.py --quick --out /tmp/t.json                     # digits, 1 epoch

Trains one teacher exactly as ``edgekd build`` trains the default one (``stages.teacher.teacher_config``: batch 64,
AdamW, one-cycle LR, best epoch on the validation split) on Fashion-MNIST (all 54,000 training images), then scores
the test split once. ``--mode fast`` lets the trainer pick its measured plan (bf16 autocast on CPUs with AVX-512
BF16/AMX), ``--mode eager`` trains in fp32. Each run is stored in ``benchmarks/results/teacher_precision.json``
under ``ARCH/EPOCHS/MODE`` with its own provenance block (CPU, load, commit): run the two modes back to back on a
quiet machine. The verdict, fast minus eager per pair of runs that differ only in mode, is computed from the runs
by :func:`verdict` (a pair's speed says "invalid: host busy" when either run's host was busier than QUIET_LOAD).
``train_throughput.json``'s equal-accuracy check (2 epochs, 300 validation images) was too small to see a
fraction of a point; the 10,000-image test split here has a binomial SE of ~0.25 points.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))

from _paths import shared_dataset  # noqa: E402
from _provenance import HOST_BUSY, Recorder, add_quick_and_out, appended, parse_quick  # noqa: E402

from edgekd.data.loader import load_dataset  # noqa: E402
from edgekd.distill.trainer import train  # noqa: E402
from edgekd.io import write_text  # noqa: E402
from edgekd.models.students import build_model  # noqa: E402
from edgekd.models.teachers import predict_logits  # noqa: E402
from edgekd.stages.context import BuildOptions  # noqa: E402
from edgekd.stages.teacher import teacher_config  # noqa: E402

QUIET_LOAD = 2.5  # 1-minute load average: training's two threads plus half a core of anyone else's
ROWS = "runs"
QUICK = {"data": "digits", "epochs": 1, "max_train": None}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="teacher_resnet")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--mode", choices=("fast", "eager"), default="fast")
    p.add_argument("--data", default=str(shared_dataset("fashion-mnist")))
    p.add_argument("--augment", default="", help="teacher train-time augmentation, e.g. 'flip' or 'crop,flip' "
                   "(edgekd build --teacher-augment; default none, as the build)")
    p.add_argument("--seed", type=int, default=0, help="weights and data order (the build's --seed)")
    p.add_argument("--max-train", type=int, help="subset, for a quick check of the script")
    add_quick_and_out(p, QUICK)
    return parse_quick(p, argv, "teacher_precision", QUICK)


def augments(args: argparse.Namespace) -> tuple[str, ...]:
    return tuple(a.strip() for a in args.augment.split(",") if a.strip())


def run_key(args: argparse.Namespace) -> str:
    """ARCH/EPOCHS/MODE as before, then +AUGMENTS and /seedN when not the defaults (earlier runs keep their keys)."""
    key = f"{args.arch}/{args.epochs}/{args.mode}"
    key += "".join(f"+{a}" for a in augments(args))
    return key + (f"/seed{args.seed}" if args.seed else "")


def run(args: argparse.Namespace) -> dict:
    data = load_dataset(args.data, max_train=args.max_train)
    torch.manual_seed(args.seed)
    model = build_model(args.arch, data.input_shape, data.num_classes)
    options = BuildOptions(target="rpi4", fast_train=args.mode == "fast", progress=False, seed=args.seed,
                           teacher_augment=augments(args))
    config = teacher_config(options, args.epochs)
    t0 = time.perf_counter()
    result = train(model, data, config, progress=False)
    wall = time.perf_counter() - t0
    test = float((predict_logits(result.model, data.x_test).argmax(1) == data.y_test).mean())
    return {"arch": args.arch, "epochs": args.epochs, "mode": args.mode, "augment": list(augments(args)),
            "seed": args.seed, "train_samples": int(len(data.y_train)),
            "optimisations": result.details.get("optimisations"), "best_val_accuracy": result.best_val_accuracy,
            "best_epoch": result.best_epoch, "test_accuracy": test, "test_samples": int(len(data.y_test)),
            "epoch_time_s": round(result.epoch_time_s, 1), "train_wall_s": round(wall, 1),
            "full_data": args.max_train is None and not args.quick}


def verdict(runs: dict[str, dict]) -> dict[str, str]:
    """Fast minus eager for every pair of runs that differ only in mode: test accuracy points and epoch speed."""
    pairs: dict[tuple, dict[str, dict]] = {}
    for row in runs.values():
        key = (row["arch"], row["epochs"], tuple(row.get("augment", [])), row.get("seed", 0))
        pairs.setdefault(key, {})[row["mode"]] = row
    out = {}
    for (arch, epochs, augment, seed), modes in sorted(pairs.items()):
        if {"fast", "eager"} <= modes.keys():
            fast, eager = modes["fast"], modes["eager"]
            busy = any(r.get("provenance", {}).get("host_busy") for r in (fast, eager))
            speed = HOST_BUSY if busy else f"{eager['epoch_time_s'] / fast['epoch_time_s']:.2f}x eager's epoch speed"
            name = f"{arch}/{epochs}{''.join('+' + a for a in augment)}/seed{seed}"
            out[name] = (f"fast {100 * (fast['test_accuracy'] - eager['test_accuracy']):+.2f} test points vs eager "
                         f"({fast['optimisations']}); {speed}")
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    recorder = Recorder(quick=args.quick, seeds=[args.seed], quiet_load=QUIET_LOAD)
    row = run(args)
    provenance = recorder.finish()
    row["provenance"] = provenance.model_dump()
    path = Path(args.out)
    doc = json.loads(path.read_text()) if path.exists() else {"runs": {}}
    doc.pop("finding", None)  # hand-written in earlier versions of the file; the verdict is computed now
    doc["runs"][run_key(args)] = row
    doc = appended(doc, verdict(doc["runs"]), provenance)
    write_text(path, json.dumps(doc, indent=2, sort_keys=True) + "\n")
    print(f"{args.arch} {args.epochs} epochs {args.mode} ({row['optimisations']}): val {row['best_val_accuracy']:.4f} "
          f"(epoch {row['best_epoch']}), test {row['test_accuracy']:.4f}, {row['epoch_time_s']} s/epoch; wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
