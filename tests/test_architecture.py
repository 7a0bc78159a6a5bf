"""The layers are declared in pyproject.toml ([tool.importlinter]) and enforced here, so `make test` and CI run
them: edgekd's modules import each other without cycles, and runner.py (copied to devices alone) imports nothing
of edgekd."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"  # the dev extra installs it beside this Python


def _lint(config: Path, cwd: Path) -> subprocess.CompletedProcess:
    assert LINT_IMPORTS.is_file(), "lint-imports is missing: pip install -e '.[dev]'"
    return subprocess.run([str(LINT_IMPORTS), str(config), "--no-cache"], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


def test_edgekd_keeps_its_import_contracts():
    proc = _lint(ROOT / "pyproject.toml", ROOT)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    assert "Contracts: 3 kept, 0 broken." in proc.stdout


def test_the_contracts_break_on_a_cycle_and_on_a_runner_that_imports_the_package(tmp_path):
    """The same contract sections, on a throwaway package with an import cycle and a runner importing a module:
    both contracts are reported broken (the check is not one that cannot fail)."""
    tomllib = pytest.importorskip("tomllib")
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    package = tmp_path / "toypkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from toypkg import b\n")
    (package / "b.py").write_text("def f():\n    from toypkg import a  # a function-local import hides nothing\n")
    (package / "runner.py").write_text("from toypkg.b import f\n")
    cycle = next(c for c in config["contracts"] if c["type"] == "acyclic_siblings")
    standalone = next(c for c in config["contracts"] if c.get("source_modules") == ["edgekd.runner"])
    forbidden = [m.replace("edgekd", "toypkg", 1) for m in standalone["forbidden_modules"]]
    (tmp_path / "importlinter.toml").write_text(f'''[tool.importlinter]
root_package = "toypkg"

[[tool.importlinter.contracts]]
name = "{cycle['name']}"
type = "{cycle['type']}"
ancestors = {[a.replace("edgekd", "toypkg", 1) for a in cycle["ancestors"]]}

[[tool.importlinter.contracts]]
name = "{standalone['name']}"
type = "{standalone['type']}"
source_modules = ["toypkg.runner"]
forbidden_modules = {forbidden}
''')
    proc = subprocess.run([str(LINT_IMPORTS), "importlinter.toml", "--no-cache"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"{cycle['name']} BROKEN" in " ".join(proc.stdout.split())
    assert "toypkg.runner is not allowed to import toypkg.b" in proc.stdout
