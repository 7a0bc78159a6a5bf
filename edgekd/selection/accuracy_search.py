"""Rank the students that fit the budget by the accuracy they reach, measured: a short distillation of each finalist
from cached teacher logits, scored on the validation split, with successive halving eliminating the weak ones.

Why measured: MACs (and the capacity rule fitted on one data set) say nothing about what a lower resolution, a
deeper or a narrower net costs in accuracy; in ``benchmarks/results/latency_selection.json`` every latency-selected
student ranked by capacity lost 1.5-18 points to the MAC-selected one.

How, and why a plain loop rather than optuna's pruners: the finalists are a handful of fixed configurations
trained in this one process under a hard time cap. Optuna's ``SuccessiveHalvingPruner``/``HyperbandPruner`` are
asynchronous (ASHA): run one trial at a time, the first trial is always promoted and each later one is judged
against the trials before it only, so the outcome depends on the order, and its samplers add nothing when every
finalist is tried. Synchronous halving compares all survivors after the same number of steps at every rung and is
the few lines below (no new dependency).

* The proxy trainer is the build's own: ``distill.loop``'s run, KD step, validation scoring, and ``TeacherCache``
  (the teacher's logits computed once over a seeded subset of the training split, shared by every finalist).
  Logit losses only (the build's kd/dkd/ce weights, its temperature): a feature loss names modules that a finalist
  of another family does not have. No augmentation, a constant learning rate (every rung is compared at the same
  point of the same schedule), the eager path.
* The test split is never read: the subset is drawn from the training split, scores come from the validation split.
* Cost: the steps are planned from step times measured on each finalist, so the whole search stays under
  ``share`` (20 %) of the build's expected time (what it took so far + the distillation's epochs x steps x the
  measured step time of the budget's own choice, twice with ``--baseline``); when even the smallest useful search
  does not fit, it does not run and the budget's own choice stands.
* The budget's own choice (MAC- or latency-selected) is always a finalist and stays chosen unless another beats it
  at the last rung both reached by more than the noise of the two validation accuracies (binomial standard error).
  It and the MAC-selected student (when it fits) are *protected*: trained every rung, never eliminated on the first
  steps, where a short proxy favours small students that learn fast; the other finalists halve beside them.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from edgekd.data import Dataset
from edgekd.distill import loop
from edgekd.distill.teachers import TeacherCache, TeacherRunner
from edgekd.distill.trainer import TrainConfig
from edgekd.selection.candidates import Candidate

COST_SHARE = 0.20  # of the build's expected time, at most
ETA = 2  # successive halving: the better half goes on, trained twice as long again
MIN_RUNG_STEPS = 20  # first-rung steps per finalist: fewer, and validation accuracy is mostly initialisation
# The first rung is at most one pass over the subset (or MIN_RUNG_STEPS): the cap bounds the search, it is not a target
PROBE_STEPS = 4  # timed per finalist before planning (they count as its first steps)
MAX_SUBSET = 10_000  # training samples the proxy draws from (the teacher pass covers only these)
LOGIT_LOSSES = ("kd", "dkd", "ce")
RULE = ("proxy accuracy: successive halving (x{eta}) over the finalists, each distilled from the cached teacher "
        "logits and scored on the validation split; the best at the last rung, kept only if it beats the budget's "
        "own choice by more than the noise at the last rung both reached")


@dataclass
class Finalist(Candidate):
    """A candidate that fits the budget, why it is a finalist, and its latency measured at the selection's
    percentile (latency mode)."""

    why: str = ""
    latency_ms: float | None = None
    # trained to the last rung whatever its early scores: the budget's own choice and the MAC-selected student.
    # A short proxy favours small students that learn fast (on Fashion-MNIST at 1.5x the MAC student's p95, the
    # MAC student fell out at 53 steps and a half-resolution student 1.3 points worse on test was chosen).
    protected: bool = False


@dataclass
class Outcome:
    """The search's result: the chosen finalist (None when it did not run) and its record for the report."""

    chosen: Finalist | None
    ranking: list[Finalist]  # best first by the last rung each reached (pre-flight falls back down it)
    record: dict[str, Any] = field(default_factory=dict)


def proxy_config(config: TrainConfig) -> TrainConfig:
    """The build's distillation settings reduced to what every finalist can train with (see the module doc)."""
    weights = {k: v for k, v in config.loss_weights.items() if k in LOGIT_LOSSES} or {"kd": 0.7, "ce": 0.3}
    options = {k: v for k, v in config.loss_options.items() if k in weights}
    return dataclasses.replace(config, loss_weights=weights, loss_options=options, augment=(), augment_options={},
                               loss_weight_schedules={}, temperature_schedule=None, lr_schedule="constant",
                               patience=None, fast=False, label="selection proxy", teacher_cache="auto")


class Proxy:
    """One finalist's short distillation: advanced step by step, scored on the validation split."""

    def __init__(self, finalist: Finalist, data: Dataset, config: TrainConfig, teachers: list[nn.Module],
                 cache: TeacherCache) -> None:
        torch.manual_seed(config.seed)
        model = finalist.build(data.input_shape, data.num_classes)
        self.run = loop.make_run(model, data, config, teachers, None)
        loop.probe_shapes(self.run)
        self.run.cache, self.run.outputs_mode = cache, "shared selection cache"
        loop.make_optimisation(self.run)
        self.run.mix.set_schedule_values(config.temperature, dict(self.run.base_weights))
        self.state = loop.State(best_state={})
        self.epoch, self.order, self.pos = 0, loop.epoch_order(self.run, 0), 0
        self.steps, self.seconds, self.step_times = 0, 0.0, []

    def advance(self, steps: int) -> None:
        run = self.run
        run.model.train()
        for _ in range(steps):
            if self.pos >= len(self.order):
                self.epoch += 1
                self.order, self.pos = loop.epoch_order(run, self.epoch), 0
            t0 = time.perf_counter()
            loop.train_step(run, self.order[self.pos:self.pos + run.per_rank_batch], run.config.temperature,
                            self.state)
            self.step_times.append(time.perf_counter() - t0)
            self.pos += run.per_rank_batch
        self.steps += steps
        self.seconds += sum(self.step_times[-steps:]) if steps else 0.0

    @property
    def step_s(self) -> float:
        """Median step time, the first step left out (it pays for allocations)."""
        times = self.step_times[1:] or self.step_times
        return float(np.median(times)) if times else 0.0

    def score(self) -> tuple[float, float]:
        """(validation accuracy, seconds it took)."""
        t0 = time.perf_counter()
        acc = loop.val_accuracy(self.run)
        took = time.perf_counter() - t0
        self.seconds += took
        return acc, took

    def close(self) -> None:
        self.run.cache = None  # shared: closed once by the search
        self.run.close()
        for module in (self.run.model, *self.run.teachers):  # as train() leaves them: the build goes on on the CPU
            module.to(device="cpu")


def proxy_subset(data: Dataset, samples: int, seed: int) -> Dataset:
    """A seeded draw of the training split (validation untouched; the test split is left out entirely)."""
    n = len(data.y_train)
    idx = np.sort(np.random.default_rng(seed).permutation(n)[:min(n, samples)])
    return dataclasses.replace(data, x_train=data.x_train[idx], y_train=data.y_train[idx],
                               x_test=data.x_val[:0], y_test=data.y_val[:0], raw_test=None, source_test=None)


def noise(a: float, b: float, n: int) -> float:
    """Standard error of the difference of two validation accuracies measured on ``n`` samples each."""
    return math.sqrt((a * (1 - a) + b * (1 - b)) / max(n, 1))


def plan_first_rung(step_s: list[float], score_s: list[float], left_s: float, protected: int = 0) -> int:
    """The most first-rung steps such that the whole halving fits in ``left_s``. Survivors are assumed to be the
    slowest finalists (the plan is an upper bound); 0 when nothing fits."""
    slow, slow_score = sorted(step_s, reverse=True), sorted(score_s, reverse=True)
    per_first_step, scoring, before = 0.0, 0.0, 0
    for alive, multiple in _rungs(len(step_s), 1, protected):
        per_first_step += sum(slow[:alive]) * (multiple - before)
        scoring += sum(slow_score[:alive])
        before = multiple
    return max(0, int((left_s - scoring) / per_first_step)) if per_first_step > 0 else 0


def _rungs(n: int, first: int, protected: int = 0) -> list[tuple[int, int]]:
    """(finalists alive at most, total steps each has trained by the end of the rung) per rung. The ``protected``
    finalists train every rung; the others halve down to the last two of all (or one challenger beside the
    protected): the best of those is the winner, so no rung trains a lone survivor."""
    protected = min(protected, n)
    out, challengers, total = [], n - protected, first
    while True:
        out.append((challengers + protected, total))
        if challengers + protected <= 2 or challengers <= 1:
            return out
        challengers, total = math.ceil(challengers / ETA), total * ETA


def search(base: Finalist, more: Callable[[], list[Finalist]], data: Dataset, config: TrainConfig,
           teachers: list[nn.Module], expected_build_s: Callable[[float], float], share: float = COST_SHARE,
           log: Callable[[str], None] = print) -> Outcome:
    """Successive halving over ``base`` (the budget's own choice) and the finalists ``more()`` gives (called only
    once the search is known to fit its cap: finding them can cost seconds). ``expected_build_s(step_s)`` is the
    build's expected time given the measured step time of ``base``."""
    t0 = time.perf_counter()
    cfg = proxy_config(config)
    record: dict[str, Any] = {"ran": False, "share": share, "rule": RULE.format(eta=ETA), "finalists": 1,
                              "val_samples": int(len(data.y_val)), "test_split": "never read"}
    subset = proxy_subset(data, MAX_SUBSET, config.seed)
    step_s, score_s = _probe_cost(base, subset, cfg, teachers)
    expected = expected_build_s(step_s)
    cap = share * expected
    record.update(train_samples=int(len(subset.y_train)), expected_build_s=round(expected, 2), cap_s=round(cap, 2),
                  base_step_s=round(step_s, 6))
    minimum = 2 * (MIN_RUNG_STEPS + PROBE_STEPS) * step_s + 4 * score_s
    if time.perf_counter() - t0 + minimum > cap:
        return _skipped([base], record, f"the smallest search (2 finalists x {MIN_RUNG_STEPS} steps, about "
                        f"{time.perf_counter() - t0 + minimum:.1f} s) exceeds {share:.0%} of the build's expected "
                        f"{expected:.0f} s", t0)
    finalists = [dataclasses.replace(base, protected=True)] + [f for f in more() if f.name != base.name]
    record.update(finalists=len(finalists), finding_s=round(time.perf_counter() - t0, 3))
    if len(finalists) < 2:
        return _skipped(finalists, record, "one student fits the budget: nothing to rank", t0)
    cache_t0 = time.perf_counter()
    cache = _cache(subset, teachers, cfg)
    record["teacher_pass_s"] = round(time.perf_counter() - cache_t0, 3)
    proxies: dict[str, Proxy] = {}
    try:
        return _halve(finalists, subset, cfg, teachers, cache, proxies, cap, expected, share, record, t0, log)
    finally:
        for p in proxies.values():
            p.close()
        cache.close()


def _cache(subset: Dataset, teachers: list[nn.Module], cfg: TrainConfig) -> TeacherCache:
    runner = TeacherRunner(teachers, [])
    try:
        return TeacherCache.build(runner, subset.x_train, torch.device("cpu"), cfg.memmap_threshold_mb)
    finally:
        runner.close()


def _probe_cost(base: Finalist, subset: Dataset, cfg: TrainConfig, teachers: list[nn.Module]) -> tuple[float, float]:
    """(step seconds, validation seconds) of ``base``, measured on a few batches with their own small teacher pass,
    before anything larger is spent."""
    few = dataclasses.replace(subset, x_train=subset.x_train[:PROBE_STEPS * cfg.batch_size],
                              y_train=subset.y_train[:PROBE_STEPS * cfg.batch_size])
    cache = _cache(few, teachers, cfg)
    proxy = Proxy(base, few, cfg, teachers, cache)
    try:
        proxy.advance(PROBE_STEPS)
        return proxy.step_s, proxy.score()[1]
    finally:
        proxy.close()
        cache.close()


def _probe(f: Finalist, subset: Dataset, cfg: TrainConfig, teachers: list[nn.Module], cache: TeacherCache,
           proxies: dict[str, Proxy]) -> Proxy:
    p = proxies[f.name] = Proxy(f, subset, cfg, teachers, cache)
    p.advance(PROBE_STEPS)
    return p


def _halve(finalists: list[Finalist], subset: Dataset, cfg: TrainConfig, teachers: list[nn.Module],
           cache: TeacherCache, proxies: dict[str, Proxy], cap: float, expected: float, share: float,
           record: dict[str, Any], t0: float, log: Callable[[str], None]) -> Outcome:
    scores: dict[str, float] = {}
    for f in finalists:  # the budget's own choice first: it is never left out
        proxy = _probe(f, subset, cfg, teachers, cache, proxies)
        scores[f.name] = proxy.score()[1]
        if time.perf_counter() - t0 + 2 * MIN_RUNG_STEPS * proxy.step_s > cap:
            break
    pool = [f for f in finalists if f.name in proxies]
    first = 0
    while len(pool) >= 2:
        left = cap - (time.perf_counter() - t0)
        first = min(plan_first_rung([proxies[f.name].step_s for f in pool], [scores[f.name] for f in pool], left,
                                    sum(f.protected for f in pool)),
                    max(MIN_RUNG_STEPS, math.ceil(len(subset.y_train) / cfg.batch_size)))
        if first >= MIN_RUNG_STEPS:
            break
        pool = pool[:-1]  # the least capable finalist goes first; the budget's own choice never
    if len(pool) < 2:
        return _skipped(finalists, record, f"no two finalists can train {MIN_RUNG_STEPS} steps each inside "
                        f"{share:.0%} of the build's expected {expected:.0f} s", t0)
    return _run_rungs(pool, finalists, proxies, first, record, t0, log)


def _run_rungs(pool: list[Finalist], finalists: list[Finalist], proxies: dict[str, Proxy], first: int,
               record: dict[str, Any], t0: float, log: Callable[[str], None]) -> Outcome:
    history: dict[str, list[dict[str, Any]]] = {f.name: [] for f in finalists}
    alive, rungs = list(pool), []
    n_val = record["val_samples"]
    protected = [f for f in pool if f.protected]
    for r, (_, total) in enumerate(_rungs(len(pool), first, len(protected))):
        for f in alive:
            p = proxies[f.name]
            p.advance(max(0, total - p.steps))
            acc, _ = p.score()
            history[f.name].append({"rung": r, "steps": p.steps, "val_accuracy": acc})
        alive.sort(key=lambda f: history[f.name][-1]["val_accuracy"], reverse=True)
        rungs.append({"rung": r, "steps": total, "trained": [f.name for f in alive]})
        log(f"selection (accuracy): rung {r}, {total} steps: " + ", ".join(
            f"{f.name} {history[f.name][-1]['val_accuracy']:.4f}" for f in alive))
        challengers = [f for f in alive if not f.protected]
        alive = [f for f in alive if f.protected or f in challengers[:math.ceil(len(challengers) / ETA)]]
    ranking = sorted(pool, key=lambda f: (len(history[f.name]), history[f.name][-1]["val_accuracy"]), reverse=True)
    chosen, why = _decide(ranking, finalists[0], history, n_val)
    log(f"selection (accuracy): {chosen.name}: {why}")
    record.update(ran=True, first_rung_steps=first, rungs=rungs, chosen=chosen.name, why=why,
                  time_s=round(time.perf_counter() - t0, 2),
                  candidates=[_row(f, proxies.get(f.name), history[f.name], f.name == chosen.name, pool)
                              for f in finalists])
    return Outcome(chosen, [chosen] + [f for f in ranking if f is not chosen], record)


def _decide(ranking: list[Finalist], base: Finalist, history: dict[str, list[dict[str, Any]]],
            n_val: int) -> tuple[Finalist, str]:
    """The best at the last rung, unless the budget's own choice is within noise of it where both were scored."""
    best = ranking[0]
    if best is base:
        return base, "the budget's own choice reached the best proxy accuracy"
    rung = len(history[base.name]) - 1
    a, b = history[best.name][rung]["val_accuracy"], history[base.name][rung]["val_accuracy"]
    margin = noise(a, b, n_val)
    steps = history[base.name][rung]["steps"]
    if a - b > margin:
        return best, (f"{a:.4f} vs the budget's own choice {b:.4f} after {steps} steps: better by "
                      f"{100 * (a - b):.2f} points, more than the noise ({100 * margin:.2f})")
    return base, (f"the best, {best.name}, scored {a:.4f} vs {b:.4f} after {steps} steps: within the noise "
                  f"({100 * margin:.2f} points), so the budget's own choice stands")


def _row(f: Finalist, proxy: Proxy | None, scores: list[dict[str, Any]], chosen: bool,
         pool: list[Finalist]) -> dict[str, Any]:
    if chosen:
        status = "chosen"
    elif f not in pool:
        status = "not trained"
    else:
        status = "eliminated"
    return {"name": f.name, "family": f.family, "config": f.config, "params": f.params, "macs": f.macs,
            "why": f.why, "latency_ms": f.latency_ms, "status": status,
            "proxy_accuracy": scores[-1]["val_accuracy"] if scores else None, "scores": scores,
            "step_ms": None if proxy is None else round(1000 * proxy.step_s, 3),
            "train_s": None if proxy is None else round(proxy.seconds, 3)}


def _skipped(finalists: list[Finalist], record: dict[str, Any], why: str, t0: float) -> Outcome:
    record.update(ran=False, why=why, time_s=round(time.perf_counter() - t0, 2),
                  candidates=[_row(f, None, [], i == 0, []) for i, f in enumerate(finalists)])
    return Outcome(None, list(finalists), record)
