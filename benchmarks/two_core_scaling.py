"""Does a --baseline build gain from training its two students side by side, one thread each, on a 2-core host?

    python benchmarks/two_core_scaling.py            # ~2 min on 2 cores; run on a quiet machine

The KD run and the alone run of ``edgekd build --baseline`` train the same student one after the other, each with
every core. A small student's training step does not scale to two threads (batch 64, 28x28), so two 1-thread
processes running at once may do more work per second than one 2-thread process. For each rpi4-sized student on
Fashion-MNIST's shape this times the same AdamW steps (channels_last, batch 64, synthetic inputs: speed does not
depend on the pixels) both ways, the three settings interleaved per round, and writes
``benchmarks/results/two_core_scaling.json``: samples/s of each and the throughput ratio (pair / single).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))

from edgekd.distill.fast import cpu_name  # noqa: E402

RESULTS = ROOT / "results" / "two_core_scaling.json"
STUDENTS = {"mobilenetv2 w3.0 e2 d1 (rpi4 default)": ("mobilenetv2", {"width": 3.0, "depth": 1, "expand": 2}),
            "resnet w1.0 d1": ("resnet", {"width": 1.0, "depth": 1})}
STEP_SCRIPT = """
import json, sys, time, torch
sys.path.insert(0, {repo!r})
from edgekd.models.students import build_model
torch.set_num_threads({threads})
torch.manual_seed(0)
model = build_model({arch!r}, (1, 28, 28), 10, **{config!r}).to(memory_format=torch.channels_last)
opt = torch.optim.AdamW(model.parameters(), 1e-3)
x = torch.randn(64, 1, 28, 28).to(memory_format=torch.channels_last)
y = torch.randint(0, 10, (64,))
def step():
    opt.zero_grad()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
for _ in range(5):
    step()
t0 = time.perf_counter()
for _ in range({steps}):
    step()
print(json.dumps({{"samples_per_s": {steps} * 64 / (time.perf_counter() - t0)}}))
"""


def timed(arch: str, config: dict, threads: int, copies: int, steps: int) -> float:
    """Total samples/s of ``copies`` processes with ``threads`` threads each, started together."""
    code = STEP_SCRIPT.format(repo=str(ROOT.parent), threads=threads, arch=arch, config=config, steps=steps)
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
             for _ in range(copies)]
    outs = [p.communicate()[0] for p in procs]
    if any(p.returncode for p in procs):
        raise SystemExit(f"a timing process failed for {arch}")
    return sum(json.loads(o.strip().splitlines()[-1])["samples_per_s"] for o in outs)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=60)
    args = p.parse_args()
    rows, load_before = [], os.getloadavg()
    for name, (arch, config) in STUDENTS.items():
        single, pair = [], []
        for _ in range(args.rounds):  # interleaved: drift on a shared host hits both settings alike
            single.append(timed(arch, config, threads=2, copies=1, steps=args.steps))
            pair.append(timed(arch, config, threads=1, copies=2, steps=args.steps))
        ratios = sorted(b / a for a, b in zip(single, pair, strict=True))
        rows.append({"name": name, "single_2_threads_samples_per_s": round(sorted(single)[len(single) // 2], 1),
                     "pair_1_thread_each_samples_per_s": round(sorted(pair)[len(pair) // 2], 1),
                     "throughput_ratio_median": round(ratios[len(ratios) // 2], 3),
                     "throughput_ratios": [round(r, 3) for r in ratios]})
        row = rows[-1]
        print(f"{name:40s} 2 threads {row['single_2_threads_samples_per_s']:8.1f}/s   two 1-thread "
              f"{row['pair_1_thread_each_samples_per_s']:8.1f}/s   ratio {row['throughput_ratio_median']:.2f}")
    result = {"cpu": cpu_name(), "cores": os.cpu_count(), "rounds": args.rounds, "steps": args.steps,
              "batch_size": 64, "input": "1x28x28, channels_last", "loadavg_before": list(load_before),
              "loadavg_after": list(os.getloadavg()), "models": rows,
              "note": "ratio > 1: two students trained side by side, one thread each, finish sooner than one after "
                      "the other with two threads each (the --baseline build's two runs)."}
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
