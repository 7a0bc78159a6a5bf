"""ARM kernels without a board: the target's core, its cpuinfo, the QEMU command, the private cache, the comparison
and the "emulated" label that never judges a budget; then the real thing under QEMU (slow; skips where QEMU,
mmdebstrap or root are missing)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import numpy as np
import pytest
from test_bench import _stale_run, runner_result
from test_bundle import make_run_dir

from edgekd import device_identity, emulate, runner
from edgekd.bench import _merge_and_refresh, device_entry
from edgekd.cli import main
from edgekd.errors import EdgekdError
from edgekd.targets import load_target


def test_the_core_is_the_targets_own():
    a72 = emulate.core_for_target(load_target("rpi4"))
    assert (a72.name, a72.qemu, a72.note) == ("Cortex-A72", "cortex-a72", "")
    orin = emulate.core_for_target(load_target("jetson-orin-nano"))
    assert orin.name == "Cortex-A78AE" and orin.qemu == "cortex-a76" and "same ARMv8.2-A + dot-product" in orin.note
    assert all(core.qemu != "max" for core in emulate.CORES.values())  # max enables SME: wrong XNNPACK int8
    with pytest.raises(EdgekdError, match="x86_64 device, not aarch64"):
        emulate.core_for_target(load_target("x86-cpu"))
    with pytest.raises(EdgekdError, match="32-bit ARM"):
        emulate.core_for_target(load_target("rpi4"), "armhf")


def test_cpuinfo_names_the_core_to_the_runner(monkeypatch):
    """The runner (and the runtimes' CPU detection) read the core from CPU part, as on a real board."""
    text = emulate.CORES["cortex-a72"].cpuinfo(4)
    assert text.count("processor\t:") == 4 and "CPU implementer\t: 0x41" in text and "asimd" in text
    monkeypatch.setattr(runner, "_read_text", lambda path: text if path == "/proc/cpuinfo" else None)
    cpu, cores, flags = runner._cpuinfo()
    assert cores == ["Cortex-A72"] and flags is None
    assert emulate.CORES["cortex-a78ae"].midr == "0x00000000410fd420"


def test_unpacked_root_shadows_cpuinfo_and_midr(tmp_path):
    payload = tmp_path / "payload"
    (payload / "usr/bin").mkdir(parents=True)
    (payload / "usr/bin/python3").write_text("")
    subprocess.run(["tar", "-C", str(payload), "-cf", str(tmp_path / "env.tar"), "."], check=True)
    root = emulate.unpack_env(tmp_path / "env.tar", tmp_path / "root", emulate.CORES["cortex-a72"], 4)
    assert "CPU part\t: 0xd08" in (root / "proc/cpuinfo").read_text()
    cpu = root / "sys/devices/system/cpu"
    assert (cpu / "cpu3/regs/identification/midr_el1").read_text().strip() == "0x00000000410fd080"
    assert (cpu / "possible").read_text() == "0-3\n"


def test_command_is_an_argument_list_pinned_to_the_core(tmp_path):
    core = emulate.CORES["cortex-a72"]
    cmd = emulate.emulated_command("/usr/bin/qemu-aarch64-static", tmp_path, core, "runner.py",
                                   ["m.tflite", "--inputs", "eval.npz"])
    assert cmd[:5] == ["/usr/bin/qemu-aarch64-static", "-cpu", "cortex-a72", "-L", str(tmp_path)]
    assert cmd[5:] == [str(tmp_path / "usr/bin/python3"), "runner.py", "m.tflite", "--inputs", "eval.npz"]
    env = emulate.emulated_env(tmp_path, core)
    assert env["QEMU_CPU"] == "cortex-a72" and env["PYTHONPATH"] == str(tmp_path / emulate.SITE)
    assert not any(k in env for k in ("PYTHONHOME", "VIRTUAL_ENV"))
    pip = emulate.wheel_install_command(tmp_path / "site", {"numpy": "2.4.6", "onnxruntime": "1.32.0"})
    assert pip[pip.index("--python-version") + 1] == emulate.PYTHON_TAG and "--only-binary=:all:" in pip
    assert "manylinux_2_27_aarch64" in pip and "manylinux_2_36_aarch64" in pip  # LiteRT 2.3 is 2_27
    assert pip[-2:] == ["numpy==2.4.6", "onnxruntime==1.32.0"]


def test_cache_is_private_and_checked_before_it_is_read(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEKD_CACHE", str(tmp_path / "cache"))
    versions = {"numpy": "2.4.6"}
    assert emulate.cached_env(versions) is None
    assert (tmp_path / "cache/emulate").stat().st_mode & 0o777 == 0o700
    entry = tmp_path / f"cache/emulate/aarch64-{emulate.env_key(versions)}"
    entry.mkdir(mode=0o700)
    (entry / "env.tar").write_bytes(b"a root")
    (entry / "env.json").write_text(json.dumps({"sha256": emulate.sha256_file(entry / "env.tar")}))
    assert emulate.cached_env(versions)[0] == entry / "env.tar"
    (entry / "env.tar").write_bytes(b"another root")  # changed after it was recorded: never used
    assert emulate.cached_env(versions) is None
    assert emulate.env_key(versions) != emulate.env_key({"numpy": "2.4.5"})  # other wheels, other entry
    os.chmod(tmp_path / "cache/emulate", 0o777)
    with pytest.raises(EdgekdError, match="can be written by other users"):
        emulate.cached_env(versions)


def test_compare_logits():
    host = np.array([[1.0, 0.0], [0.0, 1.0], [0.4, 0.5]], np.float32)
    arm = host + np.array([[0.0, 0.0], [0.0, 0.0], [0.2, 0.0]], np.float32)
    c = emulate.compare_logits(host, arm, np.array([0, 1, 1]))
    assert c["accuracy_host"] == 1.0 and c["accuracy_emulated"] == pytest.approx(2 / 3)
    assert c["top1_agreement"] == pytest.approx(2 / 3) and c["max_abs_logit_diff"] == pytest.approx(0.2)
    assert c["bit_exact"] is False and emulate.compare_logits(host, host, np.array([0, 1, 1]))["bit_exact"]


def test_an_emulated_row_never_judges_a_budget(tmp_path):
    """Even on a machine the profile would recognise, and even declared the target: QEMU's timing is not the
    device's. The gate's device budgets stay unverified."""
    rpi4 = load_target("rpi4")
    pi = {"arch": "aarch64", "cpu": "BCM2835", "board": "Raspberry Pi 4 Model B Rev 1.4", "cores": 4,
          "memory_mb": 3793, "where": "emulated"}
    found = device_identity.match(rpi4, pi, declared=True)
    assert not found.is_target and found.rule == "emulated"
    run, report = _stale_run(tmp_path, "x86-cpu")
    box = {"arch": "x86_64", "cpu": "AMD EPYC", "cpu_flags": ["avx2"], "cores": 4, "memory_mb": 8000}
    rows = [runner_result(a["path"], a["sha256"], box, p95=0.2) for a in report["artifacts"]]
    entry = device_entry("emulated:x", rows, [], load_target("x86-cpu"), declared=True, where="emulated")
    assert entry["measured_on"]["where"] == "emulated" and entry["measured_on"]["is_target_device"] is False
    _merge_and_refresh(run, report, [entry], lambda m: None)
    refreshed = json.loads((run / "report.json").read_text())
    assert set(refreshed["gate"]["unverified"]) == {"latency_ms_p95", "peak_memory_mb"}
    assert "<td><b>emulated</b></td>" in (run / "report.html").read_text()  # the row says where it was measured
    host = device_entry("local:h", rows, [], load_target("x86-cpu"), where="host")
    assert host["measured_on"]["where"] == "host" and host["measured_on"]["is_target_device"] is True


def test_emulated_entry_carries_the_comparison_and_the_label():
    arm = {"arch": "aarch64", "cpu": "", "cpu_cores": ["Cortex-A72"], "cores": 4, "memory_mb": 24000}
    compared = emulate.compare_logits(np.eye(3), np.eye(3), np.arange(3))
    run = emulate.EmulatedRun([runner_result(machine=arm)], {"m.onnx": compared},
                              {"arch": "aarch64", "core": "Cortex-A72", "qemu_cpu": "cortex-a72", "qemu": "qemu 7.2"})
    entry = emulate.emulated_entry(run, load_target("rpi4"))
    assert entry["remote"] == "emulated:aarch64:cortex-a72" and entry["emulation"]["core"] == "Cortex-A72"
    assert entry["measured_on"]["where"] == "emulated" and entry["measured_on"]["identity"]["rule"] == "emulated"
    assert "not the device's" in entry["measured_on"]["how"]
    assert entry["artifacts"][0]["vs_host"] == compared and compared["top1_agreement"] == 1.0


def test_emulate_bad_input(tmp_path, capsys):
    run, _ = _stale_run(tmp_path, "x86-cpu")
    assert main(["bench", str(run), "--emulate", "aarch64", "--remote", "pi@host"]) == 2
    assert "--emulate cannot be combined with --remote" in capsys.readouterr().err
    assert main(["bench", str(tmp_path / "nope"), "--emulate", "aarch64"]) == 2
    assert "needs a run directory" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------- QEMU
def _emulation_missing() -> str | None:
    if not any(shutil.which(q) for q in emulate.QEMU_BINARIES):
        return "qemu-user-static is not installed (.ci/system-deps.sh installs it)"
    if not shutil.which("mmdebstrap"):
        return "mmdebstrap is not installed (.ci/system-deps.sh installs it)"
    if os.geteuid() != 0:
        return "mmdebstrap's root mode needs root (CI runs as root)"
    if os.environ.get("EDGEKD_SKIP_EMULATION"):
        return f"EDGEKD_SKIP_EMULATION={os.environ['EDGEKD_SKIP_EMULATION']}"
    return None


@pytest.mark.slow
def test_bench_emulate_runs_the_runner_on_the_targets_core(tmp_path_factory, tmp_path, capsys):
    missing = _emulation_missing()
    if missing:
        pytest.skip(missing)
    run = tmp_path / "run"
    shutil.copytree(make_run_dir(tmp_path_factory.getbasetemp()), run)
    report = json.loads((run / "report.json").read_text())
    report.update(target="rpi4", target_path=str(load_target("rpi4").path))
    (run / "report.json").write_text(json.dumps(report))
    assert main(["bench", str(run), "--emulate", "aarch64", "--json", str(tmp_path / "e.json")]) == 0, \
        capsys.readouterr().err
    out = capsys.readouterr().out
    assert "Cortex-A72" in out and "timing emulated: not judged" in out
    [entry] = json.loads((run / "report.json").read_text())["device_results"]
    m = entry["measured_on"]
    assert m["where"] == "emulated" and m["arch"] == "aarch64" and m["cpu_cores"] == ["Cortex-A72"]
    assert m["is_target_device"] is False and m["identity"]["rule"] == "emulated"
    assert entry["emulation"]["qemu_cpu"] == "cortex-a72" and entry["emulation"]["qemu"].startswith("qemu-aarch64")
    rows = {a["path"]: a for a in entry["artifacts"]}
    assert set(rows) == {"model_fp32.onnx", "model_fp32.xml"}
    for a in rows.values():
        assert a["sha256_verified"] and a["torch_imported"] is False
        assert a["accuracy"] == pytest.approx(34 / 40)  # the runner's own score, under emulation
        vs = a["vs_host"]
        assert vs["samples"] == 40 and vs["accuracy_host"] == pytest.approx(34 / 40)
        assert vs["top1_agreement"] == 1.0 and vs["max_abs_logit_diff"] < 1e-3  # fp32: only rounding differs
    assert json.loads((tmp_path / "e.json").read_text())["emulation"]["core"] == "Cortex-A72"
