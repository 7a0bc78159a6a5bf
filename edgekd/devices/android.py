"""``edgekd bench RUN --adb SERIAL``: the shipped TFLite artifact on an Android phone, with the target's delegate.

A phone has no Python for the runner, so the measurement is TensorFlow Lite's own ``benchmark_model`` (the
user's Android build, pushed with ``--benchmark-tool FILE``, or one already on the device at ``--benchmark-tool
/data/local/tmp/...``), run over ``adb`` in a fresh work directory under ``/data/local/tmp``:

* identity from ``getprop`` (``ro.soc.model``, ``ro.product.model``, ``ro.build.version.sdk``,
  ``ro.product.cpu.abi``), ``/proc/meminfo`` and the possible CPUs, matched with the target's identity rules;
* every pushed file's sha256 checked by the phone (``sha256sum -c``) in the same command that runs the tool;
* one run with op profiling (which nodes the delegate took, which operators ran on the CPU), then ``blocks`` timed
  runs (percentiles where the tool prints them, else over the runs; the spread of the block medians is the noise);
* with ``--inference-diff``, TFLite's ``inference_diff`` compares the delegate's outputs with the CPU reference
  kernels on the phone.

adb always gets argument lists; the one command line the phone's shell sees is built from ``shlex.quote``-d parts.
Accuracy against labels stays host-measured (the report says so): both tools feed random inputs.
"""

from __future__ import annotations

import re
import secrets
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekd import device_identity
from edgekd.bench import _merge_and_refresh
from edgekd.bundle import load_run
from edgekd.devices import benchmark_model as bm
from edgekd.devices import inference_diff
from edgekd.devices.common import block_latency, device_entry, require_target, shipped_of_format, tail
from edgekd.errors import EdgekdError
from edgekd.io import sha256_file

DEVICE_TMP = "/data/local/tmp"
DEFAULT_TOOL = f"{DEVICE_TMP}/benchmark_model"
NNAPI_DEPRECATED_SDK = 35  # Android 15
_SERIAL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}\Z")
_DEVICE_PATH = re.compile(r"/[A-Za-z0-9._+/-]{1,255}\Z")
_WORK_DIR = re.compile(rf"{DEVICE_TMP}/edgekd\.[a-z0-9]{{12}}\Z")
_GETPROP = re.compile(r"^\[([A-Za-z0-9._-]+)\]: \[(.*)\]\s*$")
_ABI_ARCH = {"arm64-v8a": "aarch64", "armeabi-v7a": "armv7l", "armeabi": "armv7l", "x86_64": "x86_64", "x86": "i686"}


@dataclass(frozen=True)
class AdbOptions:
    serial: str
    tool: str | None = None  # a local benchmark_model to push, or its path on the device
    inference_diff: str | None = None  # the same for TFLite's inference_diff (outputs vs the CPU on the phone)
    runs: int = 200
    warmup: int = 20
    threads: int | None = None
    blocks: int = 3
    declared: bool = False
    timeout: int = 900


def check_serial(serial: str) -> str:
    if not isinstance(serial, str) or not _SERIAL.match(serial):
        raise EdgekdError(f"--adb {serial!r} is not a device serial",
                          "pass a serial as `adb devices` lists it, e.g. --adb R58M123ABC or --adb 192.168.1.5:5555")
    return serial


class Adb:
    """One device, by serial, through the ``adb`` client on PATH."""

    def __init__(self, serial: str, timeout: int) -> None:
        self.serial, self.timeout = check_serial(serial), timeout
        self.program = shutil.which("adb")
        if self.program is None:
            raise EdgekdError("adb (Android platform-tools) is not on PATH",
                              "install platform-tools (https://developer.android.com/tools/releases/platform-tools)"
                              " and put adb on PATH")

    def call(self, step: str, *args: str) -> str:
        """stdout of ``adb -s SERIAL ARGS...``, or one EdgekdError naming the step and what adb said."""
        try:
            proc = subprocess.run([self.program, "-s", self.serial, *args], capture_output=True, text=True,
                                  errors="replace", timeout=self.timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise EdgekdError(f"adb {step} on {self.serial} did not finish in {self.timeout} s",
                              "check the phone (screen on, not throttled) and run `edgekd bench` again") from None
        if proc.returncode != 0:
            raise explain(self.serial, step, proc.stdout + "\n" + proc.stderr)
        return proc.stdout

    def shell(self, step: str, *parts: str) -> str:
        return self.call(step, "shell", " ".join(shlex.quote(p) for p in parts))


def explain(serial: str, step: str, output: str) -> EdgekdError:
    """adb's own failures (documented in adb's client messages) as one message with the fix."""
    said = tail(output)
    if "not found" in output and "device" in output or "no devices/emulators found" in output:
        return EdgekdError(f"no Android device '{serial}' is connected ({said})",
                           "plug the phone in with USB debugging on (or `adb connect HOST:PORT`), then pass the "
                           "serial `adb devices` lists")
    if "did NOT match" in output:  # sha256sum -c (toybox and coreutils word it alike)
        return EdgekdError(f"{serial}: a file pushed to the phone does not have the sha256 the build recorded "
                           f"({said}); nothing was run", "restore the run's files or rebuild it with `edgekd build`")
    if "unauthorized" in output:
        return EdgekdError(f"the phone '{serial}' has not authorised this computer ({said})",
                           "unlock it and accept the 'Allow USB debugging?' prompt, then run again")
    if "offline" in output:
        return EdgekdError(f"the phone '{serial}' is offline ({said})", "reconnect it (`adb reconnect`) and run again")
    return EdgekdError(f"adb {step} on {serial} failed: {said}", "the device's message says what to fix")


# --------------------------------------------------------------------------------------------- identity
def parse_getprop(text: str) -> dict[str, str]:
    props = {}
    for line in text.splitlines():
        m = _GETPROP.match(line)
        if m:
            props[m.group(1)] = m.group(2)[:200]
    return props


def _cores(possible: str) -> int | None:
    """CPU count from ``/sys/devices/system/cpu/possible`` ("0-7" or "0-3,4-7")."""
    total = 0
    for part in possible.strip().split(","):
        low, _, high = part.partition("-")
        if not low.isdigit() or (high and not high.isdigit()):
            return None
        total += int(high or low) - int(low) + 1
    return total or None


def _memory_mb(meminfo: str) -> int | None:
    m = re.search(r"^MemTotal:\s+(\d+) kB", meminfo, re.MULTILINE)
    return int(m.group(1)) // 1024 if m else None


def describe_phone(adb: Adb) -> dict[str, Any]:
    """The phone as the identity rules see a machine: arch from the ABI, SoC as cpu, product model as board."""
    props = parse_getprop(adb.shell("reading getprop", "getprop"))
    if not props:
        raise EdgekdError(f"getprop on {adb.serial} printed no properties", "is this an Android device? (adb shell)")
    sdk = props.get("ro.build.version.sdk", "")
    soc = " ".join(p for p in (props.get("ro.soc.manufacturer"), props.get("ro.soc.model")) if p)
    abi = props.get("ro.product.cpu.abi", "")
    return {"arch": device_identity.normalize_arch(_ABI_ARCH.get(abi, abi)), "abi": abi,
            "cpu": soc or props.get("ro.board.platform") or props.get("ro.hardware") or "",
            "board": props.get("ro.product.model", ""), "manufacturer": props.get("ro.product.manufacturer", ""),
            "cores": _cores(adb.shell("reading the CPU count", "cat", "/sys/devices/system/cpu/possible")),
            "memory_mb": _memory_mb(adb.shell("reading the memory", "cat", "/proc/meminfo")),
            "android_sdk": int(sdk) if sdk.isdigit() else None, "android_release": props.get(
                "ro.build.version.release", ""), "os": "Android"}


# --------------------------------------------------------------------------------------------- running
def check_tool(tool: str | None, flag: str, default: str | None, what: str) -> tuple[Path | None, str | None]:
    """(local file to push or None, the tool's path on the device or None when not given and no default)."""
    if tool is None:
        return None, default
    local = Path(tool).expanduser()
    if local.is_file():
        return local, None
    if _DEVICE_PATH.match(tool) and ".." not in tool.split("/"):
        return None, tool
    raise EdgekdError(f"{flag} {tool!r} is neither a file here nor a path on the device",
                      f"pass {what}, or the path where it already is on the phone (under {DEVICE_TMP})")


def _push_verified(adb: Adb, local: Path, device_path: str, sha256: str | None = None) -> str:
    """Push one file; returns the ``sha256sum -c`` line the phone checks before anything runs it: an artifact
    against the manifest's sha256 (so a file changed since the build never runs), the tool against its own."""
    adb.call(f"pushing {local.name}", "push", str(local), device_path)
    return f"{sha256 or sha256_file(local)}  {device_path}"


def install_tool(adb: Adb, work: str, local: Path | None, device_path: str | None,
                 name: str) -> tuple[str | None, list[str]]:
    """(the tool's path on the phone, the sha256 lines it is checked by): a local file is pushed into ``work``."""
    if local is None:
        return device_path, []
    path = f"{work}/{name}"
    sums = [_push_verified(adb, local, path)]
    adb.shell(f"making {name} executable", "chmod", "755", path)
    return path, sums


@dataclass
class PhoneSession:
    """What every run on the phone shares: the work directory, the tools and the sha256 lines they are checked by."""

    adb: Adb
    work: str
    tool: str
    diff_tool: str | None
    tool_sums: list[str]
    delegate: str
    threads: int

    def checked(self, sums: list[str], program: str, flags: list[str]) -> str:
        """``sha256sum -c`` of every pushed file, then the program: one shell line of quoted parts."""
        check = " && ".join(f"echo {shlex.quote(s)} | sha256sum -c - >/dev/null" for s in self.tool_sums + sums)
        return f"{check} && {shlex.quote(program)} " + " ".join(shlex.quote(f) for f in flags) + " 2>&1"

    def command(self, sums: list[str], graph: str, runs: int, warmup: int, profile: bool) -> str:
        return self.checked(sums, self.tool, [
            f"--graph={graph}", f"--num_threads={self.threads}", f"--num_runs={runs}", f"--warmup_runs={warmup}",
            "--report_peak_memory_footprint=true", f"--enable_op_profiling={'true' if profile else 'false'}",
            bm.DELEGATE_FLAGS.get(self.delegate, "--use_xnnpack=false")])

    def run(self, command: str, artifact: str) -> bm.BenchmarkRun:
        out = self.adb.call(f"running benchmark_model on {artifact}", "shell", command)
        try:
            return bm.parse_output(out, self.delegate)
        except bm.BenchmarkOutputError as exc:
            raise EdgekdError(f"{self.adb.serial}: {exc} for {artifact} (it printed: {tail(out)})",
                              "run the same benchmark_model by hand (`adb shell`) to see why; a GPU/NNAPI delegate "
                              "that refuses the model says so there") from None

    def outputs_vs_cpu(self, sums: list[str], graph: str, artifact: str) -> dict[str, Any] | None:
        """inference_diff: the delegate's outputs against the CPU reference kernels, on the phone (if given)."""
        if self.diff_tool is None or self.delegate not in bm.DELEGATE_FLAGS:
            return None
        out = self.adb.call(f"running inference_diff on {artifact}", "shell", self.checked(sums, self.diff_tool, [
            f"--model_file={graph}", f"--delegate={self.delegate}", "--num_runs=50",
            f"--num_interpreter_threads={self.threads}"]))
        try:
            return inference_diff.parse_output(out)
        except inference_diff.InferenceDiffError as exc:
            raise EdgekdError(f"{self.adb.serial}: {exc} for {artifact} (it printed: {tail(out)})",
                              "run the same inference_diff by hand (`adb shell`) to see why") from None


def measure_artifact(phone: PhoneSession, entry: dict[str, Any], local: Path, opts: AdbOptions) -> dict[str, Any]:
    """Push one artifact, profile it once (delegation), time it ``opts.blocks`` times; its device_results row."""
    graph = f"{phone.work}/{entry['path']}"
    sums = [_push_verified(phone.adb, local, graph, entry["sha256"])]
    profiled = phone.run(phone.command(sums, graph, max(10, opts.runs // 10), opts.warmup, True), entry["path"])
    timed = [phone.run(phone.command(sums, graph, opts.runs, opts.warmup, False), entry["path"])
             for _ in range(opts.blocks)]
    with_pct = all(t.has_percentiles for t in timed)
    latency, detail = block_latency([t.timed for t in timed], "benchmark_model's percentiles of each run" if with_pct
                                    else f"the averages of {opts.blocks} runs (this benchmark_model prints no "
                                         "per-inference percentiles, so the tail is understated)")
    last = timed[-1]
    return {
        "path": entry["path"], "format": "tflite", "precision": entry.get("precision"), "sha256": entry["sha256"],
        "sha256_verified": True, "runtime": "tflite benchmark_model", "runtime_version": None,
        "delegate": phone.delegate, "threads": phone.threads, "latency_ms": latency, "noise_pct": detail["noise_pct"],
        "latency_ms_detail": detail, "load_ms": last.init_ms, "first_inference_ms": last.first_ms,
        "warmup_avg_ms": last.warmup_ms, "peak_memory_mb": last.memory_overall_mb,
        "memory": {"judged": "benchmark_model: memory footprint delta from the start of the tool (overall)",
                   "init_mb": last.memory_init_mb, "overall_mb": last.memory_overall_mb,
                   "process_peak_mb": last.process_peak_mb},
        "delegation": profiled.delegation.model_dump() if profiled.delegation else None,
        **accuracy_fields(phone.outputs_vs_cpu(sums, graph, entry["path"])),
    }


def accuracy_fields(outputs: dict[str, Any] | None) -> dict[str, Any]:
    """Where the row's accuracy comes from: always the build host's score; with inference_diff, also how far the
    delegate's outputs are from the CPU reference kernels on the phone."""
    source = "host-measured (report.json artifacts[]): benchmark_model times random inputs"
    if outputs is None:
        return {"accuracy_source": source}
    return {"accuracy_source": f"{source}; on the device, inference_diff compared the delegate's outputs with the "
                               "CPU reference kernels (random inputs)", "delegate_vs_cpu": outputs}


def _work_dir(adb: Adb) -> str:
    work = f"{DEVICE_TMP}/edgekd.{secrets.token_hex(6)}"
    if not _WORK_DIR.match(work):  # never happens; rm -rf below only ever sees this shape
        raise EdgekdError(f"unusable work directory {work}", "report this as a bug")
    adb.shell("creating a work directory", "mkdir", work)
    return work


def bench_android(run_dir: str | Path, opts: AdbOptions, say: Any = print) -> dict[str, Any]:
    """Measure the run's shipped TFLite artifacts on the phone, merge the entry into report.json and refresh its
    gate, report.md and report.html. Returns the device_results[] entry."""
    run_dir = Path(run_dir)
    report, entries = shipped_of_format(run_dir, "tflite", "--adb measures TFLite artifacts with benchmark_model")
    target = require_target(report)
    local_tool, tool = check_tool(opts.tool, "--benchmark-tool", DEFAULT_TOOL,
                                  "TensorFlow Lite's Android benchmark_model binary (android_aarch64_benchmark_model)")
    local_diff, diff_tool = check_tool(opts.inference_diff, "--inference-diff", None,
                                       "TensorFlow Lite's Android inference_diff binary (run_eval)")
    adb = Adb(opts.serial, opts.timeout)
    machine = describe_phone(adb)
    delegate, threads = target.runtime.delegate, opts.threads or target.runtime.threads
    warnings = nnapi_warnings(delegate, machine)
    work = _work_dir(adb)
    try:
        tool, tool_sums = install_tool(adb, work, local_tool, tool, "benchmark_model")
        diff_tool, diff_sums = install_tool(adb, work, local_diff, diff_tool, "inference_diff")
        phone = PhoneSession(adb, work, tool, diff_tool, tool_sums + diff_sums, delegate, threads)
        rows = [measure_artifact(phone, e, run_dir / e["path"], opts) for e in entries]
    finally:
        try:
            adb.shell("removing the work directory", "rm", "-rf", work)
        except EdgekdError as exc:
            say(f"  {opts.serial}: {work} left on the device: {exc.problem}")
    how = (f"TFLite benchmark_model over adb on {machine['board'] or opts.serial} (Android "
           f"{machine['android_release']}, SDK {machine['android_sdk']}), delegate {delegate}, {threads} thread(s)")
    entry = device_entry(f"adb:{opts.serial}", {**machine, "delegate": delegate, "threads": threads}, target,
                         opts.declared, how, rows, warnings)
    for w in warnings:
        say(f"  {opts.serial}: {w}")
    fresh, _ = load_run(run_dir)  # re-read: keep whatever changed while the phone ran
    _merge_and_refresh(run_dir, fresh, [entry], say)
    return entry


def nnapi_warnings(delegate: str, machine: dict[str, Any]) -> list[str]:
    sdk = machine.get("android_sdk")
    if delegate == "nnapi" and sdk is not None and sdk >= NNAPI_DEPRECATED_SDK:
        return [f"NNAPI is deprecated from Android 15 (this phone runs SDK {sdk}): vendors may drop its drivers and "
                "NNAPI then runs on its CPU reference path; consider runtime.delegate: gpu in the target"]
    return []
