"""The layers are declared in pyproject.toml ([tool.importlinter]) and enforced here, so `make test` and CI run
them: edgekd's modules import each other without cycles, and runner.py (copied to devices alone) imports nothing
of edgekd."""

from __future__ import annotations

import ast
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


# ------------------------------------------------------------------ function-local imports and function length
MAX_FUNCTION_LINES = 80


def _functions(package: Path):
    """(file, function node, source lines) of every function and method under ``package``."""
    for path in sorted(package.rglob("*.py")):
        lines = path.read_text(encoding="utf-8").splitlines()
        for node in ast.walk(ast.parse("\n".join(lines), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield path, node, lines


def unexplained_local_imports(package: Path) -> list[str]:
    """Function-local imports without a ``lazy`` reason on their line or the line above: one that only dodges a
    cycle hides a layering fault, so each one left must say why it is lazy (an optional or slow dependency)."""
    found = set()
    for path, fn, lines in _functions(package):
        for node in ast.walk(fn):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                here = lines[node.lineno - 1] + (lines[node.lineno - 2] if node.lineno > 1 else "")
                if "lazy" not in here:
                    found.add(f"{path.relative_to(package.parent)}:{node.lineno}")
    return sorted(found)


def long_functions(package: Path, limit: int = MAX_FUNCTION_LINES) -> list[str]:
    """Functions longer than ``limit`` lines (def to last line): split them into named steps."""
    return sorted(f"{path.relative_to(package.parent)}:{fn.lineno} {fn.name} ({fn.end_lineno - fn.lineno + 1} lines)"
                  for path, fn, _ in _functions(package) if fn.end_lineno - fn.lineno + 1 > limit)


def test_function_local_imports_each_say_why_they_are_lazy():
    assert unexplained_local_imports(ROOT / "edgekd") == []


def test_no_function_in_edgekd_is_over_80_lines():
    assert long_functions(ROOT / "edgekd") == []


def test_the_source_checks_find_an_unexplained_import_and_a_long_function(tmp_path):
    package = tmp_path / "toypkg"
    package.mkdir()
    body = "".join(f"    x{i} = {i}\n" for i in range(MAX_FUNCTION_LINES))
    (package / "m.py").write_text("def f():\n    import json\n\n\n"
                                  "def g():\n    # lazy: optional extra\n    import tomllib\n"
                                  "    import csv  # lazy: slow\n\n\n"
                                  f"def h():\n{body}")
    assert unexplained_local_imports(package) == ["toypkg/m.py:2"]
    assert long_functions(package) == [f"toypkg/m.py:11 h ({MAX_FUNCTION_LINES + 1} lines)"]
