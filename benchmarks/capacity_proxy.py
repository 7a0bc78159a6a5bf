"""Which capacity score predicts a student's final distilled accuracy: MACs, params, or a short proxy training?

    python benchmarks/capacity_proxy.py           # CIFAR-10 and Fashion-MNIST subsets, ~10 min niced on 2 cores

Among the students inside a latency budget, ``edgekd.selection`` picks the "most capable". This measures what that
should mean. For each data set, a handful of mobilenetv2 candidates spread over the MAC range (widths, depths and
input resolutions, the selection's own grid) are scored three ways before any real training — MACs, params, and
a *proxy*: validation accuracy after one short epoch of training alone on a subset — and then distilled from the
same teacher for a few epochs. Every accuracy here is on the validation split (the test split is never read).
The Spearman rank correlation of each score with the final distilled accuracy says which score ranks students
better. Writes ``benchmarks/results/capacity_proxy.json`` with the load average at start and end (shared machine).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))
sys.path.insert(0, str(ROOT))

from kd_quality import default_recipe, teacher_for  # noqa: E402

from edgekd.data import load_dataset  # noqa: E402
from edgekd.distill.trainer import TrainConfig, accuracy, train  # noqa: E402
from edgekd.io import write_json  # noqa: E402
from edgekd.selection import enumerate_candidates  # noqa: E402
from edgekd.targets import StudentBudget  # noqa: E402

SHARED = ROOT.parent.parent / "shared" / "datasets"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shared", default=str(SHARED), help="the shared datasets folder")
    p.add_argument("--max-train", type=int, default=3000, help="train+val samples per data set")
    p.add_argument("--students", type=int, default=5, help="candidates per data set, spread over log-MACs")
    p.add_argument("--max-params", type=int, default=300_000, help="candidate params limit (rpi4's)")
    p.add_argument("--proxy-samples", type=int, default=600, help="training subset of the proxy score")
    p.add_argument("--epochs", type=int, default=1, help="distillation epochs (final accuracy)")
    p.add_argument("--teacher-epochs", type=int, default=3)
    p.add_argument("--datasets", default="cifar10,fashion-mnist")
    p.add_argument("--train-samples", type=int, help="distil on the first N training samples (default all)")
    p.add_argument("--out", default=str(ROOT / "results" / "capacity_proxy.json"))
    return p.parse_args()


def spread(candidates, n: int):
    order = sorted(candidates, key=lambda c: c.macs)
    idx = np.unique(np.round(np.linspace(0, len(order) - 1, min(n, len(order)))).astype(int))
    return [order[i] for i in idx]


def proxy_score(cand, data, samples: int) -> float:
    """One epoch of training alone (labels only) on the first ``samples`` training samples, scored on validation."""
    small = dataclasses.replace(data, x_train=data.x_train[:samples], y_train=data.y_train[:samples])
    torch.manual_seed(0)
    result = train(cand.build(data.input_shape, data.num_classes), small,
                   TrainConfig(epochs=1, seed=0, loss_weights={"ce": 1.0}, label="proxy"), progress=False)
    return accuracy(result.model, data.x_val, data.y_val)


def run_dataset(name: str, path: str, args, say) -> dict:
    data = load_dataset(path, seed=0, max_train=args.max_train)
    teacher, info = teacher_for(default_recipe(), data, (32, 64, 128), args.teacher_epochs, say)
    candidates, _ = enumerate_candidates(data.input_shape, data.num_classes,
                                         StudentBudget(max_params=args.max_params))
    rows = []
    for cand in spread(candidates, args.students):
        t0 = time.perf_counter()
        proxy = proxy_score(cand, data, args.proxy_samples)
        proxy_s = time.perf_counter() - t0
        torch.manual_seed(0)
        n = args.train_samples
        subset = dataclasses.replace(data, x_train=data.x_train[:n], y_train=data.y_train[:n])
        final = train(cand.build(data.input_shape, data.num_classes), subset,
                      TrainConfig(epochs=args.epochs, seed=0), teacher=teacher, progress=False)
        rows.append({"name": cand.name, "config": cand.config, "macs": cand.macs, "params": cand.params,
                     "proxy_val_accuracy": proxy, "proxy_s": round(proxy_s, 1),
                     "final_val_accuracy": accuracy(final.model, data.x_val, data.y_val),
                     "final_train_s": round(final.train_time_s, 1)})
        say(f"{name}: {cand.name} MACs {cand.macs / 1e6:.2f}M proxy {proxy:.3f} final "
            f"{rows[-1]['final_val_accuracy']:.3f}")
    final = [r["final_val_accuracy"] for r in rows]
    rho = {score: float(spearmanr([r[key] for r in rows], final).statistic)
           for score, key in (("macs", "macs"), ("params", "params"), ("proxy", "proxy_val_accuracy"))}
    return {"data": f"{path}: {len(data.y_train)} train / {len(data.y_val)} val", "teacher": info,
            "students": rows, "spearman_vs_final": rho}


def main() -> int:
    args = parse_args()
    t_start, load_start = time.perf_counter(), os.getloadavg()

    def say(message: str) -> None:
        print(f"[{time.perf_counter() - t_start:6.0f}s] {message}", flush=True)

    shared = Path(args.shared)
    paths = {"cifar10": shared / "cifar10" / "cifar10-jpg.tar.gz", "fashion-mnist": shared / "fashion-mnist"}
    wanted = args.datasets.split(",")
    results = {name: run_dataset(name, str(path), args, say) for name, path in paths.items()
               if name in wanted and path.exists()}
    if not results:
        raise SystemExit(f"no data set under {shared}")
    mean = {s: float(np.mean([r["spearman_vs_final"][s] for r in results.values()])) for s in ("macs", "params",
                                                                                               "proxy")}
    best = max(mean, key=mean.get)
    out = {"benchmark": "capacity_proxy", "datasets": results, "mean_spearman": mean, "best_score": best,
           "conclusion": f"{best} ranks students by final distilled validation accuracy best (mean Spearman "
                         f"{mean[best]:.2f} over {len(results)} data sets of {args.students} students each: a small "
                         "sample, read the per-data-set values)",
           "settings": vars(args), "load_average": {"start": load_start, "end": os.getloadavg()},
           "wall_s": round(time.perf_counter() - t_start, 1)}
    write_json(args.out, out)
    say(f"wrote {args.out}: {out['conclusion']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
