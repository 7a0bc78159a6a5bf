"""A new user's install: build the sdist and the wheel (from the sdist), install the wheel (not editable) with the
one extra x86-cpu needs into a fresh venv, and use edgekd from an empty directory outside the checkout.

Slow (a fresh venv with torch and OpenVINO, then a short build: about 4 minutes of CPU with a warm pip cache; 12
minutes of wall time on a loaded, shared 2-core machine), so ``make test-slow`` runs it, ``make test`` not. It skips
only when no package index can be reached, and never in CI (``.ci/run`` sets CI=true).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from edgekd import __version__

REPO = Path(__file__).resolve().parents[1]
EXTRA = "openvino"  # what x86-cpu needs: edgekd.targets.required_extras (tests/test_targets.py checks it)
TORCH = "torch==2.13.0"  # first and pinned: an unpinned torch pulls a multi-GB CUDA build
BUILD = "build==1.6.1"
SHIPPED_NAMES = {"rpi4", "jetson-orin-nano", "android-nnapi", "x86-cpu"}
OFFLINE_SIGNS = ("NewConnectionError", "Temporary failure in name resolution", "Network is unreachable",
                 "Max retries exceeded", "ProxyError", "ConnectTimeoutError")

pytestmark = pytest.mark.slow


def _clean_env(**extra: str) -> dict[str, str]:
    """The environment of a user's shell: no PYTHONPATH into the checkout, no team target directories."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "EDGEKD_TARGETS_DIR", "VIRTUAL_ENV", "PYTHONHOME")}
    return {**env, **extra}


def _run(cmd: list[str], cwd: Path, timeout: int = 900, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=_clean_env(**env), capture_output=True, text=True, timeout=timeout)


def _succeeded_or_offline(proc: subprocess.CompletedProcess, what: str) -> None:
    """Skip only when no package index is reachable, and never in CI (which has one); any other failure fails."""
    output = proc.stdout + proc.stderr
    if proc.returncode and not os.environ.get("CI") and any(s in output for s in OFFLINE_SIGNS):
        pytest.skip(f"no package index reachable to {what}: {output.strip()[-300:]}")
    assert proc.returncode == 0, output[-3000:]


def _install(pip: list[str], *requirements: str, cwd: Path) -> None:
    _succeeded_or_offline(_run([*pip, "install", "-q", *requirements], cwd), f"install {' '.join(requirements)}")


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict[str, Path]:
    """A fresh venv: torch first, then ``build``; the sdist and the wheel built from it; the wheel installed."""
    root = tmp_path_factory.mktemp("packaging")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=_clean_env())
    python = venv / "bin" / "python"
    pip = [str(python), "-m", "pip", "--disable-pip-version-check"]
    _install(pip, TORCH, cwd=root)
    _install(pip, BUILD, cwd=root)
    dist = root / "dist"
    built = _run([str(python), "-m", "build", "--outdir", str(dist), str(REPO)], root)  # sdist, then wheel from it
    _succeeded_or_offline(built, "set up the isolated build environment (setuptools)")
    wheel = next(dist.glob(f"edgekd-{__version__}-*.whl"))
    sdist = dist / f"edgekd-{__version__}.tar.gz"
    _install(pip, f"{wheel}[{EXTRA}]", cwd=root)
    work = root / "work"  # an empty directory outside the checkout
    work.mkdir()
    return {"venv": venv, "python": python, "edgekd": venv / "bin" / "edgekd", "wheel": wheel, "sdist": sdist,
            "work": work}


def _data_files() -> set[str]:
    return {p.relative_to(REPO).as_posix() for p in (REPO / "edgekd" / "data_files").rglob("*.yaml")}


def test_sdist_and_wheel_carry_the_targets_and_data_files(installed):
    data_files = _data_files()
    assert {f"edgekd/data_files/targets/{name}.yaml" for name in SHIPPED_NAMES} <= data_files
    with tarfile.open(installed["sdist"]) as tar:
        in_sdist = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    assert data_files | {"edgekd/runner.py", "pyproject.toml", "README.md"} <= in_sdist
    with zipfile.ZipFile(installed["wheel"]) as whl:
        in_wheel = set(whl.namelist())
    assert data_files | {"edgekd/runner.py", "edgekd/__main__.py"} <= in_wheel


def test_the_installed_wheel_is_what_runs(installed):
    where = _run([str(installed["python"]), "-c", "import edgekd; print(edgekd.__file__)"], installed["work"])
    assert Path(where.stdout.strip()).is_relative_to(installed["venv"]), where.stdout + where.stderr
    version = _run([str(installed["python"]), "-m", "edgekd", "--version"], installed["work"])
    assert version.returncode == 0 and f"edgekd {__version__}" in version.stdout, version.stderr
    lines = {line.split()[0]: line for line in version.stdout.splitlines()[1:]}
    assert "not installed" not in lines["openvino"] and "not installed" in lines["litert-torch"]


def test_targets_list_and_a_missing_extra(installed):
    listed = _run([str(installed["edgekd"]), "targets", "list"], installed["work"])
    assert listed.returncode == 0, listed.stderr
    rows = {line.split()[0]: line for line in listed.stdout.splitlines()}
    assert set(rows) == SHIPPED_NAMES and all(row.endswith("[shipped]") for row in rows.values())
    # rpi4 needs the TFLite stack, which the openvino extra does not bring: exit 2 before any training.
    rpi4 = _run([str(installed["edgekd"]), "build", "--target", "rpi4", "--out", "rpi4-run"], installed["work"],
                timeout=120)
    assert rpi4.returncode == 2 and "pip install 'edgekd[tflite]'" in rpi4.stderr, rpi4.stderr
    assert not (installed["work"] / "rpi4-run").exists()


def test_build_and_bundle_from_an_empty_directory(installed):
    work, edgekd = installed["work"], str(installed["edgekd"])
    build = _run([edgekd, "build", "--target", "x86-cpu", "--epochs", "2", "--teacher-epochs", "2", "--out", "run",
                  "--runs", "30", "--warmup", "3", "--no-progress", "--no-cache"], work,
                 EDGEKD_CACHE=str(work.parent / "cache"))
    # A complete build exits 0, or 1 when its gate fails: 2 epochs on digits sit near min_accuracy_ratio 0.95, and
    # which side they land on depends on the CPU's numerics. This test is about the installed package, so either
    # verdict is fine as long as the exit code is the report's own.
    assert build.returncode in (0, 1), build.stderr[-3000:]
    report = json.loads((work / "run" / "report.json").read_text())
    assert report["gate"]["passed"] == (build.returncode == 0), build.stdout[-2000:]
    shipped = [a for a in report["artifacts"] if a["shipped"]]
    assert {a["format"] for a in shipped} == {"openvino", "onnx"}
    assert all((work / "run" / a["path"]).is_file() for a in shipped)
    bundle = _run([edgekd, "bundle", "run"], work)
    assert bundle.returncode == 0, bundle.stderr[-3000:]
    bundles = list((work / "run").glob("bundle-x86-cpu*"))
    assert any(p.is_dir() and (p / "runner.py").is_file() for p in bundles), bundles
    assert any(p.name.endswith(".tar.gz") for p in bundles), bundles
