"""The benchmark scripts are run by hand, rarely: every edgekd name they import must still exist."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import sys
from pathlib import Path

import pytest

BENCHMARKS = sorted((Path(__file__).resolve().parents[1] / "benchmarks").glob("*.py"))


def edgekd_imports(path: Path) -> list[tuple[str, str]]:
    """(module, name) for every ``from edgekd... import name`` in the file, nested imports included."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("edgekd"):
            found += [(node.module, alias.name) for alias in node.names]
    return found


@pytest.mark.parametrize("path", BENCHMARKS, ids=[p.name for p in BENCHMARKS])
def test_benchmark_imports_resolve(path):
    missing = []
    for module, name in edgekd_imports(path):
        loaded = importlib.import_module(module)
        if not hasattr(loaded, name):
            try:
                importlib.import_module(f"{module}.{name}")
            except ImportError:
                missing.append(f"{module}.{name}")
    assert not missing, f"{path.name} imports names that no longer exist: {missing}"


@pytest.mark.parametrize("path", BENCHMARKS, ids=[p.name for p in BENCHMARKS])
def test_benchmark_modules_import(path, monkeypatch):
    """Module-level code (imports between benchmarks included) runs; main() is not called."""
    monkeypatch.syspath_prepend(str(path.parent))
    spec = importlib.util.spec_from_file_location(f"bench_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # a dataclass looks its module up while it is created
    spec.loader.exec_module(module)


def test_the_shared_teacher_recipe_keys_the_teacher_cache(monkeypatch):
    """latency_selection.py and capacity_proxy.py train kd_quality's teacher through this recipe."""
    from tests.conftest import make_dataset

    monkeypatch.syspath_prepend(str(BENCHMARKS[0].parent))
    kd_quality = importlib.import_module("kd_quality")
    recipe = kd_quality.default_recipe()
    path = kd_quality.teacher_path(recipe, make_dataset(), (8, 16), 1)
    assert path.suffix == ".pt" and path.parent == Path(recipe.cache_dir)
    assert tuple(kd_quality.teacher_config(recipe, 1).augment) == ("crop", "flip")
