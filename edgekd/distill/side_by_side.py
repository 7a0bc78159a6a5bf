"""Train two runs at once, each in its own Python thread with half the cores: ``--baseline``'s KD and alone runs.

Why: a small student's training step does not scale across cores, and torch's kernels release the GIL. On a
2-core AMD EPYC (``benchmarks/results/two_core_scaling.json``, aligned windows) two rpi4-sized students trained in
two threads of one process, one torch thread each, did 1.48-1.59x the samples/s of one trained with two threads
(two 1-thread processes: 1.51-1.65x; timed steps, real training gained less, below). Threads rather than
processes: the runs share the data arrays and the teacher in memory, and each keeps its own checkpoints, so a
killed build resumes both mid-way.

The runs stay what they would be one after the other: each has its own model, optimizer and seeded generator
(nothing here draws from torch's global RNG), and the second run waits for the first's fast plan
(``distill/fast.py``) so both train in the same memory format and precision, and for the first's one-off teacher
pass, which gets all the cores (its thread count is fixed, so the teacher outputs are too). In a full
Fashion-MNIST build the pair took 686 s against 811 s one after the other (``benchmarks/results/build_time.json``).
The run that finishes later keeps its share of threads: widening it when the other ends would make its weights
depend on timing (the thread count changes float reductions), and a build must be reproducible.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import torch

from edgekd.distill.fast import torch_threads
from edgekd.distill.trainer import Cancelled, TrainResult

RunFn = Callable[..., TrainResult]


def threads_per_run() -> int:
    """torch threads each run gets; 0 when there are too few cores to split (train one after the other)."""
    return torch.get_num_threads() // 2


def train_side_by_side(first: RunFn, second: RunFn) -> tuple[TrainResult, TrainResult]:
    """``first(on_fast_plan=, stop=, teacher_threads=)`` and ``second(fast_plan=, stop=)`` in two threads; their
    results in order.

    ``second`` starts once ``first`` has chosen its fast plan and run its one-off teacher pass (the KD run's cached
    teacher outputs) with all the caller's threads, and gets the plan. On one core beside the other run, that pass
    (168 s on a 2-core EPYC) left a core idle at the end; on both it took 100 s (``build_time.json``). The first
    exception either run raises stops the other at its next batch and is re-raised here; so is an interrupt of the
    waiting caller.
    """
    stop, plan_ready = threading.Event(), threading.Event()
    plan: dict[str, Any] = {}
    results: dict[str, TrainResult] = {}
    errors: list[BaseException] = []

    def share_plan(state: dict | None) -> None:
        plan["state"] = state
        plan_ready.set()

    def guarded(name: str, fn: Callable[[], TrainResult]) -> None:
        try:
            results[name] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread below
            if not isinstance(exc, Cancelled):
                errors.append(exc)
            stop.set()
        finally:
            plan_ready.set()  # a first run that failed before choosing its plan must not leave the second waiting

    def run_second() -> TrainResult:
        plan_ready.wait()
        if stop.is_set():
            raise Cancelled
        return second(fast_plan=plan.get("state"), stop=stop)

    all_threads = torch.get_num_threads()

    def run_first() -> TrainResult:
        return first(on_fast_plan=share_plan, stop=stop, teacher_threads=all_threads)

    workers = [threading.Thread(target=guarded, args=("first", run_first), name="edgekd-train-first", daemon=True),
               threading.Thread(target=guarded, args=("second", run_second), name="edgekd-train-second",
                                daemon=True)]
    with torch_threads(max(1, threads_per_run())):
        try:
            for worker in workers:
                worker.start()
            for worker in workers:
                while worker.is_alive():
                    worker.join(timeout=0.2)  # short waits keep the caller's thread interruptible
        except BaseException:
            stop.set()
            for worker in workers:
                worker.join()
            raise
    if errors:
        raise errors[0]
    return results["first"], results["second"]
