"""``edgekd bench RUN --remote user@jetson --runtime tensorrt``: the engine TensorRT builds on the device, timed.

An engine is tied to its GPU and TensorRT version, so it is built where it runs: the shipped ONNX artifact goes
over SSH (``edgekd.bench``'s transport: scp, or a plain ssh stream for a host without sftp), the device checks
every file's sha256 (``sha256sum -c``) and, in the same command, ``trtexec`` builds the engine with fixed
``--shapes`` (batch 1) in the artifact's precision (``--fp16``; ``--int8`` for an explicitly quantized Q/DQ
graph), then times it with ``--exportTimes`` and describes it with ``--exportLayerInfo``. Percentiles come from the
runner's own statistics over the exported per-inference latencies; each layer's realised precision is recorded,
and a compute layer left in float in an int8/fp16 engine is named (``gate_rules`` judges it).
"""

from __future__ import annotations

import shlex
import tarfile
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.bench import (
    DeviceRun,
    Remote,
    RemoteError,
    SshConfig,
    _explain_ssh,
    _merge_and_refresh,
    _run,
    check_remotes,
    check_ssh_config,
    copy_bundle,
    on_device,
)
from edgekd.bundle import load_run
from edgekd.devices import trtexec
from edgekd.devices.common import device_entry, require_target, shipped_of_format, tail
from edgekd.errors import EdgekdError
from edgekd.io import sha256_file
from edgekd.runner import percentiles
from edgekd.targets import TargetProfile

TRTEXEC = "/usr/src/tensorrt/bin/trtexec"  # where JetPack installs it (not on PATH by default)
BLOCKS = 5
DESCRIBE = ("uname -m; nproc; grep -m1 MemTotal /proc/meminfo; grep -m1 'model name' /proc/cpuinfo; "
             "tr -d '\\000' < /proc/device-tree/model 2>/dev/null; echo")
PRECISION_FLAGS = {"fp16": ["--fp16"], "int8": ["--int8", "--fp16"], "fp32": []}


def onnx_shapes(path: Path) -> str:
    """trtexec's ``--shapes`` for batch 1: each graph input with its dynamic dimensions fixed at 1."""
    try:
        import onnx  # lazy: optional heavy dependency (the onnx extra)
    except ImportError:
        raise EdgekdError("reading the ONNX inputs for trtexec --shapes needs onnx", "pip install 'edgekd[onnx]'") \
            from None
    try:
        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception as exc:  # noqa: BLE001 - protobuf's DecodeError and friends: a damaged file, said once
        raise EdgekdError(f"cannot read the inputs of {path.name} for trtexec --shapes ({str(exc)[:120]})",
                          "rebuild the run with `edgekd build`") from None
    constants = {i.name for i in graph.initializer}
    shapes = []
    for value in graph.input:
        if value.name in constants:
            continue
        dims = [d.dim_value if d.dim_value > 0 else 1 for d in value.type.tensor_type.shape.dim]
        shapes.append(f"{value.name}:{'x'.join(str(d) for d in dims)}")
    return ",".join(shapes)


def make_tarball(run_dir: Path, entries: list[dict[str, Any]], folder: Path) -> Path:
    """The artifacts' files and a SHA256SUMS of the manifest's values: what the device checks before trtexec."""
    sums = folder / "SHA256SUMS"
    files = {f["path"]: f["sha256"] for e in entries for f in e["files"]}
    sums.write_text("".join(f"{sha}  {name}\n" for name, sha in files.items()))
    tarball = folder / "edgekd-tensorrt.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        for name in files:
            tar.add(run_dir / name, arcname=name)
        tar.add(sums, arcname=sums.name)
    return tarball


def describe_remote(remote: Remote, ssh: SshConfig) -> dict[str, Any]:
    proc = _run([*ssh.base(remote, "ssh"), "--", remote.destination, DESCRIBE], ssh.connect_timeout + 60)
    if proc.returncode != 0:
        raise RemoteError(_explain_ssh(remote, "describing the device", proc))
    return parse_description(proc.stdout)


def parse_description(text: str) -> dict[str, Any]:
    """The machine as the identity rules see it, from ``DESCRIBE``'s lines: arch, cores, MemTotal, the CPU's model
    name (x86) and the device-tree model (a Jetson's "NVIDIA Jetson Orin Nano Developer Kit")."""
    lines = [ln.strip() for ln in text.splitlines()] + [""] * 5
    memory = lines[2].split()[1] if len(lines[2].split()) > 1 and lines[2].split()[1].isdigit() else None
    has_cpu = lines[3].startswith("model name") and ":" in lines[3]  # ARM cpuinfo has no model name line
    cpu = lines[3].split(":", 1)[1].strip() if has_cpu else ""
    board = lines[4] if has_cpu else lines[3]
    return {"arch": lines[0][:40], "cores": int(lines[1]) if lines[1].isdigit() else None,
            "memory_mb": int(memory) // 1024 if memory else None, "cpu": cpu[:200], "board": board[:200]}


def _trtexec_command(work: str, tool: str, entry: dict[str, Any], shapes: str, runs: int, warmup_ms: int) -> str:
    name = entry["path"]
    args = [tool, f"--onnx={name}", f"--saveEngine={name}.engine", f"--shapes={shapes}",
            *PRECISION_FLAGS.get(entry["precision"], []), f"--exportTimes={name}.times.json",
            f"--exportLayerInfo={name}.layers.json", "--profilingVerbosity=detailed", f"--iterations={runs}",
            "--duration=0", f"--warmUp={warmup_ms}", "--avgRuns=1"]
    return (f"cd {shlex.quote(work)} && sha256sum -c SHA256SUMS >/dev/null && "
            + " ".join(shlex.quote(a) for a in args) + " 2>&1")


def _fetch(remote: Remote, ssh: SshConfig, path: str, what: str) -> str:
    proc = _run([*ssh.base(remote, "ssh"), "--", remote.destination, f"cat {shlex.quote(path)}"],
                ssh.connect_timeout + 120)
    if proc.returncode != 0:
        raise RemoteError(f"{remote.destination}: trtexec wrote no {what}: {tail(proc.stderr)}")
    return proc.stdout


def _latency(samples: list[float]) -> tuple[dict[str, float], dict[str, Any]]:
    """The runner's statistics over trtexec's per-inference latencies, in BLOCKS consecutive blocks."""
    stats = percentiles(samples)
    size = max(1, len(samples) // BLOCKS)
    medians = [float(np.median(samples[i:i + size])) for i in range(0, size * BLOCKS, size) if samples[i:i + size]]
    med = float(np.median(medians))
    noise = float(100.0 * (max(medians) - min(medians)) / med) if med > 0 else 0.0
    latency = {k: stats[k] for k in ("p50", "p90", "p95", "p99", "mean", "std")}
    return latency, {**stats, "runs": len(samples), "blocks": len(medians), "block_medians": medians,
                     "noise_pct": noise, "samples_ms": [round(s, 6) for s in samples],
                     "percentiles_from": "trtexec --exportTimes latencyMs, the runner's statistics"}


def measure_engine(remote: Remote, ssh: SshConfig, work: str, tool: str, entry: dict[str, Any], shapes: str,
                   runs: int) -> dict[str, Any]:
    """Build and time one engine on the device; its device_results row (a RemoteError says why not)."""
    proc = _run([*ssh.base(remote, "ssh"), "--", remote.destination,
                 _trtexec_command(work, tool, entry, shapes, runs, 200)], ssh.command_timeout)
    if proc.returncode == 255:
        raise RemoteError(_explain_ssh(remote, "running trtexec", proc))
    if "did NOT match" in proc.stdout + proc.stderr:
        raise RemoteError(f"{remote.destination}: {entry['path']} arrived with another sha256 than the manifest's; "
                          "nothing was run")
    if proc.returncode == 127:
        raise RemoteError(f"{remote.destination}: trtexec not found at {tool}: pass --benchmark-tool with its path "
                          f"on the device (JetPack: {TRTEXEC})")
    try:
        log = trtexec.parse_log(proc.stdout)
        if proc.returncode != 0 or not log.passed:
            why = "; ".join(log.errors) or tail(proc.stdout + proc.stderr)
            raise RemoteError(f"{remote.destination}: trtexec could not build or run the engine for "
                              f"{entry['path']}: {why}")
        latency, detail = _latency(trtexec.parse_times(_fetch(remote, ssh, f"{work}/{entry['path']}.times.json",
                                                              "--exportTimes file")))
        layers = trtexec.parse_layers(_fetch(remote, ssh, f"{work}/{entry['path']}.layers.json",
                                             "--exportLayerInfo file"), entry["precision"])
    except trtexec.TrtexecOutputError as exc:
        raise RemoteError(f"{remote.destination}: {exc}") from None
    return {"path": entry["path"], "format": "onnx", "precision": entry["precision"], "sha256": entry["sha256"],
            "sha256_verified": True, "runtime": "tensorrt", "runtime_version": log.version,
            "engine_precision": entry["precision"], "engine_build_s": log.build_s, "latency_ms": latency,
            "noise_pct": detail["noise_pct"], "latency_ms_detail": detail, "trtexec_summary_ms": log.summary,
            "peak_memory_mb": log.device_memory_mb,
            "memory": {"judged": "TensorRT-managed device memory of the engine and its execution context "
                                 "(trtexec [MemUsageChange])"},
            "layer_precisions": layers.model_dump(),
            "accuracy_source": "host-measured (report.json artifacts[]): trtexec times random inputs"}


def run_tensorrt(remote: Remote, tarball: Path, entries: list[dict[str, Any]], shapes: dict[str, str],
                 ssh: SshConfig, tool: str, runs: int, target: TargetProfile, declared: bool) -> DeviceRun:
    """One Jetson: copy, verify, build and time every artifact in a fresh work directory (``bench.on_device``)."""

    def measure(work: str) -> tuple[dict[str, Any], list[str]]:
        machine = describe_remote(remote, ssh)
        transport = copy_bundle(remote, tarball, work, ssh)
        proc = _run([*ssh.base(remote, "ssh"), "--", remote.destination,
                     f"cd {shlex.quote(work)} && tar xzf {shlex.quote(tarball.name)}"], ssh.command_timeout)
        if proc.returncode != 0:
            raise RemoteError(_explain_ssh(remote, "unpacking the artifacts", proc))
        rows = [measure_engine(remote, ssh, work, tool, e, shapes[e["path"]], runs) for e in entries]
        how = f"TensorRT trtexec over SSH on {remote.destination} (engine built on the device), sent by {transport}"
        return device_entry(remote.spec, {**machine, "delegate": "tensorrt"}, target, declared, how, rows, []), []

    return on_device(remote, ssh, measure)


def bench_tensorrt(run_dir: str | Path, remotes: list[str], ssh: SshConfig, tool: str | None = None,
                   runs: int | None = None, declared: bool = False, say: Any = print) -> list[DeviceRun]:
    """Every device in parallel; the successes merged into report.json with its gate, report.md and report.html
    refreshed (as ``edgekd.bench.bench_remote`` does for the runner)."""
    run_dir = Path(run_dir)
    parsed = check_remotes(remotes)
    if not parsed:
        raise EdgekdError("--runtime tensorrt needs a device", "pass --remote USER@HOST[:PORT] (the Jetson)")
    check_ssh_config(ssh)
    tool = check_tool_path(tool)
    report, entries = shipped_of_format(run_dir, "onnx", "TensorRT builds its engine from the ONNX artifact")
    target = require_target(report)
    for e in entries:  # the device checks again; this keeps a changed file from even being parsed here
        if sha256_file(run_dir / e["path"]) != e["sha256"]:
            raise EdgekdError(f"{run_dir / e['path']} is not the file the build hashed (sha256 differs from the "
                              "manifest's)", "rebuild the run with `edgekd build` (or restore the file)")
    shapes = {e["path"]: onnx_shapes(run_dir / e["path"]) for e in entries}
    with tempfile.TemporaryDirectory(prefix="edgekd-trt-") as tmp:
        tarball = make_tarball(run_dir, entries, Path(tmp))
        with ThreadPoolExecutor(max_workers=min(16, len(parsed))) as pool:
            done = list(pool.map(lambda r: run_tensorrt(r, tarball, entries, shapes, ssh, tool,
                                                        runs or 200, target, declared), parsed))
    for run in done:
        say(f"  {run.remote}: " + (f"ok in {run.seconds:.1f}s" if run.ok else f"FAILED: {run.error}"))
    good = [r.entry for r in done if r.ok]
    if good:
        fresh, _ = load_run(run_dir)
        _merge_and_refresh(run_dir, fresh, good, say)
    return done


def check_tool_path(tool: str | None) -> str:
    """trtexec's path on the device: one shell word, never an option."""
    tool = tool or TRTEXEC
    if tool.startswith("-") or any(c in tool for c in "\n\r\x00") or len(tool) > 255:
        raise EdgekdError(f"--benchmark-tool {tool!r} is not a path", f"e.g. --benchmark-tool {TRTEXEC}")
    return tool
