"""Does a --baseline build gain from training its two students side by side, one thread each, on a 2-core host?

    python benchmarks/two_core_scaling.py            # ~2 min on 2 cores; run on a quiet machine

The KD run and the alone run of ``edgekd build --baseline`` once trained the same student one after the other,
each with every core. A small student's training step does not scale to two threads (batch 64, 28x28), so two
1-thread processes (or two Python threads of one process, as ``edgekd/distill/side_by_side.py`` runs them) running
at once may do more work per second than one 2-thread process. For each rpi4-sized student on Fashion-MNIST's
shape this times the same AdamW steps (channels_last, batch 64, synthetic inputs: speed does not
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
import json, sys, threading, time, torch
sys.path.insert(0, {repo!r})
from edgekd.models.students import build_model
torch.set_num_threads({threads})
torch.manual_seed(0)
def make():
    model = build_model({arch!r}, (1, 28, 28), 10, **{config!r}).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    x = torch.randn(64, 1, 28, 28).to(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (64,))
    def step():
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return step
rates = []
def work(step):
    for _ in range(5):
        step()
    t0 = time.perf_counter()
    for _ in range({steps}):
        step()
    rates.append({steps} * 64 / (time.perf_counter() - t0))
workers = [threading.Thread(target=work, args=(make(),)) for _ in range({in_process})]
for w in workers:
    w.start()
for w in workers:
    w.join()
print(json.dumps({{"samples_per_s": sum(rates)}}))
"""


def timed(arch: str, config: dict, threads: int, copies: int, steps: int, in_process: int = 1) -> float:
    """Total samples/s of ``copies`` processes, each training ``in_process`` models in as many Python threads
    with ``threads`` torch threads, all started together."""
    code = STEP_SCRIPT.format(repo=str(ROOT.parent), threads=threads, arch=arch, config=config, steps=steps,
                              in_process=in_process)
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
             for _ in range(copies)]
    outs = [p.communicate()[0] for p in procs]
    if any(p.returncode for p in procs):
        raise SystemExit(f"a timing process failed for {arch}")
    return sum(json.loads(o.strip().splitlines()[-1])["samples_per_s"] for o in outs)


def median(values: list[float], digits: int = 1) -> float:
    return round(sorted(values)[len(values) // 2], digits)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=60)
    args = p.parse_args()
    rows, load_before = [], os.getloadavg()
    for name, (arch, config) in STUDENTS.items():
        single, pair, threaded = [], [], []
        for _ in range(args.rounds):  # interleaved: drift on a shared host hits every setting alike
            single.append(timed(arch, config, threads=2, copies=1, steps=args.steps))
            pair.append(timed(arch, config, threads=1, copies=2, steps=args.steps))
            threaded.append(timed(arch, config, threads=1, copies=1, steps=args.steps, in_process=2))
        rows.append({"name": name, "single_2_threads_samples_per_s": median(single),
                     "pair_1_thread_each_samples_per_s": median(pair),
                     "threads_in_one_process_samples_per_s": median(threaded),
                     "throughput_ratio_median": median([b / a for a, b in zip(single, pair, strict=True)], 3),
                     "threads_ratio_median": median([b / a for a, b in zip(single, threaded, strict=True)], 3),
                     "throughput_ratios": sorted(round(b / a, 3) for a, b in zip(single, pair, strict=True)),
                     "threads_ratios": sorted(round(b / a, 3) for a, b in zip(single, threaded, strict=True))})
        row = rows[-1]
        print(f"{name:40s} 2 threads {row['single_2_threads_samples_per_s']:8.1f}/s   two 1-thread processes "
              f"{row['pair_1_thread_each_samples_per_s']:8.1f}/s ({row['throughput_ratio_median']:.2f}x)   two "
              f"Python threads {row['threads_in_one_process_samples_per_s']:8.1f}/s "
              f"({row['threads_ratio_median']:.2f}x)")
    result = {"cpu": cpu_name(), "cores": os.cpu_count(), "rounds": args.rounds, "steps": args.steps,
              "batch_size": 64, "input": "1x28x28, channels_last", "loadavg_before": list(load_before),
              "loadavg_after": list(os.getloadavg()), "models": rows,
              "note": "ratio > 1: two students trained side by side, one thread each, finish sooner than one after "
                      "the other with two threads each (the --baseline build's two runs). threads_*: the same two "
                      "students in two Python threads of one process with torch.set_num_threads(1), as the build "
                      "runs them (the GIL is released inside torch's kernels)."}
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
