"""Drive the standalone runner: locally in a fresh process (no torch in it), exactly as on a device, or on real
devices over SSH.

Remote benchmarking (``edgekd bench RUN_DIR --remote USER@HOST[:PORT] ...``) bundles the shipped artifacts, copies
the tarball with the system ``scp``, runs ``runner.py`` with the device's ``python3`` over ``ssh``, brings the JSON
back and merges it into report.json under ``device_results[]``, one entry per device with its own ``measured_on``.
Hosts run in parallel; a failing host (unreachable, authentication, missing runtime) gets one clear message and
the others go on. ssh/scp always get argument lists; the one string the remote shell sees is built from
``shlex.quote``-d parts only.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.errors import EdgekdError
from edgekd.io import atomic_write, write_json

RUNNER_PATH = Path(__file__).with_name("runner.py")


def write_eval_inputs(path: Path, x: np.ndarray, y: np.ndarray, teacher_logits: np.ndarray | None = None,
                      reference_logits: np.ndarray | None = None) -> Path:
    """The evaluation inputs a device needs: normalised x, labels and the teacher's recorded outputs."""
    arrays = {"x": x.astype(np.float32), "y": y.astype(np.int64)}
    if teacher_logits is not None:
        arrays["teacher_logits"] = teacher_logits.astype(np.float32)
    if reference_logits is not None:
        arrays["reference_logits"] = reference_logits.astype(np.float32)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)

    return atomic_write(path, write)


def run_local(artifact: Path, inputs: Path, runs: int = 200, warmup: int = 20, threads: int = 1,
              verify: bool = True, memory: bool = True, plugins: list[Path] | None = None) -> dict:
    """Benchmark ``artifact`` with runner.py in a child process and return its JSON result.

    ``plugins``: session plugin files for formats beyond the built-in three (verified against the manifest)."""
    fd, tmp = tempfile.mkstemp(prefix=f".bench-{artifact.name}.", suffix=".json")  # concurrent runs never clash
    os.close(fd)
    out = Path(tmp)
    cmd = [sys.executable, str(RUNNER_PATH), str(artifact), "--inputs", str(inputs), "--runs", str(runs),
           "--warmup", str(warmup), "--threads", str(threads), "--json", str(out)]
    if not verify:
        cmd.append("--no-verify")
    if not memory:
        cmd.append("--no-memory")
    for plugin in plugins or []:
        cmd += ["--session-plugin", str(plugin)]
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
        if proc.returncode != 0:
            errors = _runner_errors(proc.stderr) or proc.stderr.strip().splitlines()[-1:] or ["(no output)"]
            raise EdgekdError(f"benchmarking {artifact.name} failed: {'; '.join(errors)}",
                              "the runner's message says what to fix (python edgekd/runner.py --help)")
        return json.loads(out.read_text())
    finally:
        out.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------- remote
_REMOTE_RE = re.compile(
    r"^(?:(?P<user>[A-Za-z0-9_][A-Za-z0-9._-]*)@)?"
    r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9][A-Za-z0-9.-]*)"
    r"(?::(?P<port>[0-9]{1,5}))?$"
)
_ARCH_ALIASES = {"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64", "armv8": "aarch64", "armv8l": "aarch64"}
# Per-artifact fields copied from the runner's JSON into report.json (predictions stay out: they are bulky).
_RESULT_KEYS = ("accuracy", "agreement_with_teacher", "per_class_accuracy", "parity", "peak_memory_mb", "load_ms",
                "first_inference_ms", "throughput_per_s", "threads", "sha256_verified", "torch_imported")


@dataclass(frozen=True)
class Remote:
    """One ``USER@HOST[:PORT]``, validated so that nothing in it can be read by ssh as an option."""

    spec: str
    host: str
    user: str | None = None
    port: int | None = None

    @property
    def destination(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host

    def scp_path(self, path: str) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.user}@{host}:{path}" if self.user else f"{host}:{path}"


def parse_remote(spec: str) -> Remote:
    """``USER@HOST[:PORT]`` (IPv6 as ``[::1]:2222``) or a clear error; a leading '-' can never pass."""
    match = _REMOTE_RE.match(spec or "")
    if not match:
        raise EdgekdError(f"--remote '{spec}' is not USER@HOST[:PORT]",
                          "e.g. --remote pi@192.168.1.20 or --remote pi@raspberrypi.local:2222")
    port = match.group("port")
    if port is not None and not 1 <= int(port) <= 65535:
        raise EdgekdError(f"--remote '{spec}': port {port} is not in 1..65535", "use a valid SSH port")
    return Remote(spec, match.group("host").strip("[]"), match.group("user"), int(port) if port else None)


@dataclass
class SshConfig:
    """How to reach the devices: key, extra ``-o`` options, the device's Python, timeouts."""

    identity: str | None = None
    options: list[str] = field(default_factory=list)
    python: str = "python3"
    connect_timeout: int = 15
    command_timeout: int = 1800
    keep_remote: bool = False

    def base(self, remote: Remote, program: str) -> list[str]:
        # The user's -o options come first: for each ssh option the first value given wins.
        args = [program]
        for opt in self.options:
            args += ["-o", opt]
        args += ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={self.connect_timeout}",
                 "-o", "ServerAliveInterval=15", "-o", "StrictHostKeyChecking=accept-new"]
        if self.identity:
            args += ["-i", self.identity]
        if remote.port:
            args += ["-P" if program == "scp" else "-p", str(remote.port)]
        return args


@dataclass
class DeviceRun:
    """What one device returned: ``entry`` for report.json when it worked, ``error`` when it didn't."""

    remote: str
    entry: dict[str, Any] | None = None
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.entry is not None


class RemoteError(Exception):
    """One host failed; the message is what the user reads."""


def _explain_ssh(remote: Remote, step: str, proc: subprocess.CompletedProcess) -> str:
    """ssh's stderr turned into one sentence that says what went wrong and what to do."""
    err = (proc.stderr or "").strip()
    last = next((ln for ln in reversed(err.splitlines()) if ln.strip()), f"exit code {proc.returncode}")
    where = f"{remote.destination}" + (f" port {remote.port}" if remote.port else "")
    if proc.returncode == 255 or "ssh:" in err or "Permission denied" in err:
        if "Permission denied" in err or "Too many authentication failures" in err:
            return (f"authentication failed for {where} ({last}): check --identity KEY and that its public key "
                    f"is in the device's ~/.ssh/authorized_keys")
        if "Host key verification failed" in err or "REMOTE HOST IDENTIFICATION HAS CHANGED" in err:
            return f"host key of {where} does not match known_hosts ({last}): verify the device, then fix known_hosts"
        for marker in ("Connection refused", "timed out", "No route to host", "Could not resolve",
                       "Name or service not known", "Network is unreachable", "Connection closed",
                       "Connection reset"):
            if marker in err:
                return f"cannot reach {where} ({last}): is the device on and is sshd listening there?"
        return f"ssh to {where} failed while {step}: {last}"
    return f"{step} on {where} failed: {last}"


def _run(args: list[str], timeout: int) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(args, 255, "", f"ssh: timed out after {timeout} s")
    except FileNotFoundError:
        raise EdgekdError(f"'{args[0]}' is not installed on this machine",
                          "install the OpenSSH client (Debian/Ubuntu: apt-get install openssh-client)") from None


def _runner_errors(stderr: str) -> list[str]:
    return [ln.split("runner error:", 1)[1].strip() for ln in stderr.splitlines() if "runner error:" in ln]


def run_remote(remote: Remote, tarball: Path, bundle_name: str, runner_args: list[str], ssh: SshConfig,
               target_arch: str | None) -> DeviceRun:
    """Copy the bundle to one device, run it there, bring the JSON back. Never raises for a device's failure."""
    t0 = time.perf_counter()
    run = DeviceRun(remote.spec)
    remote_dir = None
    try:
        proc = _run([*ssh.base(remote, "ssh"), "--", remote.destination,
                     'mktemp -d "${TMPDIR:-/tmp}/edgekd-bench.XXXXXX"'], ssh.connect_timeout + 60)
        if proc.returncode != 0:
            raise RemoteError(_explain_ssh(remote, "creating a work directory", proc))
        remote_dir = (proc.stdout.strip().splitlines() or [""])[-1]
        if not re.fullmatch(r"/[A-Za-z0-9._/+-]+", remote_dir):
            raise RemoteError(f"{remote.destination}: mktemp returned an unusable directory '{remote_dir}'")
        qdir = shlex.quote(remote_dir)
        proc = _run([*ssh.base(remote, "scp"), "-q", "--", str(tarball), remote.scp_path(f"{remote_dir}/")],
                    ssh.command_timeout)
        if proc.returncode != 0:
            raise RemoteError(_explain_ssh(remote, "copying the bundle (scp)", proc))
        work = f"{qdir}/{shlex.quote(bundle_name)}"
        command = (f"cd {qdir} && tar xzf {shlex.quote(tarball.name)} && cd {work} && "
                   + " ".join(shlex.quote(a) for a in runner_args))
        proc = _run([*ssh.base(remote, "ssh"), "--", remote.destination, command], ssh.command_timeout)
        errors = _runner_errors(proc.stderr)
        if proc.returncode == 255 and not errors:
            raise RemoteError(_explain_ssh(remote, "running the runner", proc))
        if proc.returncode == 127 and not errors:
            raise RemoteError(f"{remote.destination}: '{ssh.python}' was not found on the device: install Python "
                              f"3.9+ there, or pass --remote-python /path/to/python3")
        fetched = _run([*ssh.base(remote, "ssh"), "--", remote.destination,
                        f"cat {work}/{shlex.quote('result.json')}"], ssh.connect_timeout + 120)
        if fetched.returncode != 0 or not fetched.stdout.strip():
            why = "; ".join(errors) or _explain_ssh(remote, "running the runner", proc)
            raise RemoteError(f"{remote.destination}: the runner failed: {why}")
        try:
            payload = json.loads(fetched.stdout)
        except json.JSONDecodeError as exc:
            raise RemoteError(f"{remote.destination}: the runner's JSON is unreadable ({exc})") from None
        results = payload.get("results", [payload]) if isinstance(payload, dict) else []
        good = [r for r in results if isinstance(r, dict) and "error" not in r and "latency_ms" in r]
        run.warnings = [f"{r.get('artifact')}: {r['error']}" for r in results if isinstance(r, dict) and "error" in r]
        if not good:
            raise RemoteError(f"{remote.destination}: no artifact could be measured: "
                              + ("; ".join(run.warnings or errors) or "the runner returned nothing"))
        run.entry = device_entry(remote, good, run.warnings, target_arch)
    except RemoteError as exc:
        run.error = str(exc)
    finally:
        if remote_dir and not ssh.keep_remote:
            _run([*ssh.base(remote, "ssh"), "--", remote.destination, f"rm -rf {shlex.quote(remote_dir)}"],
                 ssh.connect_timeout + 60)
        run.seconds = time.perf_counter() - t0
    return run


def normalize_arch(arch: str | None) -> str | None:
    if not arch:
        return None
    arch = arch.strip().lower()
    return _ARCH_ALIASES.get(arch, arch)


def device_entry(remote: Remote, results: list[dict[str, Any]], warnings: list[str],
                 target_arch: str | None) -> dict[str, Any]:
    """One device_results[] item: where it ran (is_target_device by architecture) and each artifact's numbers."""
    machine = results[0].get("machine", {})
    arch = normalize_arch(machine.get("arch"))
    rows = []
    for r in results:
        lat = r["latency_ms"]
        rows.append({
            "path": r.get("artifact"),
            "format": r.get("format"),
            "precision": r.get("precision"),
            "sha256": r.get("sha256"),
            "runtime": r.get("runtime", {}).get("name"),
            "runtime_version": r.get("runtime", {}).get("version"),
            "inference_precision": r.get("runtime", {}).get("inference_precision"),
            "latency_ms": {k: lat[k] for k in ("p50", "p90", "p95", "p99", "mean", "std") if k in lat},
            "noise_pct": lat.get("noise_pct"),
            **{k: r[k] for k in _RESULT_KEYS if k in r},
            "latency_ms_detail": lat,
        })
    return {
        "remote": remote.spec,
        "measured_on": {
            **machine,
            "is_target_device": bool(target_arch) and arch == normalize_arch(target_arch),
            "target_arch": target_arch,
            "how": f"edgekd runner.py over SSH on {remote.destination}, python {machine.get('python')}",
        },
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "artifacts": rows,
        "errors": warnings,
    }


def merge_device_results(report: dict[str, Any], entries: list[dict[str, Any]]) -> dict[str, Any]:
    """Each device keeps its own entry; measuring the same USER@HOST[:PORT] again replaces its old one."""
    new = {e["remote"] for e in entries}
    kept = [e for e in report.get("device_results", []) if e.get("remote") not in new]
    return {**report, "device_results": kept + entries}


def bench_remote(run_dir: str | os.PathLike[str], remotes: list[str], ssh: SshConfig | None = None,
                 runs: int | None = None, warmup: int | None = None, threads: int | None = None,
                 log: Any = None) -> list[DeviceRun]:
    """Benchmark the run's shipped artifacts on every device in parallel and merge the successes into report.json.

    report.json is rewritten atomically once, after all hosts finished, and only if at least one succeeded.
    """
    from edgekd.bundle import load_run, make_bundle

    ssh = ssh or SshConfig()
    say = log or (lambda m: print(m, file=sys.stderr, flush=True))
    parsed = [parse_remote(r) for r in remotes]
    if not parsed:
        raise EdgekdError("no --remote host given", "pass --remote USER@HOST[:PORT] (repeat for several devices)")
    if len({p.spec for p in parsed}) != len(parsed):
        raise EdgekdError("the same --remote is given twice", "list each device once")
    if ssh.identity and not Path(ssh.identity).is_file():
        raise EdgekdError(f"--identity {ssh.identity} not found", "pass the private key file that logs in")
    run_dir = Path(run_dir)
    report, _ = load_run(run_dir)
    target_arch = _target_arch(report)
    with tempfile.TemporaryDirectory(prefix="edgekd-bundle-") as tmp:
        name = f"edgekd-bundle-{report.get('target', 'device')}"
        bundle = make_bundle(run_dir, Path(tmp) / name, threads=threads)
        args = bundle.runner_args(ssh.python, runs=runs, warmup=warmup, threads=threads)
        say(f"bench: {len(bundle.artifacts)} artifact(s) ({', '.join(bundle.artifacts)}) on {len(parsed)} "
            f"device(s), {bundle.threads if threads is None else threads} thread(s)")
        with ThreadPoolExecutor(max_workers=min(16, len(parsed))) as pool:
            runs_done = list(pool.map(
                lambda r: run_remote(r, bundle.tarball, name, args, ssh, target_arch), parsed))
    for run in runs_done:
        if run.ok:
            where = run.entry["measured_on"]
            say(f"  {run.remote}: ok in {run.seconds:.1f}s on {where.get('arch')} {where.get('cpu')!r} "
                f"(target device: {'yes' if where['is_target_device'] else 'no'})")
            for w in run.warnings:
                say(f"    not measured: {w}")
        else:
            say(f"  {run.remote}: FAILED: {run.error}")
    good = [r.entry for r in runs_done if r.ok]
    if good:
        fresh, _ = load_run(run_dir)  # re-read: keep whatever changed while the devices ran
        write_json(run_dir / "report.json", merge_device_results(fresh, good))
    return runs_done


def _target_arch(report: dict[str, Any]) -> str | None:
    from edgekd.targets import load_target

    for spec in (report.get("target_path"), report.get("target")):
        if not spec:
            continue
        try:
            return load_target(spec).device.arch
        except (EdgekdError, OSError, ValueError):
            continue
    return None


# --------------------------------------------------------------------------------------------- CLI
def cmd_bench(args) -> int:
    if args.remote:
        return _cmd_bench_remote(args)
    path = Path(args.artifact)
    if path.is_dir():
        manifest_path = path / "manifest.json"
        if not manifest_path.is_file():
            raise EdgekdError(f"{path} has no manifest.json", "pass a run directory written by `edgekd build`")
        manifest = json.loads(manifest_path.read_text())
        artifacts = [path / a["path"] for a in manifest["artifacts"]]
        inputs = Path(args.inputs) if args.inputs else path / manifest["eval_inputs"]["path"]
    else:
        if not path.is_file():
            raise EdgekdError(f"artifact not found: {path}", "pass a run directory or an .onnx/.xml/.tflite file")
        artifacts = [path]
        inputs = Path(args.inputs) if args.inputs else path.parent / "eval.npz"
    threads = args.threads or 1
    results = [run_local(a, inputs, args.runs or 200, args.warmup if args.warmup is not None else 20, threads)
               for a in artifacts]
    for r in results:
        lat = r["latency_ms"]
        print(f"{r['artifact']:<24} {r['runtime']['name']:<12} p50 {lat['p50']:.4f} ms  p99 {lat['p99']:.4f} ms  "
              f"accuracy {r.get('accuracy', float('nan')):.4f}  peak {r.get('peak_memory_mb', float('nan')):.1f} MB")
    if args.json:
        write_json(args.json, {"results": results})
    return 0


def _cmd_bench_remote(args) -> int:
    if args.inputs:
        raise EdgekdError("--inputs cannot be combined with --remote", "the bundle carries the run's eval.npz")
    if not Path(args.artifact).is_dir():
        raise EdgekdError(f"--remote needs a run directory, got {args.artifact}",
                          "pass the directory `edgekd build` wrote (it is bundled with its shipped artifacts)")
    ssh = SshConfig(identity=args.identity, options=args.ssh_option or [], python=args.remote_python,
                    connect_timeout=args.connect_timeout, keep_remote=args.keep_remote)
    done = bench_remote(args.artifact, args.remote, ssh, runs=args.runs, warmup=args.warmup, threads=args.threads)
    ok = [r for r in done if r.ok]
    for r in ok:
        for a in r.entry["artifacts"]:
            lat = a["latency_ms"]
            print(f"{r.remote:<28} {a['path']:<20} {a['runtime']:<12} p50 {lat['p50']:.4f} ms  "
                  f"p99 {lat['p99']:.4f} ms  noise {a.get('noise_pct') or 0:.1f} %  "
                  f"accuracy {a.get('accuracy', float('nan')):.4f}")
    if ok:
        print(f"merged {len(ok)} device result(s) into {Path(args.artifact) / 'report.json'} (device_results[])")
    if args.json:
        write_json(args.json, {"devices": [r.entry for r in ok],
                               "failed": [{"remote": r.remote, "error": r.error} for r in done if not r.ok]})
    failed = [r for r in done if not r.ok]
    if not ok:
        raise EdgekdError(f"all {len(done)} device(s) failed; report.json was not changed",
                          "see each device's message above")
    if failed and args.require_all:
        raise EdgekdError(f"{len(failed)} of {len(done)} device(s) failed (--require-all)",
                          "see each device's message above; the others' results were merged")
    return 0


def register_cli(sub) -> None:
    p = sub.add_parser("bench", help="benchmark a run directory or one artifact with the standalone runner, "
                                     "locally or on devices over SSH (--remote)")
    p.add_argument("artifact", help="run directory or artifact file (--remote: a run directory)")
    p.add_argument("--inputs", help="EVAL.npz (default: the run's eval.npz)")
    p.add_argument("--runs", type=int, help="minimum timed runs (default 200)")
    p.add_argument("--warmup", type=int, help="minimum warm-up runs (default 20)")
    p.add_argument("--threads", type=int, help="default: 1 locally, the target's runtime.threads on a device")
    p.add_argument("--json", help="write the results here")
    g = p.add_argument_group("devices over SSH (system ssh/scp; several --remote run in parallel)")
    g.add_argument("--remote", action="append", metavar="USER@HOST[:PORT]",
                   help="benchmark the shipped artifacts on this device; repeat for a device farm")
    g.add_argument("--identity", metavar="KEY", help="private key for ssh/scp (-i)")
    g.add_argument("--ssh-option", action="append", metavar="OPT",
                   help="extra ssh/scp -o option, e.g. UserKnownHostsFile=/path (repeatable)")
    g.add_argument("--remote-python", default="python3", help="the device's Python (default python3)")
    g.add_argument("--connect-timeout", type=int, default=15, help="seconds to wait for a device to answer")
    g.add_argument("--keep-remote", action="store_true", help="leave the bundle on the device (for debugging)")
    g.add_argument("--require-all", action="store_true",
                   help="exit 2 when any device fails (default: only when all fail; the others are merged)")
    p.set_defaults(func=cmd_bench)
