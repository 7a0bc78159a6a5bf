"""Bounded search for the most capable student inside a latency budget.

Only measured latencies accept a candidate; predictions only decide what to measure next. The search times a few
seed candidates spread over the MAC range, fits the NNLS predictor, then repeatedly times the most capable
candidates predicted to fit (within the predictor's measured error) until no untimed candidate could beat the best
accepted one, or ``max_measure`` new timings were spent. Cached timings cost nothing and are used first.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgekd.errors import EdgekdError
from edgekd.models.budget import capacity_score
from edgekd.selection.candidates import Candidate
from edgekd.selection.predictor import LatencyPredictor, fit_predictor
from edgekd.selection.timing import Timer, Timing

SEEDS = 5  # timed before any prediction: spread over log-MACs per family, each one's smallest among them
MAX_MEASURE = 12  # new timings per build at most ("bounded": never hundreds of exports)
BATCH = 2  # candidates timed per round after the seeds
# The most capable accepted candidate is timed a second time and chosen only if the slower reading still fits (else
# the search goes on without it): on a shared host one quiet moment made a candidate time at half its later, trained
# latency (benchmarks/results/latency_selection.json). At most this many second timings per build; after that only
# candidates that fitted twice are accepted. Each failed confirmation adds BATCH new timings to ``max_measure``: the
# rejected candidate used up timings that found nothing (on a loaded host the cap of 12 stopped a search early).
CONFIRM = 6
DEFAULT_MARGIN_PCT = 25.0  # a prediction's margin before the predictor has a measured error
# Capacity among candidates that fit: the MAC fit's own score (models.budget.capacity_score: MACs x a depth discount
# x the family's MAC weight), measured against final distilled accuracy by benchmarks/capacity_proxy.py across
# widths, depths, expansions, resolutions and both image families (Spearman 0.84 on CIFAR-10, where the family
# weight was fitted, 0.86 on Fashion-MNIST). A 1-epoch proxy training scored 0.66 and 0.89: no better on the mean,
# and it would cost a build minutes of training per candidate.
CAPACITY_RULE = ("capacity = MACs x 0.8^(depth-1) x family MAC weight (then params) among candidates whose measured "
                 "latency fits")


def mac_capacity(c: Candidate) -> float:
    return capacity_score(c.family, c.macs, c.config) + c.params / 1e9  # params only break ties


@dataclass
class Selection:
    """The outcome: candidates inside the budget (most capable first), and the record of the whole search."""

    ranked: list[Candidate]
    timings: dict[str, Timing]
    predicted: dict[str, float]
    predictor: LatencyPredictor | None
    record: dict[str, Any] = field(default_factory=dict)


def _fits(t: Timing, budget_ms: float, percentile: int) -> bool:
    return t.at(percentile) * (1 + t.noise_pct / 100.0) <= budget_ms


def _seeds(candidates: list[Candidate], n: int) -> list[Candidate]:
    """About ``n`` candidates spread over log-MACs, the same share from each family (at least two: its smallest and
    its largest): latency per MAC differs between families (dense vs depthwise), so the predictor needs points of
    each, and each family's fastest is timed before the search can conclude that nothing fits."""
    families = sorted({c.family for c in candidates})
    per = max(2, math.ceil(n / len(families)))
    out = []
    for family in families:
        order = sorted((c for c in candidates if c.family == family), key=lambda c: c.macs)
        idx = np.unique(np.round(np.linspace(0, len(order) - 1, min(per, len(order)))).astype(int))
        out += [order[i] for i in idx]
    return out


def select_by_latency(candidates: list[Candidate], timer: Timer, budget_ms: float, percentile: int,
                      capacity: Callable[[Candidate], float] = mac_capacity, max_measure: int = MAX_MEASURE,
                      log: Callable[[str], None] = print) -> Selection:
    t0 = time.perf_counter()
    timings: dict[str, Timing] = {}
    for c in candidates:
        hit = timer.cached(c)
        if hit is not None:
            timings[c.name] = hit
    timer.reused = len(timings)
    log(f"selection: {len(candidates)} candidates; {timer.reused} latency measurement(s) reused from the cache")
    seeds = _seeds(candidates, SEEDS)
    todo = [c for c in seeds if c.name not in timings]
    if len(timings) < len(seeds) and todo:
        timings.update(timer.measure(todo[:max_measure]))
    failed = 0
    while True:
        predictor, predicted = _search(candidates, timings, timer, budget_ms, percentile, capacity,
                                       max_measure + BATCH * failed)
        ranked = sorted((c for c in candidates if c.name in timings
                         and _fits(timings[c.name], budget_ms, percentile)), key=capacity, reverse=True)
        if not ranked or timings[ranked[0].name].confirmed:
            break
        if timer.confirmations >= CONFIRM:  # out of second timings: only what fitted twice is accepted
            ranked = [c for c in ranked if timings[c.name].confirmed]
            break
        failed += not _confirm(ranked[0], timings, timer, budget_ms, percentile, log)
    sel = Selection(ranked, timings, predicted, predictor)
    sel.record = _record(candidates, sel, timer, budget_ms, percentile, capacity, time.perf_counter() - t0)
    sel.record["measure_cap"] = max_measure + BATCH * failed
    sel.record["failed_confirmations"] = failed
    log(f"selection: {timer.measured} measured, {timer.reused} reused, {timer.confirmations} timed twice, "
        f"{len(ranked)} inside {budget_ms:.3g} ms at p{percentile}, in {sel.record['time_s']:.1f}s ({timer.where})")
    if not ranked:
        raise _nothing_fits(candidates, timings, timer, budget_ms, percentile)
    return sel


def _search(candidates: list[Candidate], timings: dict[str, Timing], timer: Timer, budget_ms: float,
            percentile: int, capacity: Callable[[Candidate], float], max_measure: int
            ) -> tuple[LatencyPredictor | None, dict[str, float]]:
    """Rounds of timing the most capable candidates predicted to fit, until none could beat the best accepted one
    or the measurement budget is spent."""
    predictor, predicted = _refit(candidates, timings)
    while timer.measured < max_measure:
        nxt = _next_round(candidates, timings, timer.failures, predicted, predictor, budget_ms, percentile, capacity)
        if not nxt:
            break
        # each round times or fails (and so excludes) every candidate it picks: the pool only shrinks
        timings.update(timer.measure(nxt[:max_measure - timer.measured]))
        predictor, predicted = _refit(candidates, timings)
    return predictor, predicted


def _confirm(best: Candidate, timings: dict[str, Timing], timer: Timer, budget_ms: float, percentile: int,
             log: Callable[[str], None]) -> bool:
    """Time the would-be choice again; its timing becomes the slower reading (a failed run drops it). True when
    it still fits."""
    merged = timer.confirm(best, timings[best.name])
    if merged is None:
        timings.pop(best.name)  # the failure's reason is in timer.failures: never picked again
        return False
    timings[best.name] = merged
    if not _fits(merged, budget_ms, percentile):
        log(f"selection: {best.name} timed again at p{percentile} {merged.at(percentile):.4f} ms "
            f"(noise {merged.noise_pct:.1f} %): outside {budget_ms:.4g} ms, searching on")
        return False
    return True


def _refit(candidates: list[Candidate], timings: dict[str, Timing]) -> tuple[LatencyPredictor | None,
                                                                                 dict[str, float]]:
    timed = [c for c in candidates if c.name in timings]
    # The predictor fits p50 (the steadiest statistic); the percentile is scaled per candidate from it.
    predictor = fit_predictor(timed, [timings[c.name].p50 for c in timed])
    if predictor is None:
        return None, {}
    return predictor, dict(zip((c.name for c in candidates), predictor.predict(candidates).tolist(), strict=True))


def _tail_ratio(timings: dict[str, Timing], percentile: int) -> float:
    ratios = [t.at(percentile) / t.p50 for t in timings.values() if t.p50 > 0]
    return float(np.median(ratios)) if ratios else 1.0


def _next_round(candidates: list[Candidate], timings: dict[str, Timing], failures: dict[str, str],
                predicted: dict[str, float], predictor: LatencyPredictor | None, budget_ms: float, percentile: int,
                capacity: Callable[[Candidate], float]) -> list[Candidate]:
    """The most capable untimed candidates that could fit (prediction within its error) and beat the best
    accepted one."""
    accepted = [capacity(c) for c in candidates if c.name in timings
                and _fits(timings[c.name], budget_ms, percentile)]
    best = max(accepted, default=-math.inf)
    margin = (predictor.loo_error_pct if predictor and predictor.loo_error_pct is not None
              else DEFAULT_MARGIN_PCT) / 100.0
    tail = _tail_ratio(timings, percentile)
    pool = [c for c in candidates if c.name not in timings and c.name not in failures and capacity(c) > best
            and (c.name not in predicted or predicted[c.name] * tail <= budget_ms * (1 + margin))]
    return sorted(pool, key=capacity, reverse=True)[:BATCH]


def _verdict(c: Candidate, sel: Selection, timer: Timer, budget_ms: float, percentile: int) -> tuple[str, str]:
    if c.name in timer.failures:
        return "rejected", timer.failures[c.name]
    t = sel.timings.get(c.name)
    if t is None:
        p = sel.predicted.get(c.name)
        why = "not timed" + (f": predicted {p:.4f} ms p50" if p is not None else "")
        return "rejected", why + ", outside the budget or less capable than one timed inside it"
    value = t.at(percentile) * (1 + t.noise_pct / 100.0)
    twice = ", slower of two timings" if t.confirmed else ""
    if value > budget_ms:
        return "rejected", (f"p{percentile} {t.at(percentile):.4f} ms + noise {t.noise_pct:.1f} % = {value:.4f} ms "
                            f"> {budget_ms:.4g} ms{twice}")
    if sel.ranked and c is sel.ranked[0]:
        return "chosen", f"most capable inside the budget ({value:.4f} ms with noise{twice})"
    return "accepted", f"inside the budget ({value:.4f} ms with noise), less capable than the chosen"


def _record(candidates: list[Candidate], sel: Selection, timer: Timer, budget_ms: float, percentile: int,
            capacity: Callable[[Candidate], float], seconds: float) -> dict[str, Any]:
    rows, tail = [], _tail_ratio(sel.timings, percentile)
    for c in sorted(candidates, key=lambda c: c.macs):
        status, reason = _verdict(c, sel, timer, budget_ms, percentile)
        t = sel.timings.get(c.name)
        rows.append({"name": c.name, "family": c.family, "config": c.config, "params": c.params, "macs": c.macs,
                     "latency_ms": None if t is None else {**t.to_dict(), "value": t.at(percentile),
                                                           "source": "cache" if t.cached else "measured"},
                     "predicted_ms": _times(sel.predicted.get(c.name), tail), "capacity": capacity(c),
                     "status": status, "reason": reason})
    return {"mode": "latency", "budget_ms": budget_ms, "percentile": percentile, "format": timer.format,
            "precision": timer.precision, "threads": timer.threads, "measured_on": timer.where,
            "host_proxy": timer.host_proxy, "measured": timer.measured, "reused": timer.reused,
            "confirmations": timer.confirmations,
            "predicted_only": sum(1 for c in candidates if c.name not in sel.timings),
            "time_s": round(seconds, 2), "capacity_rule": CAPACITY_RULE, "tail_ratio": tail,
            "predictor": sel.predictor.to_dict() if sel.predictor else {"kind": "none", "summary": "too few timings"},
            "candidates": rows}


def _times(value: float | None, factor: float) -> float | None:
    """A p50 prediction carried to the selection's percentile by the median measured p_k / p50 ratio."""
    return None if value is None else max(0.0, value * factor)


def _nothing_fits(candidates: list[Candidate], timings: dict[str, Timing], timer: Timer, budget_ms: float,
                  percentile: int) -> EdgekdError:
    if not timings:
        reasons = "; ".join(sorted(set(timer.failures.values()))[:3]) or "nothing could be timed"
        return EdgekdError(f"no student candidate could be timed on {timer.where}: {reasons}",
                           "check the target's runtime.format/precision, or use --selection mac")
    fastest = min(timings.items(), key=lambda kv: kv[1].at(percentile))
    return EdgekdError(
        f"no student meets the latency budget of {budget_ms:.4g} ms at p{percentile} on {timer.where}: the fastest "
        f"of {len(timings)} timed candidates, {fastest[0]}, takes {fastest[1].at(percentile):.4f} ms "
        f"(noise {fastest[1].noise_pct:.1f} %)",
        "raise student_budget.latency_ms in the target file, or give more threads / a faster runtime")
