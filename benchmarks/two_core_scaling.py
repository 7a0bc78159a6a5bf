"""Does a --baseline build gain from training its two students side by side, one thread each, on a 2-core host?

    python benchmarks/two_core_scaling.py            # ~2 min on 2 cores; run on a quiet machine
    python benchmarks/two_core_scaling.py --quick --out /tmp/s.json   # one student, one round of 1 s: checks it runs

The KD run and the alone run of ``edgekd build --baseline`` once trained the same student one after the other,
each with every core. A small student's training step does not scale to two threads (batch 64, 28x28), so two
1-thread processes (or two Python threads of one process, as ``edgekd/distill/side_by_side.py`` runs them) running
at once may do more work per second than one 2-thread process. For each rpi4-sized student on Fashion-MNIST's
shape this times the same AdamW steps (channels_last, batch 64, synthetic inputs: speed does not
depend on the pixels) both ways, the three settings interleaved per round, and writes
``benchmarks/results/two_core_scaling.json``: samples/s of each and the throughput ratio (pair / single).

Aligned windows: every worker builds and warms its model, says it is ready, and is then given one wall-clock window
(the same ``[t0, t1]`` of the system-wide monotonic clock for every process and thread of a setting); it steps until
``t1``, and only the part of each step inside the window counts. Both runs' rates are over the same seconds, so a
pair's sum cannot look super-linear because one run started or ended while the other was idle.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))
sys.path.insert(0, str(ROOT))

from _provenance import OUT_HELP, Recorder, results_path, stamped  # noqa: E402

from edgekd.io import write_json  # noqa: E402

QUIET_LOAD = 2.5  # 1-minute load average: this script's two busy threads plus half a core of anyone else's
ROWS = "models"
BATCH = 64
STUDENTS = {"mobilenetv2 w3.0 e2 d1 (rpi4 default)": ("mobilenetv2", {"width": 3.0, "depth": 1, "expand": 2}),
            "resnet w1.0 d1": ("resnet", {"width": 1.0, "depth": 1})}
# Each worker: build + warm up, print "ready", read "t0 t1", step until t1, print its steps' (start, end) times.
STEP_SCRIPT = """
import json, sys, threading, time, torch
sys.path.insert(0, {repo!r})
from edgekd.models.students import build_model
torch.set_num_threads({threads})
torch.manual_seed(0)
def make():
    model = build_model({arch!r}, (1, 28, 28), 10, **{config!r}).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    x = torch.randn({batch}, 1, 28, 28).to(memory_format=torch.channels_last)
    y = torch.randint(0, 10, ({batch},))
    def step():
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return step
steps = [make() for _ in range({in_process})]
for step in steps:
    for _ in range(3):
        step()
print("ready", flush=True)
t0, t1 = map(float, sys.stdin.readline().split())
intervals = [[] for _ in steps]
def work(i):
    while (start := time.monotonic()) < t1:
        steps[i]()
        intervals[i].append((start, time.monotonic()))
workers = [threading.Thread(target=work, args=(i,)) for i in range(len(steps))]
for w in workers:
    w.start()
for w in workers:
    w.join()
print(json.dumps({{"intervals": intervals}}))
"""


def windowed_rate(intervals: list[tuple[float, float]], t0: float, t1: float, batch: int = BATCH) -> float:
    """Samples/s of one worker inside ``[t0, t1]``: each step counts by the share of its duration in the window."""
    done = sum((min(b, t1) - max(a, t0)) / (b - a) for a, b in intervals if b > a and b > t0 and a < t1)
    return batch * done / (t1 - t0)


def timed(arch: str, config: dict, threads: int, copies: int, seconds: float, in_process: int = 1) -> float:
    """Total samples/s of ``copies`` processes, each training ``in_process`` models in as many Python threads
    with ``threads`` torch threads, all over the same ``seconds``-long window."""
    code = STEP_SCRIPT.format(repo=str(ROOT.parent), threads=threads, arch=arch, config=config, batch=BATCH,
                              in_process=in_process)
    procs = [subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
             for _ in range(copies)]
    if any(p.stdout.readline().strip() != "ready" for p in procs):
        raise SystemExit(f"a timing process failed to start for {arch}")
    t0 = time.monotonic() + 0.2
    for p in procs:  # every process gets the window before any is waited on (communicate() one by one would
        p.stdin.write(f"{t0} {t0 + seconds}\n")  # start the second only after the first's window had passed)
        p.stdin.flush()
    outs = [p.communicate()[0] for p in procs]
    if any(p.returncode for p in procs):
        raise SystemExit(f"a timing process failed for {arch}")
    workers = [w for o in outs for w in json.loads(o.strip().splitlines()[-1])["intervals"]]
    rates = [windowed_rate(w, t0, t0 + seconds) for w in workers]
    if not all(rates):
        raise SystemExit(f"{arch}: a worker did no step inside the shared window (rates {rates}): not a pair")
    return sum(rates)


def median(values: list[float], digits: int = 1) -> float:
    return round(sorted(values)[len(values) // 2], digits)


def measure(name: str, arch: str, config: dict, rounds: int, seconds: float) -> dict:
    single, pair, threaded = [], [], []
    for _ in range(rounds):  # interleaved: drift on a shared host hits every setting alike
        single.append(timed(arch, config, threads=2, copies=1, seconds=seconds))
        pair.append(timed(arch, config, threads=1, copies=2, seconds=seconds))
        threaded.append(timed(arch, config, threads=1, copies=1, seconds=seconds, in_process=2))
    return {"name": name, "single_2_threads_samples_per_s": median(single),
            "pair_1_thread_each_samples_per_s": median(pair),
            "threads_in_one_process_samples_per_s": median(threaded),
            "throughput_ratio_median": median([b / a for a, b in zip(single, pair, strict=True)], 3),
            "threads_ratio_median": median([b / a for a, b in zip(single, threaded, strict=True)], 3),
            "throughput_ratios": sorted(round(b / a, 3) for a, b in zip(single, pair, strict=True)),
            "threads_ratios": sorted(round(b / a, 3) for a, b in zip(single, threaded, strict=True))}


def verdict(rows: list[dict]) -> dict[str, str]:
    """Per student, the fastest way to train two copies on this host, from the median ratios."""
    out = {}
    for r in rows:
        ways = {"one 2-thread process after the other": 1.0, "two 1-thread processes": r["throughput_ratio_median"],
                "two Python threads in one process": r["threads_ratio_median"]}
        best = max(ways, key=ways.get)
        out[r["name"]] = f"{best} ({ways[best]:.2f}x one 2-thread process)"
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=5.0, help="the timed window of every setting")
    p.add_argument("--quick", action="store_true", help="the first student, 1 round of 1 s: checks the script runs")
    p.add_argument("--out", help=OUT_HELP)
    args = p.parse_args(argv)
    args.out = args.out or str(results_path("two_core_scaling", args.quick))
    if args.quick:
        args.rounds, args.seconds = 1, 1.0
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    recorder = Recorder(quick=args.quick, seeds=[0], quiet_load=QUIET_LOAD)
    rows = []
    for name, (arch, config) in list(STUDENTS.items())[: 1 if args.quick else None]:
        rows.append(measure(name, arch, config, args.rounds, args.seconds))
        row = rows[-1]
        print(f"{name:40s} 2 threads {row['single_2_threads_samples_per_s']:8.1f}/s   two 1-thread processes "
              f"{row['pair_1_thread_each_samples_per_s']:8.1f}/s ({row['throughput_ratio_median']:.2f}x)   two "
              f"Python threads {row['threads_in_one_process_samples_per_s']:8.1f}/s "
              f"({row['threads_ratio_median']:.2f}x)", flush=True)
    result = {"rounds": args.rounds, "window_s": args.seconds, "batch_size": BATCH, "input": "1x28x28, channels_last",
              "models": rows,
              "definitions": "ratio > 1: two students trained side by side, one thread each, finish sooner than one "
                             "after the other with two threads each (the --baseline build's two runs). threads_*: "
                             "the same two students in two Python threads of one process with "
                             "torch.set_num_threads(1), as the build runs them. Every rate is over the same aligned "
                             "wall-clock window for all the workers of a setting."}
    out = stamped(result, verdict(rows), recorder.finish())
    write_json(args.out, out)
    print(f"wrote {args.out} (verdict: {out['verdict']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
