"""Does distillation earn its name? CIFAR-10 at the rpi4 student budget: teacher, student alone, and the student
taught by each distillation method (cached and consistent teaching), over several seeds.

    python benchmarks/kd_quality.py                      # all 50,000 training images, epochs sized to 40 minutes
    python benchmarks/kd_quality.py --budget-minutes 90  # more epochs, same data
    python benchmarks/kd_quality.py --quick --out /tmp/kd.json   # a few thousand images, 1 epoch, 1 seed

Prints every choice, the plan (epochs scaled to ``--budget-minutes`` from a timing of this machine) and a table;
writes ``benchmarks/results/kd_quality.json`` (keys: ``teacher``, ``student``, ``alone``, ``methods``,
``selected_on_val``, ``plan``, ``provenance``, and ``verdict``, computed from the rows by :func:`verdict`). The data
is edgekd's ImageFolder reader on the CIFAR-10 JPEG archive: the training folder is split into train and validation
(every choice: best epoch, selected method), the test folder is scored once per model. Everything trains with the
same augmentation (random crop + flip by default), the student alone included. ``kd`` uses cached teaching (teacher
outputs once, on un-augmented images), ``kd-consistent`` runs the teacher on the student's augmented view each batch
(Beyer et al., CVPR 2022); the other losses use ``--teaching`` (default: edgekd's ``DEFAULT_TEACHING``). Epoch-time
ratios are KD / alone, from runs interleaved in this process, so load drifts hit every method alike.

The teacher is ``teacher_cnn`` widths (32,64,128) (~39 M MACs at 32x32), trained here (and cached under the
git-ignored ``benchmarks/.cache/``, keyed by its configuration and the data; the script says when it reuses it).
The student budget is the rpi4 target's, capped at 1/10 of this teacher's MACs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))
sys.path.insert(0, str(ROOT))

from _provenance import OUT_HELP, Recorder, results_path, stamped  # noqa: E402

from edgekd.data import load_dataset  # noqa: E402
from edgekd.distill.augment import DEFAULT_TEACHING, TEACHING_MODES  # noqa: E402
from edgekd.distill.trainer import TrainConfig, accuracy, train  # noqa: E402
from edgekd.io import atomic_write, write_json  # noqa: E402
from edgekd.models.budget import count_macs, count_params, fit_student_to_budget  # noqa: E402
from edgekd.models.students import build_model  # noqa: E402
from edgekd.targets import load_target  # noqa: E402

CIFAR = Path("shared") / "datasets" / "cifar10" / "cifar10-jpg.tar.gz"
# ../shared/datasets from the project root (or from any folder above it, e.g. a git worktree's)
DEFAULT_DATA = next((p / CIFAR for p in ROOT.parents if (p / CIFAR).exists()), ROOT.parent.parent / CIFAR)

# name -> (loss weights, per-loss options, teaching; None: --teaching). Features default to each model's trunk.
METHODS: dict[str, tuple[dict[str, float], dict[str, dict], str | None]] = {
    "kd": ({"kd": 0.7, "ce": 0.3}, {}, "cached"),
    "kd-consistent": ({"kd": 0.7, "ce": 0.3}, {}, "consistent"),
    "dkd": ({"dkd": 0.5, "ce": 0.5}, {"dkd": {"alpha": 1.0, "beta": 4.0}}, None),
    "kd+hint": ({"kd": 0.5, "hint": 0.3, "ce": 0.2}, {}, None),
    "kd+at": ({"kd": 0.6, "at": 0.2, "ce": 0.2}, {}, None),
    "kd+rkd": ({"kd": 0.6, "rkd": 0.2, "ce": 0.2}, {}, None),
}
TEACHER_SHARE = 0.25  # of the budget, when the teacher must be trained (not found in the cache)
QUICK = {"max_train": 3000, "epochs": 1, "seeds": 1, "teacher_epochs": 1}
ROWS = ("methods", "alone", "student", "teacher")  # verdict(*[doc[key] for key in ROWS])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(DEFAULT_DATA), help="CIFAR-10 archive/folder (or any edgekd image data)")
    p.add_argument("--max-train", type=int, help="train+val images drawn from the training set (default: all)")
    p.add_argument("--budget-minutes", type=float, default=40.0,
                   help="wall-clock budget: student (and, if not cached, teacher) epochs are scaled to fit it")
    p.add_argument("--epochs", type=int, help="student epochs (default: as many as fit the budget)")
    p.add_argument("--teacher-epochs", type=int, help=f"default: {TEACHER_SHARE:.0%} of the budget")
    p.add_argument("--teacher-widths", default="32,64,128", help="teacher_cnn widths")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seeds", type=int, help="default 3 (--quick: 1)")
    p.add_argument("--methods", default=",".join(METHODS), help=f"subset of {', '.join(METHODS)}")
    p.add_argument("--augment", default="crop,flip", help="train-time augmentation for every model ('' for none)")
    p.add_argument("--teaching", default=DEFAULT_TEACHING, choices=TEACHING_MODES,
                   help="teaching mode of the methods that don't name one (all but kd and kd-consistent)")
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads; 0 (default): 2 (the budget's cores) on a quiet machine (1-minute load "
                        "average < 1), else 1 (measured: on oversubscribed cores 2 threads ran ~10x slower)")
    p.add_argument("--quick", action="store_true", help=f"validation run: {QUICK}, no budget scaling")
    p.add_argument("--cache-dir", default=str(ROOT / ".cache"), help="where the trained teacher is cached")
    p.add_argument("--out", help=OUT_HELP)
    args = p.parse_args(argv)
    args.out = args.out or str(results_path("kd_quality", args.quick))
    if args.quick:
        for k, v in QUICK.items():
            setattr(args, k, v if getattr(args, k) is None else getattr(args, k))
    args.seeds = args.seeds or 3
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown:
        p.error(f"unknown methods {unknown}; known: {', '.join(METHODS)}")
    args.augment = [a.strip() for a in args.augment.split(",") if a.strip()]
    return args


def default_recipe() -> argparse.Namespace:
    """This script's default teacher recipe (batch 64, crop + flip, cached in benchmarks/.cache), for the other
    benchmarks that distil from the same kind of teacher."""
    return parse_args([])


def teacher_config(args, epochs: int) -> TrainConfig:
    return TrainConfig(epochs=epochs, batch_size=args.batch_size, seed=0, label="teacher", augment=args.augment)


def teacher_path(args, data, widths: tuple[int, ...], epochs: int) -> Path:
    config = teacher_config(args, epochs)
    key = json.dumps({"data": data.fingerprint(), "arch": "teacher_cnn", "widths": list(widths), "epochs": epochs,
                      "batch_size": config.batch_size, "lr": config.lr, "seed": 0, "augment": list(args.augment)},
                     sort_keys=True)
    return Path(args.cache_dir) / f"teacher-{hashlib.sha256(key.encode()).hexdigest()[:16]}.pt"


def teacher_for(args, data, widths: tuple[int, ...], epochs: int, say) -> tuple[torch.nn.Module, dict]:
    """The teacher, trained once and then reused from the cache (keyed by data and configuration)."""
    path = teacher_path(args, data, widths, epochs)
    torch.manual_seed(0)
    model = build_model("teacher_cnn", data.input_shape, data.num_classes, widths=widths)
    info = {"epochs": epochs, "cache": str(path)}
    if path.exists():
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        model.eval()
        say(f"teacher: REUSED from cache {path} (trained earlier with this config)")
        return model, {**info, "cached": True, "train_time_s": None,
                       "val_accuracy": accuracy(model, data.x_val, data.y_val)}
    say(f"teacher: training teacher_cnn widths {widths} for {epochs} epochs (cached afterwards at {path.name})")
    result = train(model, data, teacher_config(args, epochs), progress=False)
    atomic_write(path, lambda p: torch.save(result.model.state_dict(), p))
    return result.model, {**info, "cached": False, "train_time_s": round(result.train_time_s, 1),
                          "val_accuracy": result.best_val_accuracy, "best_epoch": result.best_epoch}


def _rate(step, batch: int, repeats: int = 4) -> float:
    """Samples per second of ``step`` (after one warm-up call)."""
    step()
    t0 = time.perf_counter()
    for _ in range(repeats):
        step()
    return batch * repeats / (time.perf_counter() - t0)


def measure_rates(data, widths, choice, batch_size: int) -> dict[str, float]:
    """This machine's throughput now (samples/s) for the three kinds of work the runs are made of."""
    x = torch.from_numpy(data.x_train[:batch_size].copy())
    y = torch.from_numpy(data.y_train[:batch_size].copy())
    torch.manual_seed(0)
    teacher = build_model("teacher_cnn", data.input_shape, data.num_classes, widths=widths)
    student = choice.build(data.input_shape, data.num_classes)

    def train_step(model):
        opt = torch.optim.AdamW(model.parameters())

        def step():
            opt.zero_grad()
            F.cross_entropy(model.train()(x), y).backward()
            opt.step()

        return step

    def forward():
        with torch.inference_mode():
            teacher.eval()(x)

    return {"student_train": _rate(train_step(student), len(y)), "teacher_train": _rate(train_step(teacher), len(y)),
            "teacher_forward": _rate(forward, len(y))}


def plan_epochs(args, data, widths, choice, say) -> dict:
    """Student and teacher epochs that fit ``--budget-minutes`` on this machine (data is never cut)."""
    n_train, n_eval = len(data.y_train), len(data.y_val) + len(data.y_test)
    rates = measure_rates(data, widths, choice, args.batch_size)
    teacher_epoch_s = n_train / rates["teacher_train"] + len(data.y_val) / rates["teacher_forward"]
    teacher_epochs = args.teacher_epochs
    if teacher_epochs is None:
        teacher_epochs = max(1, int(TEACHER_SHARE * args.budget_minutes * 60 / teacher_epoch_s))
        if teacher_path(args, data, widths, teacher_epochs).exists():
            say(f"plan: a cached teacher for {teacher_epochs} epochs exists; pass --teacher-epochs to pin it")
    cached = teacher_path(args, data, widths, teacher_epochs).exists()
    teacher_s = 0.0 if cached else teacher_epochs * teacher_epoch_s
    # inference (val/test scoring) runs at ~2-3x the training rate; 2 keeps the estimate on the safe side
    student_epoch_s = n_train / rates["student_train"] + len(data.y_val) / (2 * rates["student_train"])
    epoch_s, fixed_s = student_epoch_s, n_eval / (2 * rates["student_train"])  # alone
    for m in args.methods:
        consistent = (METHODS[m][2] or args.teaching) == "consistent" and args.augment
        epoch_s += student_epoch_s + (n_train / rates["teacher_forward"] if consistent else 0.0)
        fixed_s += n_eval / (2 * rates["student_train"]) + (0.0 if consistent else n_train / rates["teacher_forward"])
    left = args.budget_minutes * 60 - teacher_s - args.seeds * fixed_s
    fitted = max(1, int(left / (args.seeds * epoch_s)))
    epochs = args.epochs or fitted
    estimate = teacher_s + args.seeds * (fixed_s + epochs * epoch_s)
    plan = {"budget_minutes": args.budget_minutes, "rates_samples_per_s": {k: round(v, 1) for k, v in rates.items()},
            "teacher_epochs": teacher_epochs, "teacher_cached": cached, "student_epochs": epochs,
            "student_epochs_fitted": fitted, "estimated_minutes": round(estimate / 60, 1),
            "scaled": "epochs only; all training images are used"}
    say(f"plan: measured {plan['rates_samples_per_s']} samples/s; budget {args.budget_minutes:.0f} min -> teacher "
        f"{teacher_epochs} epochs ({'cached, free' if cached else f'~{teacher_s / 60:.0f} min'}), students "
        f"{epochs} epochs{'' if args.epochs else ' (scaled to fit)'} x {args.seeds} seeds x "
        f"{1 + len(args.methods)} rows, estimated {estimate / 60:.0f} min (data not cut: {n_train} train images)")
    if estimate > 1.1 * args.budget_minutes * 60:
        say(f"plan: WARNING even {epochs} epoch(s) exceed the budget; raise --budget-minutes or --threads")
    return plan


def run_rows(args, data, teacher, choice, epochs: int, say) -> dict[str, list[dict]]:
    """Every (seed, row) run, interleaved so machine load drifts hit every method alike; test scored once each."""
    runs: dict[str, list[dict]] = {"alone": [], **{m: [] for m in args.methods}}
    for seed in range(args.seeds):
        for name in ["alone", *args.methods]:
            weights, options, teaching = ({"ce": 1.0}, {}, None) if name == "alone" else METHODS[name]
            config = TrainConfig(epochs=epochs, batch_size=args.batch_size, seed=seed, loss_weights=weights,
                                 loss_options=options, label=name, augment=args.augment,
                                 teaching=teaching or args.teaching)
            torch.manual_seed(seed)
            student = choice.build(data.input_shape, data.num_classes)
            result = train(student, data, config, teacher=None if name == "alone" else teacher, progress=False)
            acc = accuracy(result.model, data.x_test, data.y_test)
            epoch_s = statistics.median(h["epoch_time_s"] for h in result.history)
            runs[name].append({"seed": seed, "accuracy": acc, "val_accuracy": result.best_val_accuracy,
                               "train_time_s": result.train_time_s, "epoch_time_s": epoch_s,
                               "teacher_time_s": result.teacher_time_s, "best_epoch": result.best_epoch,
                               "teacher_outputs": result.details.get("teacher_outputs")})
            say(f"seed {seed} {name:<13} val {result.best_val_accuracy:.4f} test {acc:.4f}  epoch {epoch_s:6.1f}s"
                f"  total {result.train_time_s:7.1f}s  teacher {result.teacher_time_s:6.1f}s")
    return runs


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarize(args, runs, teacher_acc: float) -> tuple[dict, dict, str]:
    """Per-method statistics against the alone baseline and the teacher; the method chosen on validation."""
    alone = runs["alone"]
    alone_acc = mean_std([r["accuracy"] for r in alone])
    alone_epoch = statistics.fmean(r["epoch_time_s"] for r in alone)
    alone_train = statistics.fmean(r["train_time_s"] for r in alone)
    alone_json = {"accuracy_mean": alone_acc[0], "accuracy_std": alone_acc[1],
                  "val_accuracy_mean": statistics.fmean(r["val_accuracy"] for r in alone),
                  "epoch_time_s_mean": alone_epoch, "train_time_s_mean": alone_train, "runs": alone}
    gap = teacher_acc - alone_acc[0]
    methods = {}
    for m in args.methods:
        rs = runs[m]
        acc = mean_std([r["accuracy"] for r in rs])
        gains = [100 * (r["accuracy"] - a["accuracy"]) for r, a in zip(rs, alone, strict=True)]  # paired by seed
        weights, options, teaching = METHODS[m]
        methods[m] = {
            "accuracy_mean": acc[0], "accuracy_std": acc[1],
            "val_accuracy_mean": statistics.fmean(r["val_accuracy"] for r in rs),
            "epoch_time_ratio_vs_alone": statistics.fmean(r["epoch_time_s"] for r in rs) / alone_epoch,
            "train_time_ratio_vs_alone": statistics.fmean(r["train_time_s"] for r in rs) / alone_train,
            "gain_vs_alone_points": statistics.fmean(gains), "gain_vs_alone_points_std": mean_std(gains)[1],
            "ratio_to_teacher": acc[0] / teacher_acc,
            "gap_closed": (acc[0] - alone_acc[0]) / gap if gap > 0 else None,
            "teaching": (teaching or args.teaching) if args.augment else "cached (no augmentation)",
            "train_time_s_mean": statistics.fmean(r["train_time_s"] for r in rs),
            "loss_weights": weights, "loss_options": options, "runs": rs,
        }
    candidates = {"alone": alone_json["val_accuracy_mean"], **{m: v["val_accuracy_mean"] for m, v in methods.items()}}
    return alone_json, methods, max(candidates, key=candidates.get)


def print_table(teacher_acc: float, alone: dict, methods: dict, selected: str) -> None:
    header = f"{'model':<14} {'test acc':>8} {'± std':>7} {'val acc':>8} {'gain pts':>9} {'/teacher':>8} " \
             f"{'gap closed':>10} {'ep ratio':>8} {'teaching':>10}"
    print("\n" + header + "\n" + "-" * len(header))
    print(f"{'teacher':<14} {teacher_acc:8.4f}")
    print(f"{'alone':<14} {alone['accuracy_mean']:8.4f} {alone['accuracy_std']:7.4f} "
          f"{alone['val_accuracy_mean']:8.4f} {'':>9} {alone['accuracy_mean'] / teacher_acc:8.3f} {'':>10} "
          f"{1.0:8.2f}")
    for m, v in methods.items():
        closed = "" if v["gap_closed"] is None else f"{100 * v['gap_closed']:9.0f}%"
        print(f"{m:<14} {v['accuracy_mean']:8.4f} {v['accuracy_std']:7.4f} {v['val_accuracy_mean']:8.4f} "
              f"{v['gain_vs_alone_points']:+9.2f} {v['ratio_to_teacher']:8.3f} {closed:>10} "
              f"{v['epoch_time_ratio_vs_alone']:8.2f} {v['teaching'][:10]:>10}")
    print(f"\nselected on validation: {selected}")


def verdict(methods: dict, alone: dict, student: dict, teacher: dict) -> dict:
    """The done-when of distillation, from the method rows against the alone row and the two models' MACs."""
    if not methods:
        return {}
    best = max(methods, key=lambda m: methods[m]["accuracy_mean"])
    b = methods[best]
    spread = max(b["accuracy_std"], alone["accuracy_std"])
    return {
        "best_method_on_test": best, "gain_points": b["gain_vs_alone_points"],
        "gain_ge_0_5_points_and_above_spread": b["gain_vs_alone_points"] >= 0.5 and
        b["accuracy_mean"] - alone["accuracy_mean"] > spread,
        "ratio_to_teacher_ge_0_97": b["ratio_to_teacher"] >= 0.97,
        "macs_le_tenth_of_teacher": student["macs"] <= teacher["macs"] / 10,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads <= 0:
        args.threads = min(2, os.cpu_count() or 1) if os.getloadavg()[0] < 1.0 else 1
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    recorder = Recorder(quick=args.quick, seeds=list(range(args.seeds)))

    def say(message: str) -> None:
        print(f"[{time.perf_counter() - t_start:6.0f}s] {message}", flush=True)

    if not Path(args.data).exists():
        print(f"error: data {args.data} not found; pass --data (the CIFAR-10 archive, see "
              "../shared/datasets/README.md)", file=sys.stderr)
        return 2
    data = load_dataset(args.data, seed=0, max_train=args.max_train)
    widths = tuple(int(w) for w in args.teacher_widths.split(","))
    teacher_macs = count_macs(build_model("teacher_cnn", data.input_shape, data.num_classes, widths=widths),
                              data.input_shape)
    budget = load_target("rpi4").student_budget
    choice = fit_student_to_budget(data.input_shape, data.num_classes, budget, teacher_macs)
    choices = {
        "data": f"{args.data}: {len(data.y_train)} train / {len(data.y_val)} val (from the training folder), "
                f"{len(data.y_test)}-image test folder scored once per model",
        "augment": f"{args.augment or 'none'} for every model (teacher, alone and KD alike)",
        "teaching": f"kd: cached, kd-consistent: consistent, others: {args.teaching}",
        "students": f"batch {args.batch_size}, AdamW lr 3e-3 one-cycle, T=4, seeds 0..{args.seeds - 1}; "
                    "best-val-epoch weights; the method is selected on validation accuracy",
        "timing": "epoch_time_ratio_vs_alone = KD epoch time / alone epoch time (median epoch per run, mean over "
                  "seeds; runs interleaved); cached teaching's one-off teacher pass is in train_time_ratio_vs_alone "
                  f"only; torch threads {args.threads} (load average {os.getloadavg()[0]:.1f} at start)",
    }
    for k, v in choices.items():
        say(f"choice ({k}): {v}")
    if args.quick:
        plan = {"quick": True, "teacher_epochs": args.teacher_epochs, "student_epochs": args.epochs,
                "scaled": "nothing (--quick)"}
        say(f"plan: --quick {QUICK}: a validation run, not a result")
    else:
        plan = plan_epochs(args, data, widths, choice, say)
    teacher, teacher_info = teacher_for(args, data, widths, plan["teacher_epochs"], say)
    teacher_acc = accuracy(teacher, data.x_test, data.y_test)
    say(f"teacher: test accuracy {teacher_acc:.4f}, {teacher_macs / 1e6:.2f} M MACs, {count_params(teacher)} params")
    say(f"student: {choice.family} {choice.config}: {choice.macs / 1e6:.2f} M MACs ({choice.macs / teacher_macs:.3f}"
        f" of the teacher), {choice.params} params (rpi4 budget {budget.max_params} params, {budget.max_macs} MACs)")
    runs = run_rows(args, data, teacher, choice, plan["student_epochs"], say)
    alone, methods, selected = summarize(args, runs, teacher_acc)
    print_table(teacher_acc, alone, methods, selected)
    result = {
        "teacher": {"accuracy": teacher_acc, "macs": teacher_macs, "params": count_params(teacher),
                    "arch": "teacher_cnn", "widths": list(widths), **teacher_info},
        "student": {"macs": choice.macs, "params": choice.params, "family": choice.family, "config": choice.config},
        "alone": alone, "methods": methods, "selected_on_val": selected, "choices": choices, "plan": plan,
        "settings": vars(args), "threads": torch.get_num_threads(),
    }
    result = stamped(result, verdict(*[result[key] for key in ROWS]), recorder.finish())
    write_json(args.out, result)
    say(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
