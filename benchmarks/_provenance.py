"""The ``provenance`` block every benchmark writes, so a sceptic can re-derive a results file: which code (commit and
dirty flag), which command, which CPU (model and the ISA flags that decide its kernels), how loaded the host was
before and after, which runtimes, which seeds, how long. One typed model so every script writes the same keys.

A timing benchmark states the 1-minute load average it needs (``quiet_load``, its own threads included); when the
host was busier, before, after or at any sample while it ran (every ``LOAD_SAMPLE_S``), :func:`judged` replaces its
verdict with :data:`HOST_BUSY`.

Imported by the scripts in this folder (``from _provenance import ...``); reads /proc and package metadata only,
so it imports no runtime that a script does not already load.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

REPO = Path(__file__).resolve().parent.parent
HOST_BUSY = "invalid: host busy"
LOAD_SAMPLE_S = 5.0  # how often a running benchmark samples the 1-minute load average
# CPU flags that change which kernels torch / onnxruntime / OpenVINO run (int8 VNNI, bf16, AMX tiles)
FLAG_PREFIXES = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "avx_vnni", "amx", "fma", "asimd",
                 "asimddp", "i8mm", "bf16", "sve")
# distribution name -> key; read from the installed metadata, never imported
RUNTIMES = {"numpy": "numpy", "torch": "torch", "onnxruntime": "onnxruntime", "openvino": "openvino",
            "ai-edge-litert": "ai_edge_litert", "tflite-runtime": "tflite_runtime", "nncf": "nncf"}


OUT_HELP = "default: benchmarks/results/NAME.json (--quick: benchmarks/.cache/quick/NAME.json)"


def results_path(name: str, quick: bool) -> Path:
    """Where a script writes when ``--out`` is not given: ``benchmarks/results/NAME.json``, or for a ``--quick``
    run the git-ignored ``benchmarks/.cache/quick/NAME.json``, so a quick run never overwrites a real result."""
    folder = REPO / "benchmarks" / (".cache/quick" if quick else "results")
    return folder / f"{name}.json"


class Provenance(BaseModel):
    """Where, how and from what code one results file was measured."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    commit: str
    dirty: bool
    dirty_files: list[str]
    command: str
    started_utc: str
    cpu: str
    cpu_flags: list[str]
    cores: int
    loadavg_before: list[float]
    loadavg_after: list[float]
    # the highest 1-minute load average seen while it ran (sampled every LOAD_SAMPLE_S): a busy spell in the middle
    # of a long run shows here, not in the load before and after; None in files written before it was recorded
    loadavg_max_1min: float | None = None
    quiet_load: float | None
    host_busy: bool
    runtimes: dict[str, str | None]
    seeds: list[int]
    wall_s: float
    quick: bool


def _git(*args: str) -> str:
    try:
        proc = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return proc.stdout if proc.returncode == 0 else ""


def _cpuinfo() -> tuple[str, list[str]]:
    """(model name, the flags that matter) from /proc/cpuinfo; the platform's name and no flags elsewhere."""
    name, flags = "", set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("model name", "Model", "CPU part") and not name:
                    name = value.strip()
                elif key in ("flags", "Features") and not flags:
                    flags = {f for f in value.split() if f.startswith(FLAG_PREFIXES)}
    except OSError:
        pass
    return name or platform.processor() or platform.machine(), sorted(flags)


def host_identity() -> dict[str, Any]:
    """The CPU model, the flags that decide its kernels and the core count: what makes two timings comparable."""
    cpu, flags = _cpuinfo()
    return {"cpu": cpu, "cpu_flags": flags, "cores": os.cpu_count() or 1}


def runtime_versions() -> dict[str, str | None]:
    """Python and each runtime's installed version (None: not installed), from package metadata."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for dist, key in RUNTIMES.items():
        try:
            out[key] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[key] = None
    return out


def _load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def _command() -> str:
    argv = list(sys.argv)
    if argv and Path(argv[0]).is_absolute() and Path(argv[0]).is_relative_to(REPO):
        argv[0] = str(Path(argv[0]).relative_to(REPO))
    return shlex.join(["python", *argv])


class Recorder:
    """Started when a benchmark starts (load before, clock); :meth:`finish` takes the rest when it ends."""

    def __init__(self, *, quick: bool, seeds: list[int] | tuple[int, ...] = (), quiet_load: float | None = None):
        self.quick, self.seeds, self.quiet_load = quick, [int(s) for s in seeds], quiet_load
        self.started = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        self.load_before, self.t0 = _load(), time.perf_counter()
        self.load_max, self._done = self.load_before[0], threading.Event()
        threading.Thread(target=self._sample_load, daemon=True).start()

    def _sample_load(self) -> None:
        while not self._done.wait(LOAD_SAMPLE_S):
            self.load_max = max(self.load_max, _load()[0])

    def finish(self) -> Provenance:
        self._done.set()
        load_after = _load()
        load_max = max(self.load_max, load_after[0])
        cpu, flags = _cpuinfo()
        dirty = [line[3:] for line in _git("status", "--porcelain", "--untracked-files=no").splitlines() if line]
        busy = self.quiet_load is not None and load_max > self.quiet_load
        return Provenance(
            commit=_git("rev-parse", "HEAD").strip() or "unknown", dirty=bool(dirty), dirty_files=dirty[:50],
            command=_command(), started_utc=self.started, cpu=cpu, cpu_flags=flags, cores=os.cpu_count() or 1,
            loadavg_before=self.load_before, loadavg_after=load_after, loadavg_max_1min=load_max,
            quiet_load=self.quiet_load, host_busy=busy,
            runtimes=runtime_versions(), seeds=self.seeds, wall_s=round(time.perf_counter() - self.t0, 1),
            quick=self.quick)


def judged(verdict: Any, provenance: Provenance | dict) -> Any:
    """The verdict, or :data:`HOST_BUSY` when the load average exceeded the script's quiet threshold."""
    busy = provenance.host_busy if isinstance(provenance, Provenance) else provenance["host_busy"]
    return HOST_BUSY if busy else verdict


def stamped(doc: dict, verdict: Any, provenance: Provenance) -> dict:
    """``doc`` with the keys every results file shares: ``verdict`` (judged), ``quick`` and ``provenance``."""
    return {**doc, "verdict": judged(verdict, provenance), "quick": provenance.quick,
            "provenance": provenance.model_dump()}


def appended(doc: dict, verdict: Any, provenance: Provenance) -> dict:
    """:func:`stamped` for a file that accumulates runs, each carrying its own (judged) provenance: the file-level
    block describes the last write and judges nothing; ``verdict`` judges each run by that run's own block."""
    return stamped(doc, verdict, provenance.model_copy(update={"quiet_load": None, "host_busy": False}))


def add_quick_and_out(parser: argparse.ArgumentParser, quick: dict) -> None:
    """The two options every benchmark has: ``--quick`` (``quick``'s settings: a check that the script runs) and
    ``--out``."""
    parser.add_argument("--quick", action="store_true", help=f"a check that the script runs: {quick}")
    parser.add_argument("--out", help=OUT_HELP)


def parse_quick(parser: argparse.ArgumentParser, argv: list[str] | None, name: str, quick: dict) -> argparse.Namespace:
    """Parse ``argv``; under ``--quick`` the ``quick`` settings replace the options; ``--out`` defaults by
    :func:`results_path`."""
    args = parser.parse_args(argv)
    if args.quick:
        for key, value in quick.items():
            setattr(args, key, value)
    args.out = args.out or str(results_path(name, args.quick))
    return args
