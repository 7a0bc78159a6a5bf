"""Remote benchmarking over SSH, for real: a throwaway OpenSSH server on 127.0.0.1 plays the device.

The server runs as the current user with its own host key, a one-off user key and a free port; it never touches
the system's sshd. The "device's" Python is this venv's (it has numpy and the runtimes), passed with
--remote-python. Where sshd can't start, the integration test skips and says why.
"""

from __future__ import annotations

import getpass
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from factories import make_report
from test_bundle import make_run_dir

from edgekd.bench import (
    SshConfig,
    _explain_ssh,
    _merge_and_refresh,
    device_entry,
    lacks_sftp,
    merge_device_results,
    parse_remote,
)
from edgekd.cli import main
from edgekd.errors import EdgekdError
from edgekd.gate import evaluate_gate
from edgekd.render_md import REPORT_SCHEMA_VERSION, render_markdown
from edgekd.runner import describe_machine
from edgekd.schema import as_report, dump
from edgekd.targets import load_target


# --------------------------------------------------------------------------------------------- fast
@pytest.mark.parametrize(
    ("spec", "user", "host", "port"),
    [("pi@192.168.1.20", "pi", "192.168.1.20", None), ("pi@raspberrypi.local:2222", "pi", "raspberrypi.local", 2222),
     ("board", None, "board", None), ("root@[::1]:22", "root", "::1", 22)],
)
def test_parse_remote(spec, user, host, port):
    r = parse_remote(spec)
    assert (r.user, r.host, r.port) == (user, host, port)


@pytest.mark.parametrize("spec", ["-oProxyCommand=x@h", "pi@-h", "pi@host;rm -rf /", "pi@host:0", "pi@host:99999",
                                  "pi@ho st", "", "pi@host:22:33", "pi@$(id)"])
def test_parse_remote_refuses_what_could_inject(spec):
    with pytest.raises(EdgekdError, match="USER@HOST|port"):
        parse_remote(spec)


def test_ssh_arguments_are_lists_and_user_options_win():
    r = parse_remote("pi@[::1]:2200")
    ssh = SshConfig(identity="/k", options=["StrictHostKeyChecking=no"])
    args = ssh.base(r, "ssh")
    assert args[:3] == ["ssh", "-o", "StrictHostKeyChecking=no"]  # first value given wins in ssh
    assert args[-4:] == ["-i", "/k", "-p", "2200"]
    assert ssh.base(r, "scp")[-2:] == ["-P", "2200"]
    assert r.scp_path("/tmp/x/") == "pi@[::1]:/tmp/x/"


PI4 = {"arch": "aarch64", "cpu": "BCM2835", "board": "Raspberry Pi 4 Model B Rev 1.4", "cores": 4, "memory_mb": 3793,
       "python": "3.11"}


def runner_result(artifact: str = "m.onnx", sha256: str = "a" * 64, machine: dict | None = None,
                  p95: float = 1.2) -> dict:
    """What runner.py returns for one artifact (the fields device_entry reads)."""
    return {"artifact": artifact, "format": "onnx", "precision": "int8", "runtime": {"name": "onnxruntime"},
            "sha256": sha256, "sha256_verified": True, "machine": machine or PI4, "accuracy": 0.9,
            "predictions": [1, 2], "peak_memory_mb": 12.0, "memory": {"judged": "model over baseline"},
            "latency_ms": {"p50": 1.0, "p90": 1.1, "p95": p95, "p99": 1.3, "mean": 1.0, "std": 0.1,
                           "noise_pct": 2.0, "samples_ms": [1.0]}}


def test_device_entry_says_which_identity_rule_matched():
    rpi4 = load_target("rpi4")
    a = device_entry("pi@a", [runner_result()], [], rpi4)
    assert a["measured_on"]["is_target_device"] is True and a["measured_on"]["identity"]["rule"] == "identity"
    graviton = {**PI4, "cpu": "", "board": None, "cpu_cores": ["Neoverse-N1"]}
    b = device_entry("vm@b", [runner_result(machine=graviton)], [], rpi4)
    assert b["measured_on"]["is_target_device"] is False and b["measured_on"]["identity"]["rule"] == "mismatch"
    c = device_entry("vm@b", [runner_result(machine=graviton)], [], rpi4, declared=True)
    assert c["measured_on"]["is_target_device"] is True and c["measured_on"]["declared_target"] is True
    assert device_entry("x@y", [runner_result()], [], None)["measured_on"]["is_target_device"] is False
    assert "predictions" not in a["artifacts"][0] and a["artifacts"][0]["latency_ms_detail"]["samples_ms"] == [1.0]
    assert a["artifacts"][0]["memory"] == {"judged": "model over baseline"}


def test_merge_keeps_each_device_replaces_a_remeasured_one_and_leaves_out_other_files():
    report = {"target": "rpi4", "artifacts": [{"path": "m.onnx", "sha256": "a" * 64}]}
    rpi4 = load_target("rpi4")
    a = device_entry("pi@a", [runner_result()], [], rpi4)
    b = device_entry("pi@b", [runner_result(), runner_result("teacher.onnx")], [], rpi4)
    report = merge_device_results(report, [a, b])
    report = merge_device_results(report, [{**a, "measured_at": "later"}])
    assert [e["remote"] for e in report["device_results"]] == ["pi@b", "pi@a"]
    assert report["device_results"][1]["measured_at"] == "later"
    assert report["device_results"][0]["left_out"] == [{"path": "teacher.onnx",
                                                        "why": "not an artifact of this report"}]
    tampered = device_entry("pi@c", [runner_result(sha256="f" * 64)], [], rpi4)
    [entry] = merge_device_results(report, [tampered])["device_results"][-1:]
    assert entry["artifacts"] == []
    assert entry["left_out"][0]["why"] == "sha256 ffffffffffff... is not the report's aaaaaaaaaaaa..."


def _stale_run(tmp_path: Path, target: str | Path) -> tuple[Path, dict]:
    """A run directory whose report was built on a host that is not the target (its device budgets unverified)."""
    report = make_report(on_device=False)
    report["target_path"] = str(load_target(target).path)
    report["target"] = load_target(target).name
    report["gate"] = evaluate_gate(report, load_target(target)).to_dict()
    run = tmp_path / "run"
    run.mkdir()
    (run / "report.json").write_text(json.dumps(report))
    (run / "report.md").write_text(render_markdown(report))
    (run / "report.html").write_text("<html>stale</html>")
    return run, report


def test_bench_refresh_rewrites_gate_report_md_and_html(tmp_path):
    run, report = _stale_run(tmp_path, "x86-cpu")
    assert set(report["gate"]["unverified"]) == {"latency_ms_p95", "peak_memory_mb"}
    avx2_box = {"arch": "x86_64", "cpu": "AMD EPYC", "cpu_flags": ["avx2"], "cores": 4, "memory_mb": 8000}
    good = [runner_result(a["path"], a["sha256"], avx2_box, p95=0.2) for a in report["artifacts"]]
    tampered = [runner_result(a["path"], "f" * 64, avx2_box, p95=0.2) for a in report["artifacts"]]
    said: list[str] = []
    _merge_and_refresh(run, report, [device_entry("ci@fake", tampered, [], load_target("x86-cpu"))], said.append)
    refreshed = json.loads((run / "report.json").read_text())
    assert set(refreshed["gate"]["unverified"]) == {"latency_ms_p95", "peak_memory_mb"}  # tampered: never counts
    assert any("left out of the report: sha256 ffffffffffff..." in s for s in said)

    _merge_and_refresh(run, refreshed, [device_entry("ci@box", good, [], load_target("x86-cpu"))], said.append)
    refreshed = json.loads((run / "report.json").read_text())
    gate = refreshed["gate"]
    assert gate["passed"] and gate["unverified"] == []
    device = [c for c in gate["checks"] if c["device_bound"]]
    assert device and all(c["status"] == "pass" and c["note"].startswith("ci@box is the target device") for c in device)
    assert "unverified here" not in (run / "report.md").read_text()
    html = (run / "report.html").read_text()
    assert "ci@box" in html and "stale" not in html
    assert "refreshed" in said[-1] and "PASSED" in said[-1]


def test_remote_bad_input(tmp_path, capsys):
    assert main(["bench", str(tmp_path), "--remote", "pi@-oProxyCommand=evil"]) == 2
    assert "USER@HOST" in capsys.readouterr().err
    assert main(["bench", str(tmp_path / "nope.onnx"), "--remote", "pi@host"]) == 2
    assert "needs a run directory" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------- sshd
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    """An sshd on 127.0.0.1:PORT that lets this user in with a throwaway key; skips with the reason if it can't."""
    yield from _sshd(tmp_path_factory, sftp=True)


@pytest.fixture(scope="module")
def sshd_no_sftp(tmp_path_factory):
    """The same sshd with no sftp subsystem, like a dropbear or busybox board: OpenSSH 9's scp cannot copy to it."""
    yield from _sshd(tmp_path_factory, sftp=False)


def _sshd(tmp_path_factory, sftp: bool):
    binary = shutil.which("sshd") or "/usr/sbin/sshd"
    if not os.path.exists(binary) or not shutil.which("ssh-keygen") or not shutil.which("scp"):
        pytest.skip("OpenSSH server/client not installed (run .ci/system-deps.sh: apt-get install openssh-server)")
    d = tmp_path_factory.mktemp("sshd")
    for name in ("host_key", "user_key", "wrong_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / name)], check=True)
    shutil.copyfile(d / "user_key.pub", d / "authorized_keys")
    port = _free_port()
    user = getpass.getuser()
    (d / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d / 'host_key'}\nPidFile {d / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {d / 'authorized_keys'}\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        f"PubkeyAuthentication yes\nPermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\n"
        + ("Subsystem sftp internal-sftp\n" if sftp else "") + "LogLevel ERROR\n")
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # privilege separation directory
    proc = subprocess.Popen([binary, "-D", "-e", "-f", str(d / "sshd_config")], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    options = [f"UserKnownHostsFile={d / 'known_hosts'}", "StrictHostKeyChecking=no", "LogLevel=ERROR"]
    probe = ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5", "-i", str(d / "user_key"), "-p", str(port),
             *[x for o in options for x in ("-o", o)], f"{user}@127.0.0.1", "true"]
    deadline, last = time.monotonic() + 20, ""
    while True:
        if proc.poll() is not None:
            pytest.skip(f"sshd could not start: {proc.stderr.read().strip()[-500:]}")
        check = subprocess.run(probe, capture_output=True, text=True, timeout=30)
        if check.returncode == 0:
            break
        last = check.stderr.strip()
        if time.monotonic() > deadline:
            proc.terminate()
            pytest.skip(f"sshd started but refuses the test login: {last[-500:]}")
        time.sleep(0.3)
    yield {"dir": d, "port": port, "user": user, "options": options}
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


def _remote_work_dirs() -> set[str]:
    """The "device's" edgekd work directories: this machine's /tmp (sshd's sessions get no TMPDIR)."""
    return {p.name for p in Path("/tmp").glob("edgekd-bench.*")}


def _bench_args(run: Path, sshd: dict, *remotes: str, key: str = "user_key", python: str = sys.executable):
    args = ["bench", str(run), "--identity", str(sshd["dir"] / key), "--remote-python", python, "--runs", "40",
            "--warmup", "3", "--threads", "1"]
    for o in sshd["options"]:
        args += ["--ssh-option", o]
    for r in remotes:
        args += ["--remote", r]
    return args


def _board_run(run: Path, tmp_path: Path) -> Path:
    """Make the fixture run's report complete, for a test board whose identity is this machine (the SSH "device"),
    as if built on another host: its device budgets start unverified."""
    me = describe_machine()
    raw = yaml.safe_load(open(load_target("rpi4").path, encoding="utf-8"))
    raw["name"] = "test-board"
    raw["device"].update(arch=me["arch"], cores=me["cores"], memory_mb=me["memory_mb"],
                         cpu_pattern=re.escape(me["cpu"]) or ".")
    raw["budgets"].update(latency_ms_p95=1000.0, peak_memory_mb=4096.0, model_size_kb=4096.0)
    raw["student_budget"].update(max_params=10**9, max_macs=10**12)
    target = tmp_path / "test-board.yaml"
    target.write_text(yaml.safe_dump(raw))
    report, full = json.loads((run / "report.json").read_text()), make_report()
    report.update(schema_version=REPORT_SCHEMA_VERSION, target="test-board", target_path=str(target),
                  measured_on={"arch": me["arch"], "cpu": "another CI runner", "cores": 64, "threads": 1,
                               "is_target_device": False},
                  student={**full["student"], "accuracy": 0.85}, teacher={**full["teacher"], "accuracy": 0.86})
    for row in report["artifacts"]:
        row["peak_memory_mb"] = 50.0
    report["gate"] = evaluate_gate(report, load_target(target)).to_dict()
    (run / "report.json").write_text(json.dumps(report))
    return target


@pytest.mark.slow
def test_bench_over_ssh_merges_device_results(sshd, tmp_path_factory, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(make_run_dir(tmp_path_factory.getbasetemp()), run)
    _board_run(run, tmp_path)
    good = f"{sshd['user']}@127.0.0.1:{sshd['port']}"
    closed = f"{sshd['user']}@127.0.0.1:{_free_port()}"  # nothing listens there
    before = json.loads((run / "report.json").read_text())
    assert set(before["gate"]["unverified"]) == {"latency_ms_p95", "peak_memory_mb"}  # built elsewhere
    work_dirs_before = _remote_work_dirs()

    # One device works, one is unreachable: the good one is merged, the bad one explained, exit 0.
    assert main([*_bench_args(run, sshd, good, closed), "--json", str(tmp_path / "out.json")]) == 0
    captured = capsys.readouterr()
    assert f"{closed}: FAILED: cannot reach" in captured.err
    report = json.loads((run / "report.json").read_text())
    untouched = [k for k in before if k != "gate"]
    as_written = dump(as_report(before))  # publish writes every report through its schema (defaults included)
    assert {k: report[k] for k in untouched} == {k: as_written[k] for k in untouched}  # nothing else touched
    [entry] = report["device_results"]
    assert entry["remote"] == good
    assert entry["measured_on"]["is_target_device"] is True  # this machine is the test board, by identity
    assert entry["measured_on"]["identity"]["rule"] == "identity" and "SSH" in entry["measured_on"]["how"]
    gate = report["gate"]  # refreshed: the device budgets are verified by the device's own numbers
    assert gate["unverified"] == [] and gate["passed"], gate
    assert all(c["status"] == "pass" for c in gate["checks"] if c["device_bound"])
    assert "refreshed" in captured.err and good in (run / "report.html").read_text()
    rows = {a["path"]: a for a in entry["artifacts"]}
    assert set(rows) == {"model_fp32.onnx", "model_fp32.xml"}
    for a in rows.values():
        assert a["sha256_verified"] and a["torch_imported"] is False
        assert a["accuracy"] == pytest.approx(34 / 40)
        assert 0 < a["latency_ms"]["p50"] <= a["latency_ms"]["p99"]
        assert a["latency_ms_detail"]["runs"] >= 40 and a["peak_memory_mb"] > 0
    assert json.loads((tmp_path / "out.json").read_text())["failed"][0]["remote"] == closed
    assert _remote_work_dirs() <= work_dirs_before  # the remote work directory was removed

    # Wrong key: authentication failure, said plainly; all devices failed -> exit 2, report unchanged.
    assert main(_bench_args(run, sshd, good, key="wrong_key")) == 2
    err = capsys.readouterr().err
    assert "authentication failed" in err and "all 1 device(s) failed" in err
    assert json.loads((run / "report.json").read_text()) == report

    # The device's Python lacks numpy and the runtimes: the runner's own message names what to install.
    bare = shutil.which("python3", path="/usr/bin:/bin") or "/usr/bin/python3"
    probe = subprocess.run([bare, "-c", "import numpy"], capture_output=True)
    if probe.returncode != 0:
        assert main(_bench_args(run, sshd, good, python=bare)) == 2
        assert "pip install 'numpy>=1.21'" in capsys.readouterr().err


@pytest.mark.slow
def test_bench_over_ssh_to_a_host_without_sftp(sshd_no_sftp, tmp_path_factory, tmp_path, capsys):
    """OpenSSH 9's scp speaks sftp: to a host with no sftp subsystem the bundle is streamed over the ssh channel,
    chosen automatically, and the runner still verifies every file's sha256."""
    run = tmp_path / "run"
    shutil.copytree(make_run_dir(tmp_path_factory.getbasetemp()), run)
    _board_run(run, tmp_path)
    host = f"{sshd_no_sftp['user']}@127.0.0.1:{sshd_no_sftp['port']}"
    plain_scp = subprocess.run(
        ["scp", "-i", str(sshd_no_sftp["dir"] / "user_key"), "-P", str(sshd_no_sftp["port"]),
         *[x for o in sshd_no_sftp["options"] for x in ("-o", o)], "--", str(run / "report.json"),
         f"{host.rsplit(':', 1)[0]}:{tmp_path}/copy.json"], capture_output=True, text=True, timeout=60)
    assert plain_scp.returncode != 0 and lacks_sftp(plain_scp.stderr)  # the host really has no sftp
    work_dirs_before = _remote_work_dirs()
    assert main(_bench_args(run, sshd_no_sftp, host)) == 0, capsys.readouterr().err
    [entry] = json.loads((run / "report.json").read_text())["device_results"]
    assert entry["remote"] == host and "ssh stream (no sftp subsystem)" in entry["measured_on"]["how"]
    assert {a["path"] for a in entry["artifacts"]} == {"model_fp32.onnx", "model_fp32.xml"}
    assert all(a["sha256_verified"] and a["accuracy"] == pytest.approx(34 / 40) for a in entry["artifacts"])
    assert _remote_work_dirs() <= work_dirs_before


@pytest.mark.parametrize(("stderr", "says"), [
    ("subsystem request failed on channel 0\nscp: Connection closed", "has no sftp subsystem"),
    ("sh: /usr/libexec/sftp-server: not found\nscp: Connection closed", "has no sftp subsystem"),
    ("Connection closed by 10.0.0.2 port 22", "closed the connection"),
    ("ssh: connect to host 10.0.0.2 port 22: Connection refused", "cannot reach"),
])
def test_ssh_failures_name_the_real_cause(stderr, says):
    proc = subprocess.CompletedProcess(["scp"], 255, "", stderr)
    message = _explain_ssh(parse_remote("pi@10.0.0.2"), "copying the bundle (scp)", proc)
    assert says in message and (says == "cannot reach") == ("cannot reach" in message)


def test_only_a_missing_sftp_subsystem_switches_to_the_ssh_stream():
    assert lacks_sftp("subsystem request failed on channel 0\nscp: Connection closed")
    assert lacks_sftp("scp: Connection closed\n")
    assert not lacks_sftp("ssh: connect to host h port 22: Connection refused\nscp: Connection closed")
    assert not lacks_sftp("root@h: Permission denied (publickey).\nscp: Connection closed")
    assert not lacks_sftp("scp: /tmp/x: No space left on device")
