"""Run directories never eat a user's files: --out is checked, locked, staged and swapped with recovery."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from edgekd.api import BuildOptions, start
from edgekd.errors import EdgekdError
from edgekd.rundir import MARKER, RunDir, check_out, claim, home_of, resolve_out


def _run(tmp_path: Path, name: str = "run") -> Path:
    """A finished run: the marker and a report, as a build leaves them."""
    out = tmp_path / name
    with claim(out, "x86-cpu") as run:
        (run.staging / "report.json").write_text('{"v": 1}')
        run.commit()
    return out


def test_new_and_empty_out_are_accepted(tmp_path):
    check_out(tmp_path / "new")
    (tmp_path / "empty").mkdir()
    check_out(tmp_path / "empty")


def test_build_refuses_a_folder_of_user_files_before_training(tmp_path):
    out = tmp_path / "photos"
    out.mkdir()
    (out / "holiday.jpg").write_bytes(b"mine")
    calls = []
    with pytest.raises(EdgekdError, match="not an edgekd run.*holiday.jpg"):
        start(BuildOptions(target="x86-cpu", out=out, log=calls.append))
    assert (out / "holiday.jpg").read_bytes() == b"mine" and [p.name for p in out.iterdir()] == ["holiday.jpg"]
    assert not calls, "nothing (no data, no training) happened"
    assert not home_of(out).exists()


@pytest.mark.parametrize("make", ["file", "link"])
def test_out_that_is_a_file_or_link_is_refused(tmp_path, make):
    out = tmp_path / "out"
    if make == "file":
        out.write_text("mine")
    else:
        (tmp_path / "real").mkdir()
        out.symlink_to(tmp_path / "real")
    with pytest.raises(EdgekdError, match="refusing to replace it"):
        check_out(out)


def test_out_without_a_name_is_refused():
    with pytest.raises(EdgekdError, match="no directory name"):
        resolve_out("/", "x")


def test_a_run_is_replaced_and_keeps_its_marker(tmp_path):
    out = _run(tmp_path)
    marker = json.loads((out / MARKER).read_text())
    assert marker["edgekd_run"] == 1 and marker["target"] == "x86-cpu"
    with claim(out, "x86-cpu") as run:
        (run.staging / "report.json").write_text('{"v": 2}')
        run.commit()
    assert json.loads((out / "report.json").read_text()) == {"v": 2}
    assert not home_of(out).exists()  # no staging, no previous, no lock left


def test_a_forged_marker_is_not_a_marker(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / MARKER).write_text('{"edgekd_run": 1, "evil": true}')
    (out / "thesis.tex").write_text("mine")
    with pytest.raises(EdgekdError, match="not an edgekd run"):
        check_out(out)


def test_failed_build_keeps_previous_run_and_removes_staging(tmp_path):
    out = _run(tmp_path)
    with pytest.raises(RuntimeError), claim(out, "x86-cpu") as run:
        (run.staging / "report.json").write_text('{"v": 2}')
        raise RuntimeError("export failed")
    assert json.loads((out / "report.json").read_text()) == {"v": 1}
    assert not RunDir(out).staging.exists()


def test_interrupted_swap_is_undone_by_the_next_build(tmp_path):
    out = _run(tmp_path)
    run = RunDir(out)
    run.staging.mkdir(parents=True)
    os.replace(out, run.previous)  # killed between the two renames of a swap
    assert not out.exists()
    with claim(out, "x86-cpu"):
        assert json.loads((out / "report.json").read_text()) == {"v": 1}, "the previous run came back"
    assert not run.previous.exists()


def test_finished_swap_drops_the_old_run(tmp_path):
    out = _run(tmp_path)
    run = RunDir(out)
    run.previous.mkdir(parents=True)
    (run.previous / "old").write_text("x")
    with claim(out, "x86-cpu"):
        pass
    assert not run.previous.exists() and (out / "report.json").exists()


_HOLD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from edgekd.rundir import claim
    with claim(Path(sys.argv[1]), "x86-cpu") as run:
        (run.staging / "partial").write_text("x")
        print("locked", flush=True)
        time.sleep(60)
""")


def _holder(out: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(out)], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_second_build_into_the_same_out_is_refused_while_locked(tmp_path):
    out = tmp_path / "run"
    proc = _holder(out)
    try:
        with pytest.raises(EdgekdError, match="another edgekd build.*lock"), claim(out, "x86-cpu"):
            pass
        assert (RunDir(out).staging / "partial").exists(), "the second build did not touch the first one's staging"
    finally:
        proc.kill()
        proc.wait()


def test_sigterm_removes_staging(tmp_path):
    """The CLI turns SIGTERM into an exception (exit 143) so the claim's cleanup runs; a bare process is the same."""
    out = tmp_path / "run"
    hold = _HOLD.replace("import sys, time", "import signal, sys, time\n"
                         "def _term(*a):\n    raise SystemExit(143)\nsignal.signal(signal.SIGTERM, _term)")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen([sys.executable, "-c", hold, str(out)], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.readline().strip() == "locked"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 143
    time.sleep(0.05)
    assert not RunDir(out).staging.exists() and not out.exists()


def test_a_run_from_before_markers_gets_its_own_hint(tmp_path):
    out = tmp_path / "old"
    out.mkdir()
    (out / "report.json").write_text("{}")
    (out / "manifest.json").write_text("{}")
    with pytest.raises(EdgekdError, match="not an edgekd run") as info:
        check_out(out)
    assert "without run markers" in info.value.fix
