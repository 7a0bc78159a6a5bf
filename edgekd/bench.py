"""Drive the standalone runner: locally in a fresh process (no torch in it), exactly as on a device, or on real
devices over SSH.

Remote benchmarking (``edgekd bench RUN_DIR --remote USER@HOST[:PORT] ...``) bundles the shipped artifacts, copies
the tarball with the system ``scp`` (or, to a host with no sftp subsystem such as dropbear or busybox, whose OpenSSH
9 ``scp`` cannot speak to it, streams it through ``ssh HOST 'cat > FILE'``), runs ``runner.py`` with the device's
``python3`` over ``ssh``, brings the JSON back and merges it into report.json under ``device_results[]``, one entry
per device with its own ``measured_on`` (whether it is the target device, by ``edgekd.device_identity``, or declared
so with ``--as-target``), then recomputes the report's ``gate``, report.md and report.html from them. A local
``edgekd bench RUN_DIR`` does the same with this host's measurements. Rows whose sha256 is not the report's
artifact's are left out. Hosts run in parallel; a failing host (unreachable, authentication, missing runtime) gets
one clear message and the others go on. ssh/scp always get argument lists; the one string the remote shell sees is
built from ``shlex.quote``-d parts only.
"""

from __future__ import annotations

import ipaddress
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

from edgekd import device_identity
from edgekd.bundle import load_run, make_bundle
from edgekd.data.inputs import model_input
from edgekd.errors import EdgekdError
from edgekd.gate import check_report, evaluate_gate
from edgekd.io import atomic_write, loads_json
from edgekd.publish import publish
from edgekd.schema import Report, as_report, validate
from edgekd.targets import TargetProfile, load_target

RUNNER_PATH = Path(__file__).with_name("runner.py")


def write_eval_inputs(path: Path, x: np.ndarray, y: np.ndarray, teacher_logits: np.ndarray | None = None,
                      reference_logits: np.ndarray | None = None, raw: np.ndarray | None = None,
                      source: np.ndarray | None = None, texts: list[str] | None = None) -> Path:
    """The evaluation inputs a device needs: normalised x (or int32 token ids), labels and the teacher's recorded
    outputs; and the raw samples (``raw`` at the model's size, ``source`` before a resize; ``text``: the raw strings)
    the runner pre-processes (tokenizes) itself."""
    arrays = {"x": model_input(x), "y": y.astype(np.int64)}
    if texts is not None:  # a unicode array: loads without pickle
        arrays["text"] = np.asarray(texts, dtype=str)
    if raw is not None:
        arrays["raw"] = np.ascontiguousarray(raw)
    if isinstance(source, list):  # photos of different sizes: one flat buffer and each sample's shape
        arrays["source_data"] = np.concatenate([s.ravel() for s in source]) if source else np.zeros(0, np.uint8)
        arrays["source_shapes"] = np.asarray([s.shape for s in source], np.int64).reshape(len(source), -1)
    elif source is not None:
        arrays["source"] = np.ascontiguousarray(source)
    if teacher_logits is not None:
        arrays["teacher_logits"] = teacher_logits.astype(np.float32)
    if reference_logits is not None:
        arrays["reference_logits"] = reference_logits.astype(np.float32)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)

    return atomic_write(path, write)


def run_local(artifact: Path, inputs: Path, runs: int = 200, warmup: int = 20, threads: int = 1,
              verify: bool = True, memory: bool = True, plugins: list[Path] | None = None,
              versus: Path | None = None, processes: int = 1, min_time_s: float | None = None) -> dict:
    """Benchmark ``artifact`` with runner.py in a child process and return its JSON result.

    ``plugins``: session plugin files for formats beyond the built-in three (verified against the manifest).
    ``versus``: the teacher (or a baseline build's) artifact to time it against, interleaved (the runner's
    ``--versus``); ``processes``: the runner's ``--processes`` (that timing repeated in fresh processes);
    ``min_time_s``: the runner's ``--min-time`` (its default when None)."""
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
    if versus is not None:
        cmd += ["--versus", str(versus)]
    if processes > 1:
        cmd += ["--processes", str(processes)]
    if min_time_s is not None:
        cmd += ["--min-time", str(min_time_s)]
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
    r"(?::(?P<port>[0-9]{1,5}))?\Z"  # \Z, not $: "pi@host\n" must not pass as "pi@host"
)
_SSH_OPTION_RE = re.compile(r"[A-Za-z][A-Za-z0-9]*[= ][^\x00-\x1f]*\Z")  # ssh -o Key=Value, nothing option-like
_REMOTE_DIR_RE = re.compile(r"(/[A-Za-z0-9._+-]+)+/edgekd-bench\.[A-Za-z0-9]{6,}\Z")
# Per-artifact fields copied from the runner's JSON into report.json (predictions stay out: they are bulky).
_RESULT_KEYS = ("accuracy", "agreement_with_teacher", "per_class_accuracy", "parity", "peak_memory_mb", "memory",
                "load_ms", "first_inference_ms", "throughput_per_s", "threads", "sha256_verified", "torch_imported",
                "inputs_sha256", "inputs_verified")


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
    match = _REMOTE_RE.fullmatch(spec) if isinstance(spec, str) else None
    if not match:
        raise EdgekdError(f"--remote {spec!r} is not USER@HOST[:PORT]",
                          "e.g. --remote pi@192.168.1.20 or --remote pi@raspberrypi.local:2222")
    port = match.group("port")
    if port is not None and not 1 <= int(port) <= 65535:
        raise EdgekdError(f"--remote {spec!r}: port {port} is not in 1..65535", "use a valid SSH port")
    return Remote(spec, match.group("host").strip("[]"), match.group("user"), int(port) if port else None)


def remote_key(remote: Remote) -> tuple[str, str, int]:
    """Who and where a spec logs in, normalised: ``Pi@Host.``, ``pi@host:22`` and ``pi@host`` are one device."""
    host = remote.host.lower().rstrip(".")
    try:
        host = ipaddress.ip_address(host).compressed
    except ValueError:
        pass
    return (remote.user or "", host, remote.port or 22)


def check_remotes(specs: list[str]) -> list[Remote]:
    """Parse every ``--remote``; one device given twice (after normalising) is an error naming both spellings."""
    parsed = [parse_remote(r) for r in specs]
    seen: dict[tuple[str, str, int], str] = {}
    for remote in parsed:
        key = remote_key(remote)
        if key in seen:
            raise EdgekdError(f"--remote '{remote.spec}' and '{seen[key]}' are the same device",
                              "list each device once")
        seen[key] = remote.spec
    return parsed


def check_ssh_config(ssh: SshConfig) -> None:
    """The user's ssh settings reach ssh as argument values: none may look like an option or hold a newline."""
    for opt in ssh.options:
        if not _SSH_OPTION_RE.match(opt):
            raise EdgekdError(f"--ssh-option {opt!r} is not an ssh option of the form Key=Value",
                              "e.g. --ssh-option UserKnownHostsFile=/path/known_hosts")
    if not ssh.python or ssh.python.startswith("-") or any(c in ssh.python for c in "\n\r\x00"):
        raise EdgekdError(f"--remote-python {ssh.python!r} is not a program path",
                          "e.g. --remote-python python3 or --remote-python /usr/bin/python3.11")


def safe_remote_dir(remote: Remote, path: str) -> str:
    """The work directory mktemp made on the device, or a RemoteError: ``rm -rf`` only ever sees a path of the form
    ``/<dirs>/edgekd-bench.XXXXXX`` (no '..', no '/', no home directory)."""
    if not _REMOTE_DIR_RE.fullmatch(path) or any(part in (".", "..") for part in path.split("/")):
        raise RemoteError(f"{remote.destination}: mktemp returned an unusable directory {path[:200]!r}")
    return path


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
    if lacks_sftp(err):
        return (f"{where} has no sftp subsystem, which scp needs ({last}), and streaming the bundle over ssh "
                f"failed too: check that the device's shell has 'cat' and its disk has room")
    if proc.returncode == 255 or "ssh:" in err or "Permission denied" in err:
        if "Permission denied" in err or "Too many authentication failures" in err:
            return (f"authentication failed for {where} ({last}): check --identity KEY and that its public key "
                    f"is in the device's ~/.ssh/authorized_keys")
        if "Host key verification failed" in err or "REMOTE HOST IDENTIFICATION HAS CHANGED" in err:
            return f"host key of {where} does not match known_hosts ({last}): verify the device, then fix known_hosts"
        for marker in ("Connection refused", "timed out", "No route to host", "Could not resolve",
                       "Name or service not known", "Network is unreachable"):
            if marker in err:
                return f"cannot reach {where} ({last}): is the device on and is sshd listening there?"
        if "Connection closed" in err or "Connection reset" in err:
            return (f"{where} closed the connection while {step} ({last}): sshd answered but ended the session; "
                    f"its log says why (AllowUsers, MaxStartups, a key exchange it refuses)")
        return f"ssh to {where} failed while {step}: {last}"
    return f"{step} on {where} failed: {last}"


def _run(args: list[str], timeout: int, stdin: Any = subprocess.DEVNULL) -> subprocess.CompletedProcess:
    try:
        # errors="replace": a device's bytes are not ours to trust to be UTF-8; a stray one is not a crash
        return subprocess.run(args, capture_output=True, text=True, errors="replace", timeout=timeout, stdin=stdin)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(args, 255, "", f"ssh: timed out after {timeout} s")
    except FileNotFoundError:
        raise EdgekdError(f"'{args[0]}' is not installed on this machine",
                          "install the OpenSSH client (Debian/Ubuntu: apt-get install openssh-client)") from None


def lacks_sftp(stderr: str) -> bool:
    """Whether scp failed because the host has no sftp subsystem (OpenSSH 9's scp speaks sftp): sshd refuses the
    subsystem, or its configured sftp-server is missing and the channel just closes."""
    lines = [ln.strip() for ln in (stderr or "").splitlines() if ln.strip()]
    return ("subsystem request failed" in (stderr or "") or "sftp-server" in (stderr or "")
            or lines == ["scp: Connection closed"])


def copy_bundle(remote: Remote, tarball: Path, remote_dir: str, ssh: SshConfig) -> str:
    """Put the bundle's tarball into ``remote_dir``: scp first, and for a host with no sftp subsystem the same bytes
    through a plain ssh channel (``cat > FILE``). Returns how it travelled; the runner's sha256 checks of every
    extracted file are the same either way (and gzip's CRC refuses a truncated stream)."""
    proc = _run([*ssh.base(remote, "scp"), "--", str(tarball), remote.scp_path(f"{remote_dir}/")],
                ssh.command_timeout)
    if proc.returncode == 0:
        return "scp"
    if not lacks_sftp(proc.stderr):
        raise RemoteError(_explain_ssh(remote, "copying the bundle (scp)", proc))
    dest = shlex.quote(f"{remote_dir}/{tarball.name}")
    with open(tarball, "rb") as fh:
        streamed = _run([*ssh.base(remote, "ssh"), "--", remote.destination, f"cat > {dest}"],
                        ssh.command_timeout, stdin=fh)
    if streamed.returncode != 0:
        both = subprocess.CompletedProcess(streamed.args, streamed.returncode, "",
                                           f"{proc.stderr.strip()}\n{streamed.stderr.strip()}")
        raise RemoteError(_explain_ssh(remote, "streaming the bundle over ssh", both))
    return "ssh stream (no sftp subsystem)"


def _runner_errors(stderr: str) -> list[str]:
    return [ln.split("runner error:", 1)[1].strip() for ln in stderr.splitlines() if "runner error:" in ln]


def run_remote(remote: Remote, tarball: Path, bundle_name: str, runner_args: list[str], ssh: SshConfig,
               target: TargetProfile | None, declared: bool = False) -> DeviceRun:
    """Copy the bundle to one device, run it there, bring the JSON back. Never raises for a device's failure."""

    def measure(remote_dir: str) -> tuple[dict[str, Any], list[str]]:
        qdir = shlex.quote(remote_dir)
        transport = copy_bundle(remote, tarball, remote_dir, ssh)
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
        good, warnings = parse_reply(remote.destination, fetched.stdout)
        if not good:
            raise RemoteError(f"{remote.destination}: no artifact could be measured: "
                              + ("; ".join(warnings or errors) or "the runner returned nothing"))
        entry = device_entry(remote.spec, good, warnings, target, declared,
                             f"edgekd runner.py over SSH on {remote.destination}, bundle sent by {transport}")
        return entry, warnings

    return on_device(remote, ssh, measure)


def on_device(remote: Remote, ssh: SshConfig, measure: Any) -> DeviceRun:
    """``measure(work_dir) -> (entry, warnings)`` in a fresh ``mktemp -d`` directory on one device, removed
    afterwards unless ``--keep-remote`` (``rm -rf`` only ever sees a ``safe_remote_dir``): the runner's path and
    TensorRT's (``edgekd.devices.tensorrt``) share it. Never raises for a device's failure (``RemoteError``)."""
    t0 = time.perf_counter()
    run = DeviceRun(remote.spec)
    remote_dir = None
    try:
        proc = _run([*ssh.base(remote, "ssh"), "--", remote.destination,
                     'mktemp -d "${TMPDIR:-/tmp}/edgekd-bench.XXXXXX"'], ssh.connect_timeout + 60)
        if proc.returncode != 0:
            raise RemoteError(_explain_ssh(remote, "creating a work directory", proc))
        remote_dir = safe_remote_dir(remote, (proc.stdout.strip().splitlines() or [""])[-1])
        run.entry, run.warnings = measure(remote_dir)
    except RemoteError as exc:
        run.error = str(exc)
    finally:
        if remote_dir and not ssh.keep_remote:
            _run([*ssh.base(remote, "ssh"), "--", remote.destination, f"rm -rf {shlex.quote(remote_dir)}"],
                 ssh.connect_timeout + 60)
        run.seconds = time.perf_counter() - t0
    return run


MAX_REPLY_BYTES = 64 << 20  # a device's JSON: a few MB per artifact with every timing sample


def parse_reply(where: str, text: str) -> tuple[list[dict[str, Any]], list[str]]:
    """(measured results, per-artifact errors) of a device's runner JSON, every result validated as a
    ``RunnerResult``: a device is a foreign machine, so its reply is input, and a malformed one is that host's error
    (RemoteError), never a crash of the whole bench or a number the gate trusts unchecked."""
    if len(text) > MAX_REPLY_BYTES:
        raise RemoteError(f"{where}: the runner's JSON is {len(text)} bytes, more than {MAX_REPLY_BYTES}")
    try:
        payload = loads_json(text, f"{where}: the runner's JSON", "")
    except EdgekdError as exc:  # too large, too deep or not JSON: that host's error
        raise RemoteError(exc.problem) from None
    results = payload.get("results", [payload]) if isinstance(payload, dict) else None
    if not isinstance(results, list) or not all(isinstance(r, dict) for r in results):
        raise RemoteError(f"{where}: the runner's JSON is not a result or a list of results")
    good, errors = [], []
    for r in results:
        if "error" in r:
            errors.append(f"{str(r.get('artifact'))[:100]}: {str(r['error'])[:300]}")
            continue
        try:
            validate("runner_result", r, f"{where}: the runner's result for {str(r.get('artifact'))[:100]}",
                     "rerun with this edgekd's runner.py (the bundle ships it)")
        except EdgekdError as exc:
            raise RemoteError(exc.problem) from None
        good.append(r)
    return good, errors


normalize_arch = device_identity.normalize_arch


def device_entry(source: str, results: list[dict[str, Any]], warnings: list[str], target: TargetProfile | None,
                 declared: bool = False, how: str = "edgekd runner.py", where: str = "device") -> dict[str, Any]:
    """One device_results[] item: where it ran (``where``: device, host or emulated; target device or not, by which
    rule) and each artifact's numbers."""
    machine = {**results[0].get("machine", {}), "where": where}
    if target is not None:
        identity = device_identity.measured_on_fields(target, machine, declared)
    else:
        why = ["the report's target file is not found"]
        identity = {"is_target_device": False, "declared_target": declared,
                    "identity": {"rule": device_identity.MISMATCH, "reasons": why}}
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
        "remote": source,
        "measured_on": {**machine, **identity, "how": f"{how}, python {machine.get('python')}"},
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "artifacts": rows,
        "errors": warnings,
    }


def _foreign_rows(report: dict[str, Any], entry: dict[str, Any]) -> tuple[list[dict], list[dict]]:
    """(rows measuring the report's own artifacts, rows left out with why): sha256 must be the report's."""
    ours = {a.get("path"): a.get("sha256") for a in report.get("artifacts") or []}
    eval_sha = (report.get("eval_inputs") or {}).get("sha256")
    kept, left_out = [], []
    for row in entry.get("artifacts") or []:
        want, got = ours.get(row.get("path")), row.get("sha256")
        if row.get("path") not in ours:
            why = "not an artifact of this report"
        elif not got or got != want:
            why = f"sha256 {str(got)[:12]}... is not the report's {str(want)[:12]}..."
        elif row.get("sha256_verified") is False:
            why = "the runner did not verify its sha256"
        elif row.get("inputs_verified") is False or row.get("inputs_sha256", eval_sha) != eval_sha:
            why = "scored on evaluation inputs that are not the report's eval.npz"
        else:
            kept.append(row)
            continue
        left_out.append({"path": row.get("path"), "why": why})
    return kept, left_out


def merge_device_results(report: dict[str, Any], entries: list[dict[str, Any]]) -> dict[str, Any]:
    """Each device keeps its own entry; measuring the same device again replaces its old one. Rows whose sha256 is
    not the report's artifact's are left out (listed in the entry's ``left_out``): they never reach the gate."""
    new = {e["remote"] for e in entries}
    kept = [e for e in report.get("device_results", []) if e.get("remote") not in new]
    checked = []
    for entry in entries:
        rows, left_out = _foreign_rows(report, entry)
        checked.append({**entry, "artifacts": rows, **({"left_out": left_out} if left_out else {})})
    return {**report, "device_results": kept + checked}


def report_target(report: Report | dict[str, Any]) -> TargetProfile | None:
    """The report's target profile (its recorded path first, then the shipped name), or None when neither loads."""
    report = as_report(report)
    for spec in (report.target_path, report.target):
        if not spec:
            continue
        try:
            return load_target(spec)
        except (EdgekdError, OSError, ValueError):
            continue
    return None


def refresh_report(run_dir: Path, report: Report | dict[str, Any]) -> Report:
    """Recompute ``gate`` with the merged device results and publish report.json, report.md and report.html
    (``publish.publish``: the same writer as ``edgekd build``)."""
    report = check_report(report, f"{run_dir / 'report.json'} with the device results merged")
    target = report_target(report)
    if target is None:
        publish(report, run_dir)
        raise EdgekdError(f"device results merged into {run_dir / 'report.json'}, but its target "
                          f"'{report.target}' cannot be loaded, so the gate was not recomputed",
                          "restore the target file the report names (target_path), then run `edgekd bench` again")
    report.gate = evaluate_gate(report, target).to_model()
    return publish(report, run_dir)


def bench_remote(run_dir: str | os.PathLike[str], remotes: list[str], ssh: SshConfig | None = None,
                 runs: int | None = None, warmup: int | None = None, threads: int | None = None,
                 log: Any = None, declared: bool = False) -> list[DeviceRun]:
    """Benchmark the run's shipped artifacts on every device in parallel, merge the successes into report.json and
    refresh its gate, report.md and report.html (``refresh_report``).

    report.json is rewritten atomically once, after all hosts finished, and only if at least one succeeded.
    ``declared``: the user states that these hosts are the target device (``--as-target``; recorded).
    """
    ssh = ssh or SshConfig()
    say = log or (lambda m: print(m, file=sys.stderr, flush=True))
    parsed = check_remotes(remotes)
    if not parsed:
        raise EdgekdError("no --remote host given", "pass --remote USER@HOST[:PORT] (repeat for several devices)")
    check_ssh_config(ssh)
    if ssh.identity and not Path(ssh.identity).is_file():
        raise EdgekdError(f"--identity {ssh.identity} not found", "pass the private key file that logs in")
    run_dir = Path(run_dir)
    report, _ = load_run(run_dir)
    target = report_target(report)
    with tempfile.TemporaryDirectory(prefix="edgekd-bundle-") as tmp:
        name = f"edgekd-bundle-{report.get('target', 'device')}"
        bundle = make_bundle(run_dir, Path(tmp) / name, threads=threads)
        args = bundle.runner_args(ssh.python, runs=runs, warmup=warmup, threads=threads)
        say(f"bench: {len(bundle.artifacts)} artifact(s) ({', '.join(bundle.artifacts)}) on {len(parsed)} "
            f"device(s), {bundle.threads if threads is None else threads} thread(s)")
        with ThreadPoolExecutor(max_workers=min(16, len(parsed))) as pool:
            runs_done = list(pool.map(
                lambda r: run_remote(r, bundle.tarball, name, args, ssh, target, declared), parsed))
    for run in runs_done:
        if run.ok:
            say(f"  {run.remote}: ok in {run.seconds:.1f}s; {_where(run.entry)}")
            for w in run.warnings:
                say(f"    not measured: {w}")
        else:
            say(f"  {run.remote}: FAILED: {run.error}")
    good = [r.entry for r in runs_done if r.ok]
    if good:
        fresh, _ = load_run(run_dir)  # re-read: keep whatever changed while the devices ran
        _merge_and_refresh(run_dir, fresh, good, say)
    return runs_done


def _where(entry: dict[str, Any]) -> str:
    m = entry["measured_on"]
    identity = m.get("identity") or {}
    verdict = "the target device" if m.get("is_target_device") else "NOT the target device"
    return (f"{m.get('arch')} {m.get('cpu')!r} is {verdict} ({identity.get('rule')}: "
            f"{'; '.join(identity.get('reasons') or [])})")


def _merge_and_refresh(run_dir: Path, report: dict[str, Any], entries: list[dict[str, Any]], say: Any) -> None:
    """The entries merged into the run's report (as report.json holds it), then the gate and the three files."""
    refreshed = refresh_report(run_dir, merge_device_results(report, entries))
    for entry in refreshed.device_results[-len(entries):]:
        for item in entry.left_out:
            say(f"  {entry.remote}: {item.path} left out of the report: {item.why}")
    passed = refreshed.gate is not None and refreshed.gate.passed
    say(f"refreshed {run_dir}/report.json gate ({'PASSED' if passed else 'FAILED'}), report.md and "
        "report.html with the device results")


def merge_local(run_dir: Path, results: list[dict[str, Any]], declared: bool) -> None:
    """This host's measurements of the run's own artifacts become its device_results[] entry, then the refresh."""
    report, _ = load_run(run_dir)
    own = {a.get("path") for a in report.get("artifacts") or []}
    mine = [r for r in results if r.get("artifact") in own]
    if not mine:
        return
    host = mine[0].get("machine", {}).get("hostname") or "localhost"
    entry = device_entry(f"local:{host}", mine, [], report_target(report), declared,
                         "edgekd bench: runner.py in a fresh process on this host", where="host")
    print(_where(entry), flush=True)
    _merge_and_refresh(run_dir, report, [entry], lambda m: print(m, flush=True))
