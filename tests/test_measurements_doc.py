"""docs/measurements.md is generated from benchmarks/results/: a quoted number cannot drift from its JSON."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_generator():
    spec = importlib.util.spec_from_file_location("measurements_page", ROOT / "docs" / "measurements.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_page_regenerates_byte_identically_from_the_results():
    page = load_generator()
    assert page.render() == (ROOT / "docs" / "measurements.md").read_text(encoding="utf-8"), (
        "docs/measurements.md is out of date: run python docs/measurements.py")


def test_every_results_file_has_a_section_and_a_changed_number_shows(tmp_path):
    page = load_generator()
    for path in (ROOT / "benchmarks" / "results").glob("*.json"):
        (tmp_path / path.name).write_bytes(path.read_bytes())
    before = page.render(tmp_path)
    assert all(f"## {p.stem}\n" in before for p in tmp_path.glob("*.json"))
    runs = json.loads((tmp_path / "build_time.json").read_text())
    next(iter(runs["runs"].values()))["wall_s"] = 123456.0
    (tmp_path / "build_time.json").write_text(json.dumps(runs))
    assert "123456" in page.render(tmp_path) and "123456" not in before


def test_provenance_is_stated_per_file(tmp_path):
    from test_benchmarks_quick import Provenance  # the block every script writes: the page reads what they write

    page = load_generator()
    prov = Provenance(commit="abc1234", dirty=False, dirty_files=[], command="python b.py", started_utc="t",
                      cpu="Test CPU", cpu_flags=["avx2", "avx512_vnni"], cores=2, loadavg_before=[0.1, 0, 0],
                      loadavg_after=[3.2, 0, 0], quiet_load=2.5, host_busy=True, runtimes={}, seeds=[0],
                      wall_s=12.0, quick=False)
    (tmp_path / "new_bench.json").write_text(json.dumps({"rows": [{"a": 1.23456}], "provenance": prov.model_dump()}))
    (tmp_path / "old_bench.json").write_text(json.dumps({"x": 1}))
    text = page.render(tmp_path)
    assert ("commit abc1234; CPU Test CPU, 2 cores; flags avx2 avx512_vnni; load 0.1 -> 3.2 (busy: no verdict); "
            "wall 12 s") in text and "| 1.235 |" in text
    assert "predates the provenance block" in text.split("## old_bench")[1]


def test_a_verdict_the_renderer_does_not_state_is_stated_above_its_table(tmp_path):
    page = load_generator()
    (tmp_path / "formats.json").write_text(json.dumps({"rows": [], "verdict": {"parity_failed": []}}))
    (tmp_path / "some_bench.json").write_text(json.dumps({"verdict": {"ratio": 1.05, "within_tolerance": True}}))
    text = page.render(tmp_path)
    assert "Verdict (computed by the script from the rows): parity_failed=." in text
    assert "Verdict (computed by the script from the rows): ratio=1.05, within_tolerance=yes." in text
