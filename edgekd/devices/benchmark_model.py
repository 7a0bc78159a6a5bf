"""Parse what TensorFlow Lite's (LiteRT's) ``benchmark_model`` prints: timings, memory, delegation, op profile.

The formats are the tool's own (tensorflow/lite/tools/benchmark/benchmark_model.cc, benchmark_tflite_model.cc,
tensorflow/lite/profiling/profile_summary_formatter.cc, TF 2.10-2.16 / LiteRT 1.x). A device is a foreign
machine, so its output is input: anything garbled, missing or out of range is a ``BenchmarkOutputError`` naming
what was expected, never a traceback and never a number the gate trusts unchecked.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from edgekd.devices.records import Delegation

MAX_OUTPUT_CHARS = 8 << 20  # an op profile of a large graph is a few hundred KB
NUM = r"\d+(?:\.\d*)?(?:[eE][+-]?\d+)?"
_TIMINGS = re.compile(rf"Inference timings in us: Init: ({NUM}), First inference: ({NUM}), "
                      rf"Warmup \(avg\): ({NUM}), Inference \(avg\): ({NUM})")
_STATS = re.compile(rf"\bcount=(\d+)((?:\s+[a-z0-9_]+=-?{NUM})*)")
_FOOTPRINT = re.compile(rf"Memory footprint delta from the start of the tool \(MB\): init=({NUM}) overall=({NUM})")
_PEAK = re.compile(rf"(?:Overall peak memory footprint \(MB\) via periodic monitoring|Peak memory footprint \(MB\)):"
                   rf" ({NUM})")
_APPLIED = re.compile(r"Explicitly applied (\w+) delegate, and the model graph will be (completely|partially) "
                      r"executed by the delegate(?: w/ (\d+) delegate kernels)?")
_NOT_APPLIED = re.compile(r"Though (\w+) delegate is explicitly applied, the model graph will not be executed")
_REPLACING = re.compile(r"Replacing (\d+)(?: out of (\d+))? node\(s\) with delegate \((\w+)\) node, "
                        r"yielding (\d+) partitions")
_PROFILE = "Operator-wise Profiling Info for Regular Benchmark Runs"
# benchmark_model's --use_<name> flag and the names its log lines give each delegate.
DELEGATE_FLAGS = {"nnapi": "--use_nnapi=true", "gpu": "--use_gpu=true", "xnnpack": "--use_xnnpack=true"}


class BenchmarkOutputError(ValueError):
    """benchmark_model's output does not say what edgekd needs; the message says what is missing."""


@dataclass
class BenchmarkRun:
    """One invocation of benchmark_model, in milliseconds and MB."""

    init_ms: float
    first_ms: float
    warmup_ms: float
    avg_ms: float
    timed: dict[str, float]  # the timed runs' statistics line in ms: count, min, max, avg, std (+ p5, median, p95)
    memory_init_mb: float | None = None
    memory_overall_mb: float | None = None
    process_peak_mb: float | None = None
    delegation: Delegation | None = None
    node_rows: list[tuple[str, str]] = field(default_factory=list)  # (node type, name) of the op profile

    @property
    def has_percentiles(self) -> bool:
        return "median" in self.timed and "p95" in self.timed


def _number(text: str, what: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value < 0 or value > 1e12:
        raise BenchmarkOutputError(f"benchmark_model printed an unusable {what}: {text[:40]!r}")
    return value


def _timed_stats(lines: list[str]) -> dict[str, float]:
    """The statistics line of the timed runs: the last ``count=`` line after the last "Running benchmark" header
    (the first header is the warm-up's)."""
    headers = [i for i, ln in enumerate(lines) if "Running benchmark for at least" in ln]
    start = headers[-1] if headers else 0
    found = None
    for ln in lines[start:]:
        m = _STATS.search(ln)
        if m and "Timings (microseconds)" not in ln:
            found = m
            break
    if found is None:
        raise BenchmarkOutputError("benchmark_model printed no statistics line (count=... avg=...) for its timed "
                                   "runs")
    stats = {"count": _number(found.group(1), "run count")}
    for key, value in re.findall(rf"([a-z0-9_]+)=(-?{NUM})", found.group(2)):
        stats[key] = _number(value, f"statistic {key}") / (1.0 if key == "count" else 1000.0)
    if stats["count"] < 1 or "avg" not in stats:
        raise BenchmarkOutputError("benchmark_model's statistics line has no runs or no average")
    return stats


def parse_output(text: str, delegate: str) -> BenchmarkRun:
    """One benchmark_model run's output (stdout and stderr together); ``delegate``: the one it was told to use."""
    if not isinstance(text, str) or len(text) > MAX_OUTPUT_CHARS:
        raise BenchmarkOutputError(f"benchmark_model's output is over {MAX_OUTPUT_CHARS} characters")
    m = _TIMINGS.search(text)
    if m is None:
        raise BenchmarkOutputError("benchmark_model printed no 'Inference timings in us: Init: ..., Inference (avg): "
                                   "...' line")
    init, first, warm, avg = (_number(v, "timing") / 1000.0 for v in m.groups())
    run = BenchmarkRun(init, first, warm, avg, _timed_stats(text.splitlines()))
    if (fp := _FOOTPRINT.search(text)) is not None:
        run.memory_init_mb, run.memory_overall_mb = (_number(v, "memory footprint") for v in fp.groups())
    if (peak := _PEAK.search(text)) is not None:
        run.process_peak_mb = _number(peak.group(1), "peak memory footprint")
    run.node_rows = profile_rows(text)
    if delegate in DELEGATE_FLAGS:
        run.delegation = delegation(text, delegate, run.node_rows)
    return run


# --------------------------------------------------------------------------------------------- op profile
def _row_pattern(header: str) -> re.Pattern[str] | None:
    """A row regex from the profile table's header (``[node type] [first] [avg ms] ... [times called] [Name]``):
    the node type may hold spaces (XNNPACK's "Convolution (NHWC, QC8) GEMM"), so the numbers anchor the row."""
    columns = re.findall(r"\[([^\]]+)\]", header)
    if len(columns) < 3 or columns[0].lower() != "node type" or columns[-1].lower() != "name":
        return None
    numbers = r"".join(rf"\s+-?{NUM}%?" for _ in columns[1:-1])
    return re.compile(rf"^\s*(?P<type>\S.*?){numbers}\s+(?P<name>\S.*?)\s*$")


def profile_rows(text: str) -> list[tuple[str, str]]:
    """(node type, name) of each row of the "Run Order" table of the regular runs' op profile; [] without one."""
    at = text.find(_PROFILE)
    if at < 0:
        return []
    lines = text[at:].splitlines()[1:]
    header = next((i for i, ln in enumerate(lines[:5]) if "[node type]" in ln.lower()), None)
    pattern = _row_pattern(lines[header]) if header is not None else None
    if pattern is None:
        raise BenchmarkOutputError("benchmark_model's op profile has no '[node type] ... [Name]' table header")
    rows = []
    for ln in lines[header + 1:]:
        if not ln.strip() or ln.lstrip().startswith("="):
            break
        m = pattern.match(ln)
        if m is None:
            raise BenchmarkOutputError(f"benchmark_model's op profile has a row it cannot read: {ln.strip()[:120]!r}")
        rows.append((m.group("type")[:200], m.group("name")[:200]))
    return rows


def _node_home(node_type: str, name: str) -> str:
    """Where one profiled node ran: a delegate's partition node, an op inside XNNPACK, or a TFLite CPU kernel."""
    lowered = node_type.lower()
    if "delegate" in lowered:
        return next((d for d in ("nnapi", "gpu", "xnnpack") if d in lowered), "other delegate")
    if name.startswith("Delegate/"):  # XNNPACK profiles the operators inside its partitions under this prefix
        return "xnnpack"
    return "cpu"


def operators_by_home(rows: list[tuple[str, str]]) -> dict[str, dict[str, int]]:
    homes: dict[str, dict[str, int]] = {}
    for node_type, name in rows:
        ops = homes.setdefault(_node_home(node_type, name), {})
        ops[node_type] = ops.get(node_type, 0) + 1
    return homes


# --------------------------------------------------------------------------------------------- delegation
def delegation(text: str, delegate: str, rows: list[tuple[str, str]]) -> Delegation:
    """How much of the graph ``delegate`` took, from the tool's own verdict line and its partition line; which
    operators ran on the CPU, from the op profile (XNNPACK runs on the CPU too, unless it is the delegate)."""
    evidence, status, kernels = [], None, None
    for m in _APPLIED.finditer(text):
        if m.group(1).lower() == delegate:
            status = "full" if m.group(2) == "completely" else "partial"
            kernels = int(m.group(3)) if m.group(3) else None
            evidence.append(m.group(0))
    for m in _NOT_APPLIED.finditer(text):
        if m.group(1).lower() == delegate:
            status = "none"
            evidence.append(m.group(0))
    total = delegated = partitions = None
    for m in _REPLACING.finditer(text):
        if delegate in m.group(3).lower():
            delegated, partitions = int(m.group(1)), int(m.group(4))
            total = int(m.group(2)) if m.group(2) else None
            evidence.append(m.group(0))
    if status is None:
        if delegated is not None and total is not None:
            status = "full" if delegated == total else ("partial" if delegated else "none")
        else:
            status = "none"
            evidence.append(f"benchmark_model printed no line saying the {delegate} delegate was applied")
    homes = operators_by_home(rows)
    on_cpu = {k: v for home, ops in homes.items() if home != delegate and "delegate" not in home
              for k, v in ops.items()}
    cpu_nodes = total - delegated if total is not None and delegated is not None else (sum(on_cpu.values()) or None)
    return Delegation(delegate=delegate, status=status, total_nodes=total, delegated_nodes=delegated,
                      cpu_nodes=cpu_nodes, partitions=partitions, delegate_kernels=kernels,
                      cpu_operators=dict(sorted(on_cpu.items())), operators_by_delegate=homes,
                      evidence=[e[:300] for e in evidence[:8]])
