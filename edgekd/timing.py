"""A/B latency in the real runtime, interleaved: the one timing helper behind every "is this one faster?" choice,
and the identity of the host a timing was measured on (timings compare only on one host: the cache keys hold it).

``measure_interleaved`` is used by the ONNX int8 scheme choice, the accuracy-aware quantization's latency cost
and pruning's keep-or-reject verdict. Each round measures one block of every artifact, in alternating order, so
drift (other processes, frequency, thermal state) hits all of them alike; per-round ratios then cancel it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekd.data.inputs import model_input
from edgekd.runner import describe_machine, load_session, measure_latency


@dataclass(frozen=True)
class Interleaved:
    """Per-round p50 (ms) of each artifact, measured alternately in one run."""

    p50s: dict[str, list[float]]

    def median(self, key: str) -> float:
        return float(np.median(self.p50s[key]))

    def medians(self) -> dict[str, float]:
        return {k: self.median(k) for k in self.p50s}

    def ratios(self, baseline: str, candidate: str) -> list[float]:
        """candidate / baseline per round: drift common to a round cancels."""
        return [c / b for b, c in zip(self.p50s[baseline], self.p50s[candidate], strict=True)]


def measure_interleaved(artifacts: dict[str, tuple[Path, str | None]], x: np.ndarray, threads: int = 1,
                        rounds: int = 5, runs: int = 60) -> Interleaved:
    """``artifacts``: name -> (path, precision). Every session is loaded and warmed before the first timed block."""
    x = model_input(x)
    sessions = {k: load_session(str(p), threads, precision) for k, (p, precision) in artifacts.items()}
    for session in sessions.values():
        measure_latency(session, x, runs=10, warmup=10, blocks=1, min_time_s=0)
    keys = list(sessions)
    p50s: dict[str, list[float]] = {k: [] for k in keys}
    for r in range(rounds):
        for k in keys if r % 2 == 0 else keys[::-1]:
            stats, _ = measure_latency(sessions[k], x, runs=runs, warmup=5, blocks=1)
            p50s[k].append(stats["p50"])
    return Interleaved(p50s)


def host_identity() -> str:
    """This machine as the runner describes it: architecture, CPU model, cores, host name."""
    m = describe_machine()
    return f"host:{m['arch']}|{m['cpu']}|{m['cores']}|{m['hostname']}"
