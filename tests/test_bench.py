"""Remote benchmarking over SSH, for real: a throwaway OpenSSH server on 127.0.0.1 plays the device.

The server runs as the current user with its own host key, a one-off user key and a free port; it never touches
the system's sshd. The "device's" Python is this venv's (it has numpy and the runtimes), passed with
--remote-python. Where sshd can't start, the integration test skips and says why.
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_bundle import make_run_dir

from edgekd.bench import SshConfig, device_entry, merge_device_results, parse_remote
from edgekd.cli import main
from edgekd.errors import EdgekdError


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


def test_merge_keeps_each_device_and_replaces_a_remeasured_one():
    result = {"artifact": "m.onnx", "format": "onnx", "precision": "int8", "runtime": {"name": "onnxruntime"},
              "machine": {"arch": "aarch64", "cpu": "Cortex-A72"}, "accuracy": 0.9, "predictions": [1, 2],
              "latency_ms": {"p50": 1.0, "p90": 1.1, "p95": 1.2, "p99": 1.3, "mean": 1.0, "std": 0.1,
                             "noise_pct": 2.0, "samples_ms": [1.0]}}
    a = device_entry(parse_remote("pi@a"), [result], [], "aarch64")
    b = device_entry(parse_remote("pi@b"), [result], [], "x86_64")
    assert a["measured_on"]["is_target_device"] is True and b["measured_on"]["is_target_device"] is False
    assert "predictions" not in a["artifacts"][0] and a["artifacts"][0]["latency_ms_detail"]["samples_ms"] == [1.0]
    report = merge_device_results({"target": "t"}, [a, b])
    report = merge_device_results(report, [{**a, "measured_at": "later"}])
    assert [e["remote"] for e in report["device_results"]] == ["pi@b", "pi@a"]
    assert report["device_results"][1]["measured_at"] == "later"


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
        f"Subsystem sftp internal-sftp\nLogLevel ERROR\n")
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


@pytest.mark.slow
def test_bench_over_ssh_merges_device_results(sshd, tmp_path_factory, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(make_run_dir(tmp_path_factory.getbasetemp()), run)
    good = f"{sshd['user']}@127.0.0.1:{sshd['port']}"
    closed = f"{sshd['user']}@127.0.0.1:{_free_port()}"  # nothing listens there
    before = json.loads((run / "report.json").read_text())
    work_dirs_before = _remote_work_dirs()

    # One device works, one is unreachable: the good one is merged, the bad one explained, exit 0.
    assert main([*_bench_args(run, sshd, good, closed), "--json", str(tmp_path / "out.json")]) == 0
    captured = capsys.readouterr()
    assert f"{closed}: FAILED: cannot reach" in captured.err
    report = json.loads((run / "report.json").read_text())
    assert {k: v for k, v in report.items() if k != "device_results"} == before  # nothing else touched
    [entry] = report["device_results"]
    assert entry["remote"] == good
    assert entry["measured_on"]["is_target_device"] is True  # x86_64 host, x86-cpu target
    assert entry["measured_on"]["arch"] == "x86_64" and "SSH" in entry["measured_on"]["how"]
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
