"""The finalists of the accuracy search: the budget's own choice, the MAC-selected student when it fits, then the
most capable fitting student of each (family, resolution, depth), then the next most capable, up to ``MAX_FINALISTS``.

Why by group: capacity ranks within a group well enough, but between groups it is the guess the accuracy search
replaces (a half-resolution or a deeper student loses accuracy that MACs do not show), so each knob gets its best
representative before a second one of any group.

Latency mode first times the candidates that matter (``time_candidates``): the MAC-selected student and the most
capable untimed candidate of each group predicted to fit. The latency search stops timing once nothing untimed could
beat its best by capacity, so a fitting student that would win on accuracy was never timed, hence never a choice.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from edgekd.selection.accuracy_search import Finalist
from edgekd.selection.candidates import Candidate
from edgekd.selection.search import Selection, _fits, _record, _tail_ratio, mac_capacity
from edgekd.selection.timing import Timer

MAX_FINALISTS = 6
EXTRA_TIMINGS = 4  # new timings latency mode spends on finalists, beyond the latency search's own
PREDICTION_MARGIN = 0.25  # a group's candidate is timed when predicted within this share above the budget


def group(family: str, config: dict[str, Any]) -> tuple[str, Any, Any]:
    return family, config.get("resolution"), config.get("depth")


def pick(base: Finalist, fitting: list[Finalist], mac: Finalist | None = None,
         n: int = MAX_FINALISTS) -> list[Finalist]:
    """``base`` first, ``mac`` second (when it fits: it is in ``fitting``), then one per group, then by capacity.
    ``fitting`` is most capable first."""
    names = {f.name for f in fitting}
    out = [base] + ([dataclasses.replace(mac, why="the MAC-selected student (fits the budget)", protected=True)]
                    if mac is not None and mac.name != base.name and mac.name in names else [])
    seen = {group(f.family, f.config) for f in out}
    for f in fitting:
        key = group(f.family, f.config)
        if len(out) < n and key not in seen and f.name not in {o.name for o in out}:
            seen.add(key)
            out.append(dataclasses.replace(f, why=f"most capable fitting {f.family} at resolution "
                                                  f"{key[1] or 'full'}, depth {key[2]}"))
    for f in fitting:
        if len(out) < n and f.name not in {o.name for o in out}:
            out.append(dataclasses.replace(f, why="next most capable fitting"))
    return out[:n]


def of_candidate(c: Candidate, why: str = "", latency_ms: float | None = None) -> Finalist:
    return Finalist(c.family, dict(c.config), int(c.params), int(c.macs), why=why, latency_ms=latency_ms)


def fitting_from_record(record: dict[str, Any]) -> list[Finalist]:
    """Latency mode: the timed candidates inside the budget, most capable first (the record's accepted rows)."""
    rows = [r for r in record.get("candidates", []) if r["status"] in ("chosen", "accepted") and r.get("latency_ms")]
    rows.sort(key=lambda r: r.get("capacity") or 0.0, reverse=True)
    return [Finalist(r["family"], dict(r["config"]), int(r["params"]), int(r["macs"]),
                     latency_ms=float(r["latency_ms"]["value"])) for r in rows]


def time_candidates(candidates: list[Candidate], sel: Selection, timer: Timer, budget_ms: float, percentile: int,
                    must: list[Candidate], extra: int = EXTRA_TIMINGS) -> list[str]:
    """Time ``must`` (the MAC-selected student) and the most capable untimed candidate of each group with no
    fitting member that is predicted to fit; update ``sel`` (ranked, record). Returns the names timed."""
    fitting_groups = {group(c.family, c.config) for c in sel.ranked}
    tail = _tail_ratio(sel.timings, percentile)
    todo = [c for c in must if c.name not in sel.timings and c.name not in timer.failures]
    seen = set(fitting_groups) | {group(c.family, c.config) for c in todo}
    for c in sorted(candidates, key=mac_capacity, reverse=True):
        key, predicted = group(c.family, c.config), sel.predicted.get(c.name)
        if key in seen or c.name in sel.timings or c.name in timer.failures:
            continue
        if predicted is None or predicted * tail <= budget_ms * (1 + PREDICTION_MARGIN):
            seen.add(key)
            todo.append(c)
    todo = todo[:max(extra, len(must))]
    if todo:
        sel.timings.update(timer.measure(todo))
    old = {c.name for c in sel.ranked}  # the latency search's order stands: its choice was timed twice
    sel.ranked = sel.ranked + sorted((c for c in todo if c.name in sel.timings and c.name not in old
                                      and _fits(sel.timings[c.name], budget_ms, percentile)),
                                     key=mac_capacity, reverse=True)
    keep = {k: v for k, v in sel.record.items() if k not in ("candidates", "measured", "time_s")}
    sel.record = {**_record(candidates, sel, timer, budget_ms, percentile, mac_capacity, sel.record["time_s"]),
                  **keep}
    return [c.name for c in todo]
