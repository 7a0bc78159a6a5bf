"""Does distillation earn its name? Fashion-MNIST at the rpi4 student budget: teacher, student alone, and the
student taught by each distillation method, over several seeds.

    python benchmarks/kd_quality.py            # default size (see DEFAULTS below; every choice is printed)

Prints a table and writes ``benchmarks/results/kd_quality.json`` (keys: ``teacher``, ``student``, ``alone``,
``methods``; see the issue that introduced it and the table this prints). The teacher is trained
once and cached under the git-ignored ``benchmarks/.cache/``, keyed by its configuration and the data; the
script says when it reuses it. The KD/alone epoch-time ratio is measured in this run, with the teacher's
outputs cached (computed once per training run, reported separately as the teacher pass).

Why the defaults are smaller than "the whole of Fashion-MNIST with the project's default teacher": this machine
is two shared CPU cores. The default ``teacher_cnn`` widths (64,128,256) cost ~116 M MACs and ~10 min/epoch on
the full set, and 3 seeds x (1 + 5 methods) student runs must fit in ~25 minutes. So the teacher here is
``teacher_cnn`` with widths (32,64,128) (~29 M MACs), trained on a class-mixed subset, and students train a few
epochs. The student budget is still the rpi4 target's, capped at 1/10 of this teacher's MACs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))

from edgekd.data import load_dataset  # noqa: E402
from edgekd.distill.trainer import TrainConfig, accuracy, train  # noqa: E402
from edgekd.io import atomic_write, write_json  # noqa: E402
from edgekd.models.budget import count_macs, count_params, fit_student_to_budget  # noqa: E402
from edgekd.models.students import build_model  # noqa: E402
from edgekd.targets import load_target  # noqa: E402

DEFAULT_DATA = ROOT.parent.parent / "shared" / "datasets" / "fashion-mnist"

# name -> (loss weights, per-loss options). Features default to each model's `features` trunk.
METHODS: dict[str, tuple[dict[str, float], dict[str, dict]]] = {
    "kd": ({"kd": 0.7, "ce": 0.3}, {}),
    "dkd": ({"dkd": 0.5, "ce": 0.5}, {"dkd": {"alpha": 1.0, "beta": 4.0}}),
    "kd+hint": ({"kd": 0.5, "hint": 0.3, "ce": 0.2}, {}),
    "kd+at": ({"kd": 0.6, "at": 0.2, "ce": 0.2}, {}),
    "kd+rkd": ({"kd": 0.6, "rkd": 0.2, "ce": 0.2}, {}),
}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(DEFAULT_DATA), help="IDX dir (default ../shared/datasets/fashion-mnist)")
    p.add_argument("--max-train", type=int, default=4000, help="train+val samples drawn from the training set")
    p.add_argument("--teacher-widths", default="32,64,128", help="teacher_cnn widths")
    p.add_argument("--teacher-epochs", type=int, default=8)
    p.add_argument("--epochs", type=int, default=5, help="student epochs (alone and KD alike)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--methods", default=",".join(METHODS), help=f"subset of {', '.join(METHODS)}")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (1: on shared, oversubscribed cores one thread is faster and steadier)")
    p.add_argument("--out", default=str(ROOT / "results" / "kd_quality.json"))
    return p.parse_args()


def teacher_for(data, widths: tuple[int, ...], epochs: int, batch_size: int, say) -> tuple[torch.nn.Module, dict]:
    """The teacher, trained once and then reused from benchmarks/.cache/ (keyed by data and configuration)."""
    config = TrainConfig(epochs=epochs, batch_size=batch_size, seed=0, label="teacher")
    key = json.dumps({"data": data.fingerprint(), "arch": "teacher_cnn", "widths": list(widths), "epochs": epochs,
                      "batch_size": batch_size, "lr": config.lr, "seed": 0}, sort_keys=True)
    path = ROOT / ".cache" / f"teacher-{hashlib.sha256(key.encode()).hexdigest()[:16]}.pt"
    torch.manual_seed(0)
    model = build_model("teacher_cnn", data.input_shape, data.num_classes, widths=widths)
    if path.exists():
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        model.eval()
        say(f"teacher: REUSED from cache {path.relative_to(ROOT.parent)} (trained earlier with this config)")
        return model, {"cached": True, "train_time_s": None, "cache": str(path.relative_to(ROOT.parent))}
    say(f"teacher: training teacher_cnn widths {widths} for {epochs} epochs (cached afterwards at {path.name})")
    result = train(model, data, config, progress=False)
    atomic_write(path, lambda p: torch.save(result.model.state_dict(), p))
    return result.model, {"cached": False, "train_time_s": round(result.train_time_s, 1),
                          "cache": str(path.relative_to(ROOT.parent))}


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def main() -> int:
    args = parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    t_start = time.perf_counter()

    def say(message: str) -> None:
        print(f"[{time.perf_counter() - t_start:6.0f}s] {message}", flush=True)

    if not Path(args.data).exists():
        say(f"data {args.data} not found: falling back to the built-in 'digits' set (results not comparable)")
        args.data = "digits"
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise SystemExit(f"unknown methods {unknown}; known: {', '.join(METHODS)}")
    data = load_dataset(args.data, seed=0, max_train=args.max_train)
    widths = tuple(int(w) for w in args.teacher_widths.split(","))
    choices = {
        "data": f"{args.data}: {len(data.y_train)} train / {len(data.y_val)} val (of --max-train {args.max_train}),"
                f" full {len(data.y_test)}-image test set",
        "teacher": f"teacher_cnn widths {widths}, {args.teacher_epochs} epochs, seed 0 (lighter than the default "
                   "(64,128,256) so the benchmark fits ~25 min on 2 shared cores)",
        "students": f"{args.epochs} epochs, batch {args.batch_size}, AdamW lr 3e-3 one-cycle, T=4, seeds "
                    f"0..{args.seeds - 1}; best-val-epoch weights, scored on the test set",
        "timing": "epoch_time_ratio_vs_alone = KD epoch time / alone epoch time (median epoch of each run, mean "
                  "over seeds; runs interleaved), same run, teacher outputs cached (the one-off teacher pass is "
                  f"reported separately as teacher_time_s); torch threads {args.threads or 'default'}",
    }
    for k, v in choices.items():
        say(f"choice ({k}): {v}")

    teacher, teacher_info = teacher_for(data, widths, args.teacher_epochs, args.batch_size, say)
    teacher_acc = accuracy(teacher, data.x_test, data.y_test)
    teacher_macs = count_macs(teacher, data.input_shape)
    budget = load_target("rpi4").student_budget
    choice = fit_student_to_budget(data.input_shape, data.num_classes, budget, teacher_macs)
    say(f"teacher: accuracy {teacher_acc:.4f}, {teacher_macs / 1e6:.2f} M MACs, {count_params(teacher)} params")
    say(f"student: {choice.family} {choice.config}: {choice.macs / 1e6:.2f} M MACs ({choice.macs / teacher_macs:.3f}"
        f" of the teacher), {choice.params} params (rpi4 budget {budget.max_params} params, {budget.max_macs} MACs)")

    runs: dict[str, list[dict]] = {"alone": [], **{m: [] for m in methods}}
    for seed in range(args.seeds):
        for name in ["alone", *methods]:  # interleaved, so machine load drifts hit every method alike
            weights, options = ({"ce": 1.0}, {}) if name == "alone" else METHODS[name]
            config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, seed=seed, loss_weights=weights,
                                 loss_options=options, label=name)
            torch.manual_seed(seed)
            student = choice.build(data.input_shape, data.num_classes)
            result = train(student, data, config, teacher=None if name == "alone" else teacher, progress=False)
            acc = accuracy(result.model, data.x_test, data.y_test)
            epoch_s = statistics.median(h["epoch_time_s"] for h in result.history)
            runs[name].append({"seed": seed, "accuracy": acc, "train_time_s": result.train_time_s,
                               "epoch_time_s": epoch_s, "teacher_time_s": result.teacher_time_s,
                               "best_epoch": result.best_epoch})
            say(f"seed {seed} {name:<8} test acc {acc:.4f}  epoch {epoch_s:5.2f}s  "
                f"total {result.train_time_s:6.1f}s  teacher {result.teacher_time_s:5.2f}s")

    alone_acc = mean_std([r["accuracy"] for r in runs["alone"]])
    alone_epoch = statistics.fmean(r["epoch_time_s"] for r in runs["alone"])
    rows = [("teacher", teacher_acc, 0.0, count_params(teacher), teacher_macs, None, None, None)]
    rows.append(("alone", *alone_acc, choice.params, choice.macs,
                 statistics.fmean(r["train_time_s"] for r in runs["alone"]), 1.0, None))
    method_json = {}
    for m in methods:
        acc_m = mean_std([r["accuracy"] for r in runs[m]])
        ratio = statistics.fmean(r["epoch_time_s"] for r in runs[m]) / alone_epoch
        train_s = statistics.fmean(r["train_time_s"] for r in runs[m])
        rows.append((m, *acc_m, choice.params, choice.macs, train_s, ratio, acc_m[0] - alone_acc[0]))
        method_json[m] = {
            "accuracy_mean": acc_m[0], "accuracy_std": acc_m[1], "epoch_time_ratio_vs_alone": ratio,
            "gain_vs_alone_points": 100 * (acc_m[0] - alone_acc[0]), "ratio_to_teacher": acc_m[0] / teacher_acc,
            "train_time_s_mean": train_s, "loss_weights": METHODS[m][0], "loss_options": METHODS[m][1],
            "runs": runs[m],
        }

    header = f"{'model':<10} {'acc mean':>8} {'std':>7} {'params':>8} {'MACs':>10} {'train s':>8} " \
             f"{'ep ratio':>8} {'gain pts':>8} {'/teacher':>8}"
    print("\n" + header + "\n" + "-" * len(header))
    for name, mean, std, params, macs, train_s, ratio, gain in rows:
        print(f"{name:<10} {mean:8.4f} {std:7.4f} {params:8d} {macs:10d} "
              f"{'' if train_s is None else f'{train_s:8.1f}':>8} {'' if ratio is None else f'{ratio:8.2f}':>8} "
              f"{'' if gain is None else f'{100 * gain:+8.2f}':>8} {mean / teacher_acc:8.3f}")
    best = max(methods, key=lambda m: method_json[m]["accuracy_mean"]) if methods else None
    verdict = {}
    if best:
        b = method_json[best]
        spread = max(b["accuracy_std"], alone_acc[1])
        verdict = {
            "best_method": best,
            "gain_points": b["gain_vs_alone_points"],
            "gain_ge_0_5_points_and_above_spread": b["gain_vs_alone_points"] >= 0.5 and
            b["accuracy_mean"] - alone_acc[0] > spread,
            "ratio_to_teacher_ge_0_97": b["ratio_to_teacher"] >= 0.97,
            "macs_le_tenth_of_teacher": choice.macs <= teacher_macs / 10,
            "all_epoch_ratios_le_1_2": all(method_json[m]["epoch_time_ratio_vs_alone"] <= 1.2 for m in methods),
        }
        print(f"\nbest method {best}: {b['gain_vs_alone_points']:+.2f} points vs alone (spread {100 * spread:.2f}),"
              f" {b['ratio_to_teacher']:.3f} of the teacher's accuracy with {choice.macs / teacher_macs:.3f} of its "
              f"MACs; checks: {verdict}")
    result = {
        "teacher": {"accuracy": teacher_acc, "macs": teacher_macs, "params": count_params(teacher),
                    "arch": "teacher_cnn", "widths": list(widths), **teacher_info},
        "student": {"macs": choice.macs, "params": choice.params, "family": choice.family, "config": choice.config},
        "alone": {"accuracy_mean": alone_acc[0], "accuracy_std": alone_acc[1], "epoch_time_s_mean": alone_epoch,
                  "runs": runs["alone"]},
        "methods": method_json,
        "verdict": verdict,
        "choices": choices,
        "settings": vars(args),
        "threads": torch.get_num_threads(),
        "wall_time_s": round(time.perf_counter() - t_start, 1),
    }
    write_json(args.out, result)
    say(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
