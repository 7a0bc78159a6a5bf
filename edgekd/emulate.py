"""ARM kernels without a board: a bundle's runner in an aarch64 Python under QEMU user-mode emulation.

An int8 artifact is only ever run on x86 kernels in CI, yet int8 kernels are where CPUs differ (NEON, dot-product,
XNNPACK's ARM paths). ``edgekd bench RUN --emulate aarch64`` runs the bundle's runner.py with the ARM wheels of the
runtimes, emulating the target's own core (Cortex-A72 for a Pi 4), so the kernels that board would pick are the
ones that run, and compares its logits with the same artifact on this host: accuracy on the full evaluation split,
top-1 agreement, logit difference.

Three traps this module closes (found before it was written): QEMU's default ``max`` CPU enables SME, under which
LiteRT's XNNPACK int8 gave wrong outputs, so the CPU is always the target's core (``-cpu`` and ``QEMU_CPU``); QEMU
passes the host's x86 ``/proc/cpuinfo`` through, on which the runtimes' CPU detection crashes or skips XNNPACK, so
an ARM cpuinfo (and the MIDR sysfs entries OpenVINO reads) for that core sits under the ``-L`` root, which QEMU
looks in first; and binfmt_misc, chroot and bind mounts need root, so nothing here uses them: QEMU runs the root's
``python3`` directly. Timing under emulation is labelled ``emulated`` and never judges a budget
(``device_identity``'s ``emulated`` rule).

The environment (a Debian arm64 root from ``mmdebstrap --variant=extract`` plus the aarch64 wheels of numpy and the
runtimes, at this host's versions, installed by this host's pip) is built once and cached as a tarball in a private
cache directory, its sha256 checked before every use. 32-bit ARM is not covered: PyPI has no armv7l wheels of
numpy, onnxruntime or LiteRT.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.bench import _runner_errors, device_entry, parse_reply, report_target
from edgekd.bundle import load_run, make_bundle
from edgekd.data.cache import default_cache_root, private_dir
from edgekd.errors import EdgekdError
from edgekd.formats import FORMATS
from edgekd.io import sha256_file, write_json
from edgekd.targets import TargetProfile

ARCHES = ("aarch64",)
QEMU_BINARIES = ("qemu-aarch64-static", "qemu-aarch64")
SUITE, MIRROR = "bookworm", "http://deb.debian.org/debian"
DEBS = ("python3", "libstdc++6", "libgomp1")  # python3.11 and what the runtimes' wheels link against
PYTHON_TAG = "3.11"  # bookworm's python3: the wheels must be built for it
GLIBC_MINOR = 36  # bookworm's glibc 2.36: manylinux_2_17 .. 2_36 wheels run on it
SITE = "opt/edgekd-site"  # where the wheels go inside the root
RUNTIME_PACKAGES = {name: spec.device_requirement for name, spec in FORMATS.items()}  # the built-in formats' rows
INSTALL_HINT = "apt-get install qemu-user-static mmdebstrap (Debian/Ubuntu; .ci/system-deps.sh does it)"

_V80 = "fp asimd evtstrm crc32 cpuid"
_V80_CRYPTO = "fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid"
_V82_DOT = "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp"
_A76_ISA = "QEMU has no {} model; cortex-a76 has the same ARMv8.2-A + dot-product ISA, so the same int8 kernels"


@dataclass(frozen=True)
class ArmCore:
    """One ARM core: its name, MIDR part number, the ``Features`` a kernel shows, and the QEMU model that runs it."""

    name: str
    part: int
    features: str
    qemu: str
    note: str = ""

    def cpuinfo(self, cores: int) -> str:
        """/proc/cpuinfo as an aarch64 Linux kernel writes it for ``cores`` of this core."""
        block = ("processor\t: {}\nBogoMIPS\t: 108.00\nFeatures\t: " + self.features + "\nCPU implementer\t: 0x41\n"
                 f"CPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0x{self.part:03x}\nCPU revision\t: 0\n\n")
        return "".join(block.format(i) for i in range(cores))

    @property
    def midr(self) -> str:
        return f"0x00000000410f{self.part:03x}0"


CORES = {c.name.lower(): c for c in (
    ArmCore("Cortex-A53", 0xD03, _V80_CRYPTO, "cortex-a53"),
    ArmCore("Cortex-A55", 0xD05, _V82_DOT, "cortex-a76", _A76_ISA.format("Cortex-A55")),
    ArmCore("Cortex-A57", 0xD07, _V80_CRYPTO, "cortex-a57"),
    ArmCore("Cortex-A72", 0xD08, _V80, "cortex-a72"),  # BCM2711 (Pi 4) has no crypto extensions
    ArmCore("Cortex-A76", 0xD0B, _V82_DOT, "cortex-a76"),
    ArmCore("Cortex-A78", 0xD41, _V82_DOT, "cortex-a76", _A76_ISA.format("Cortex-A78")),
    ArmCore("Cortex-A78AE", 0xD42, _V82_DOT, "cortex-a76", _A76_ISA.format("Cortex-A78AE")),
    ArmCore("Neoverse-N1", 0xD0C, _V82_DOT + " ssbs", "neoverse-n1"),
)}
_CORE_RE = re.compile(r"\b(cortex-a\d+(?:ae)?|neoverse-n1)\b", re.IGNORECASE)


def core_for_target(target: TargetProfile, arch: str = "aarch64") -> ArmCore:
    """The target's own core (the first one its ``device.cpu`` names), or bad input saying why it cannot be."""
    if arch not in ARCHES:
        raise EdgekdError(f"--emulate {arch!r} is not supported (only {', '.join(ARCHES)}; 32-bit ARM has no "
                          "armv7l wheels of numpy, onnxruntime or LiteRT on PyPI)", "use --emulate aarch64")
    if target.device.arch != arch:
        raise EdgekdError(f"target '{target.name}' is a {target.device.arch} device, not {arch}",
                          "--emulate is for ARM targets (e.g. rpi4); measure this one on its own host")
    found = _CORE_RE.search(target.device.cpu or "")
    if not found or found.group(1).lower() not in CORES:
        names = ", ".join(c.name for c in CORES.values())
        raise EdgekdError(f"target '{target.name}' names no ARM core QEMU can emulate in device.cpu "
                          f"({target.device.cpu!r})", f"set device.cpu to one of: {names}")
    return CORES[found.group(1).lower()]


def qemu_binary() -> str:
    """The QEMU user-mode emulator for aarch64, or bad input naming the package."""
    for name in QEMU_BINARIES:
        path = shutil.which(name)
        if path:
            return path
    raise EdgekdError("QEMU user-mode emulation (qemu-aarch64-static) is not installed", INSTALL_HINT)


def qemu_version(qemu: str) -> str:
    proc = subprocess.run([qemu, "--version"], capture_output=True, text=True, timeout=30)
    return (proc.stdout.strip().splitlines() or ["unknown"])[0]


def emulated_command(qemu: str, root: Path, core: ArmCore, script: str, args: list[str]) -> list[str]:
    """The argument list that runs ``script`` with the root's aarch64 python3 on the target's core."""
    return [qemu, "-cpu", core.qemu, "-L", str(root), str(root / "usr/bin/python3"), script, *args]


def emulated_env(root: Path, core: ArmCore) -> dict[str, str]:
    """A clean environment: the root's wheels, nothing of this host's Python, QEMU_CPU pinned to the core."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(root / SITE),
            "PYTHONNOUSERSITE": "1", "PYTHONDONTWRITEBYTECODE": "1", "LANG": "C.UTF-8", "QEMU_CPU": core.qemu}


# --------------------------------------------------------------------------------------------- environment
def host_versions() -> dict[str, str]:
    """numpy and the runtimes at this host's versions: the emulated run uses the very same releases."""
    versions = {"numpy": metadata.version("numpy")}
    for package in RUNTIME_PACKAGES.values():
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return versions


def env_key(versions: dict[str, str]) -> str:
    recipe = {"suite": SUITE, "debs": DEBS, "python": PYTHON_TAG, "site": SITE, "wheels": versions}
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def cache_dir() -> Path:
    return private_dir(default_cache_root() / "emulate", "emulation cache")


def cached_env(versions: dict[str, str]) -> tuple[Path, dict[str, Any]] | None:
    """(tarball, its record) when the cache holds this environment and the tarball's sha256 is the recorded one."""
    entry = cache_dir() / f"aarch64-{env_key(versions)}"
    record_path, tarball = entry / "env.json", entry / "env.tar"
    if not (record_path.is_file() and tarball.is_file()):
        return None
    private_dir(entry, "emulation cache")
    try:
        record = json.loads(record_path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("sha256") != sha256_file(tarball):
        return None
    return tarball, record


def _check(cmd: list[str], what: str, timeout: int, fix: str = "check the network and the message, then retry") -> None:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise EdgekdError(f"{cmd[0]} is not installed ({what})", INSTALL_HINT) from None
    except subprocess.TimeoutExpired:
        raise EdgekdError(f"{what} took more than {timeout} s", "check the network, then run it again") from None
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or proc.stdout.strip().splitlines() or ["?"])[-1]
        raise EdgekdError(f"{what} failed: {last[:300]}", fix)


def wheel_install_command(target_dir: Path, versions: dict[str, str]) -> list[str]:
    """This host's pip installing the aarch64 wheels (binary only) for the root's Python into ``target_dir``."""
    platforms = [f"manylinux_2_{m}_aarch64" for m in range(17, GLIBC_MINOR + 1)] + ["manylinux2014_aarch64"]
    return [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-compile",
            "--target", str(target_dir), "--python-version", PYTHON_TAG, "--implementation", "cp",
            "--only-binary=:all:", *[a for p in platforms for a in ("--platform", p)],
            *[f"{name}=={version}" for name, version in versions.items()]]


def build_env(versions: dict[str, str], say: Any = print) -> tuple[Path, dict[str, Any]]:
    """Build the aarch64 environment from nothing into the cache (staged, renamed into place when complete)."""
    if not shutil.which("mmdebstrap"):
        raise EdgekdError("mmdebstrap is not installed (it builds the emulated Debian arm64 root)", INSTALL_HINT)
    entry = cache_dir() / f"aarch64-{env_key(versions)}"
    stage = Path(tempfile.mkdtemp(prefix=".aarch64-staging-", dir=entry.parent))
    try:
        t0 = time.perf_counter()
        say(f"emulate: building the Debian {SUITE} arm64 root ({', '.join(DEBS)}) with mmdebstrap, once")
        _check(["mmdebstrap", "--quiet", "--variant=extract", "--architectures=arm64", f"--include={','.join(DEBS)}",
                SUITE, str(stage / "root.tar"), MIRROR], "mmdebstrap (the arm64 root)", 1800)
        root = stage / "root"
        root.mkdir()
        _check(["tar", "-C", str(root), "--no-same-owner", "-xf", str(stage / "root.tar")], "unpacking the root", 600)
        (stage / "root.tar").unlink()
        t_root = time.perf_counter() - t0
        say(f"emulate: installing the aarch64 wheels {', '.join(f'{k}=={v}' for k, v in versions.items())}")
        _check(wheel_install_command(root / SITE, versions), "pip (the aarch64 wheels)", 1800)
        _check(["tar", "-C", str(root), "-cf", str(stage / "env.tar"), "."], "packing the environment", 600)
        shutil.rmtree(root)
        record = {"sha256": sha256_file(stage / "env.tar"), "suite": SUITE, "debs": list(DEBS), "python": PYTHON_TAG,
                  "wheels": versions, "mirror": MIRROR, "root_s": round(t_root, 1),
                  "setup_s": round(time.perf_counter() - t0, 1), "bytes": (stage / "env.tar").stat().st_size,
                  "built": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        write_json(stage / "env.json", record)
        os.chmod(stage, 0o700)
        if entry.exists() and cached_env(versions) is None:
            shutil.rmtree(entry)  # a stale or corrupted entry (its sha256 did not match)
        try:
            os.rename(stage, entry)
        except OSError:  # another run finished the same environment first: use that one
            found = cached_env(versions)
            if found is None:
                raise EdgekdError(f"cannot write the emulation cache entry {entry}",
                                  f"check the permissions of {entry.parent}, or set EDGEKD_CACHE") from None
            return found
        return entry / "env.tar", record
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def ensure_env(versions: dict[str, str], say: Any = print) -> tuple[Path, dict[str, Any], bool]:
    """(tarball, record, built now): the cached environment, built first when missing or corrupted."""
    found = cached_env(versions)
    if found:
        return (*found, False)
    return (*build_env(versions, say), True)


def unpack_env(tarball: Path, dest: Path, core: ArmCore, cores: int) -> Path:
    """Unpack the environment into ``dest`` and put the core's cpuinfo and MIDR where QEMU's ``-L`` finds them."""
    dest.mkdir(parents=True, exist_ok=True, mode=0o700)
    _check(["tar", "-C", str(dest), "--no-same-owner", "-xf", str(tarball)], "unpacking the emulated root", 600,
           f"check the free space of {dest.parent}")
    (dest / "proc").mkdir(exist_ok=True)
    (dest / "proc/cpuinfo").write_text(core.cpuinfo(cores))
    cpu = dest / "sys/devices/system/cpu"
    for i in range(cores):
        (cpu / f"cpu{i}/regs/identification").mkdir(parents=True, exist_ok=True)
        (cpu / f"cpu{i}/regs/identification/midr_el1").write_text(core.midr + "\n")
    for name in ("possible", "present", "online"):
        (cpu / name).write_text(f"0-{cores - 1}\n" if cores > 1 else "0\n")
    return dest


# --------------------------------------------------------------------------------------------- the run
PROBE_PATH = Path(__file__).with_name("emulate_probe.py")
XNNPACK_LINE = "Created TensorFlow Lite XNNPACK delegate"  # LiteRT's log line when XNNPACK takes the graph
EMULATED_RUNS = 20  # timing under emulation means nothing: a few runs, so the runner's JSON is complete


def _run_checked(cmd: list[str], what: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    """Run one runner/probe process and return its stderr; its 'runner error:' line (or last line) is the message
    when it fails."""
    try:
        proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=6 * 3600)
    except subprocess.TimeoutExpired:
        raise EdgekdError(f"{what} took more than 6 hours", "emulate a smaller evaluation split") from None
    if proc.returncode != 0:
        errors = _runner_errors(proc.stderr) or proc.stderr.strip().splitlines()[-1:] or ["(no output)"]
        raise EdgekdError(f"{what} failed: {'; '.join(errors)[:500]}",
                          "the runner's message says what to fix; a runtime crash under QEMU is worth an issue")
    return proc.stderr


def compare_logits(host: Any, emulated: Any, labels: Any) -> dict[str, Any]:
    """Accuracy on each side, top-1 agreement and logit differences between the host's and the emulated logits."""
    host, emulated = np.asarray(host, np.float64), np.asarray(emulated, np.float64)
    diff = np.abs(host - emulated)
    return {"samples": int(len(labels)),
            "accuracy_host": float((host.argmax(1) == labels).mean()),
            "accuracy_emulated": float((emulated.argmax(1) == labels).mean()),
            "top1_agreement": float((host.argmax(1) == emulated.argmax(1)).mean()),
            "max_abs_logit_diff": float(diff.max()), "mean_abs_logit_diff": float(diff.mean()),
            "bit_exact": bool((host == emulated).all())}


def _logits(cmd: list[str], out: Path, what: str, cwd: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    _run_checked(cmd, what, cwd, env)
    with np.load(out) as saved:
        return {name: saved[name] for name in saved.files}


@dataclass
class EmulatedRun:
    """What ``bench_emulated`` measured: the runner's results under emulation, the comparison with this host, and
    the emulated logits themselves (for a benchmark's own comparisons)."""

    results: list[dict[str, Any]]
    comparison: dict[str, dict[str, Any]]
    emulation: dict[str, Any]
    logits: dict[str, Any] = field(default_factory=dict)


def _report_target(run_dir: Path) -> tuple[dict[str, Any], TargetProfile]:
    report, _ = load_run(run_dir)
    target = report_target(report)
    if target is None:
        raise EdgekdError(f"the target '{report.get('target')}' of {run_dir} cannot be loaded",
                          "restore the target file the report names (target_path)")
    return report, target


def _missing_runtimes(report: dict[str, Any], artifacts: list[str], versions: dict[str, str]) -> None:
    formats = {a.get("path"): a.get("format") for a in report["artifacts"]}
    missing = sorted({RUNTIME_PACKAGES.get(formats[a], str(formats[a])) for a in artifacts
                      if RUNTIME_PACKAGES.get(formats[a]) not in versions})
    if missing:
        raise EdgekdError(f"this host has no {', '.join(missing)}, so there is nothing to compare the emulated run "
                          "with", "pip install 'edgekd[all]' (the runtimes of the bundle's formats)")


def _run_both(work: Path, root: Path, core: ArmCore, qemu: str, bundle: Any, threads: int) -> tuple[Any, ...]:
    """(runner results, emulated logits, host logits, whether LiteRT took XNNPACK under emulation or None without a
    .tflite) for the bundle in ``work``."""
    env = emulated_env(root, core)
    args = bundle.runner_args("python3", runs=EMULATED_RUNS, warmup=2, threads=threads, json_out="emulated.json")
    log = _run_checked(emulated_command(qemu, root, core, "runner.py", [*args[2:], "--no-memory", "--min-time", "0"]),
                       "the runner under emulation", work, env)
    results, errors = parse_reply(f"emulated {core.name}", (work / "emulated.json").read_text())
    if errors or not results:
        raise EdgekdError(f"the runner under emulation measured nothing: {'; '.join(errors)[:500]}",
                          "see the runner's message")
    probe = [*bundle.artifacts, "--inputs", "eval.npz", "--threads", str(threads)]
    emulated = _logits(emulated_command(qemu, root, core, PROBE_PATH.name, ["emulated.npz", *probe]),
                       work / "emulated.npz", "the logits probe under emulation", work, env)
    host = _logits([sys.executable, PROBE_PATH.name, "host.npz", *probe], work / "host.npz",
                   "the logits probe on this host", work, {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    xnnpack = XNNPACK_LINE in log if any(a.endswith(".tflite") for a in bundle.artifacts) else None
    return results, emulated, host, xnnpack


def bench_emulated(run_dir: str | os.PathLike[str], arch: str = "aarch64", threads: int | None = None,
                   say: Any = print, qemu_cpu: str | None = None) -> EmulatedRun:
    """Run the run's shipped artifacts on the target's core under QEMU and on this host, and compare them.

    ``qemu_cpu``: another QEMU CPU model for a control measurement only (``max``, to show why the core is pinned);
    recorded as such, and never offered by the CLI."""
    run_dir = Path(run_dir)
    report, target = _report_target(run_dir)
    core, qemu, versions = core_for_target(target, arch), qemu_binary(), host_versions()
    if qemu_cpu:
        core = replace(core, qemu=qemu_cpu, note=f"control run: QEMU CPU '{qemu_cpu}', not the target's core")
    threads = threads or 1
    t0 = time.perf_counter()
    tarball, record, built = ensure_env(versions, say)
    with tempfile.TemporaryDirectory(prefix="edgekd-emulate-") as tmp:
        bundle = make_bundle(run_dir, Path(tmp) / "bundle", threads=threads)
        _missing_runtimes(report, bundle.artifacts, versions)
        root = unpack_env(tarball, Path(tmp) / "root", core, target.device.cores)
        shutil.copyfile(PROBE_PATH, bundle.directory / PROBE_PATH.name)
        say(f"emulate: {', '.join(bundle.artifacts)} on {core.name} (qemu -cpu {core.qemu}), {threads} thread(s)")
        results, emulated, host, xnnpack = _run_both(bundle.directory, root, core, qemu, bundle, threads)
        if xnnpack is False:
            say("emulate: WARNING: LiteRT did not create its XNNPACK delegate under emulation: the TFLite kernels "
                "that ran are not the ones a board would run")
        with np.load(bundle.directory / "eval.npz") as data:
            labels = data["y"]
    comparison = {name: compare_logits(host[name], emulated[name], labels) for name in bundle.artifacts}
    emulation = {"where": "emulated", "arch": arch, "core": core.name, "qemu_cpu": core.qemu,
                 "qemu": qemu_version(qemu), "cpuinfo": f"{core.name} (CPU part 0x{core.part:03x}), "
                 f"{target.device.cores} processors", "threads": threads,
                 **({"note": core.note} if core.note else {}),
                 **({"tflite_xnnpack_delegate": xnnpack} if xnnpack is not None else {}),
                 "environment": {k: record[k] for k in ("suite", "python", "wheels", "sha256", "setup_s", "bytes")
                                 if k in record}, "environment_built_now": built,
                 "seconds": round(time.perf_counter() - t0, 1),
                 "timing": "emulated: QEMU's speed, not the device's; never judges a budget"}
    return EmulatedRun(results, comparison, emulation, emulated)

def emulated_entry(run: EmulatedRun, target: TargetProfile | None) -> dict[str, Any]:
    """The run as a ``device_results[]`` entry: ``measured_on.where`` is ``emulated`` (so the gate never judges a
    budget by it) and each row carries its comparison with this host (``vs_host``)."""
    e = run.emulation
    entry = device_entry(f"emulated:{e['arch']}:{e['qemu_cpu']}", run.results, [], target, where="emulated",
                         how=f"edgekd runner.py under {e['qemu']} user-mode emulation, -cpu {e['qemu_cpu']} for "
                             f"{e['core']}; timing is QEMU's, not the device's")
    entry["emulation"] = e
    for row in entry["artifacts"]:
        row["vs_host"] = run.comparison.get(row.get("path"))
    return entry
