"""What the device paths share: the run's shipped artifacts of one format, the device_results[] entry, and the
latency record a tool's repeated runs give."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgekd import device_identity
from edgekd.bench import report_target
from edgekd.bundle import load_run, select_entries
from edgekd.errors import EdgekdError
from edgekd.targets import TargetProfile

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def tail(text: str, lines: int = 3, width: int = 300) -> str:
    """The last lines of a tool's output for a message: control characters (terminal escapes) removed, capped."""
    kept = [ln.strip() for ln in _CONTROL.sub("", text or "").splitlines() if ln.strip()][-lines:]
    return " | ".join(kept)[-width:] or "(no output)"


def shipped_of_format(run_dir: Path, fmt: str, why: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(report, manifest entries of the shipped ``fmt`` artifacts), or one clear error naming ``why``."""
    report, manifest = load_run(run_dir)
    entries = [e for e in select_entries(report, manifest, run_dir) if e["format"] == fmt]
    if not entries:
        shipped = ", ".join(a["path"] for a in report["artifacts"] if a.get("shipped")) or "nothing"
        raise EdgekdError(f"{run_dir} ships no {fmt} artifact ({shipped}); {why}",
                          f"build for a target whose runtime.format or runtime.also includes {fmt}")
    return report, entries


def require_target(report: dict[str, Any]) -> TargetProfile:
    target = report_target(report)
    if target is None:
        raise EdgekdError(f"the report's target '{report.get('target')}' cannot be loaded, so its delegate and "
                          "threads are unknown", "restore the target file the report names (target_path)")
    return target


def block_latency(block_ms: list[dict[str, float]], percentiles_from: str) -> tuple[dict[str, float], dict]:
    """``latency_ms`` and ``latency_ms_detail`` from several invocations of a tool, each a block of timed runs
    (``median``/``p95``/``p5`` where the tool printed them, else its average stands for the block): p50 and p95 are
    the median over the blocks, noise is the spread of the block medians (as the runner's)."""
    medians = [b.get("median", b["avg"]) for b in block_ms]
    med = float(np.median(medians))
    latency = {"p50": med, "p95": float(np.median([b.get("p95", b["avg"]) for b in block_ms])),
               "mean": float(np.mean([b["avg"] for b in block_ms])),
               "std": float(np.sqrt(np.mean([b.get("std", 0.0) ** 2 for b in block_ms])))}
    if all("p5" in b for b in block_ms):
        latency["p5"] = float(np.median([b["p5"] for b in block_ms]))
    detail = {**latency, "blocks": len(block_ms), "block_medians": medians,
              "runs": int(sum(b.get("count", 0) for b in block_ms)), "percentiles_from": percentiles_from,
              "noise_pct": float(100.0 * (max(medians) - min(medians)) / med) if med > 0 else 0.0}
    return latency, detail


def device_entry(source: str, machine: dict[str, Any], target: TargetProfile, declared: bool, how: str,
                 rows: list[dict[str, Any]], warnings: list[str]) -> dict[str, Any]:
    """One device_results[] item. ``machine.delegate`` records the delegate the tool ran the model with, so that
    an accelerator target counts as measured on its device (``device_identity.from_measured_on``)."""
    found = device_identity.match(target, machine, declared,
                                  accelerated=machine.get("delegate") == target.runtime.delegate)
    identity = {"is_target_device": found.is_target, "declared_target": declared,
                "identity": {"rule": found.rule, "reasons": list(found.reasons)}}
    return {"remote": source, "measured_on": {**machine, **identity, "where": "device", "how": how},
            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "artifacts": rows, "errors": warnings}
