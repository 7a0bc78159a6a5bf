"""Typed report/manifest/runner-result schemas: what they refuse, and that docs/schema is current."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgekd.errors import EdgekdError
from edgekd.schema import SCHEMAS, report_keys_doc, validate, write_schemas

DOCS = Path(__file__).resolve().parent.parent / "docs" / "schema"


def test_docs_schema_files_are_current(tmp_path):
    for path in write_schemas(tmp_path):
        committed = DOCS / path.name
        assert committed.is_file(), f"run `python -m edgekd.schema` to write {committed}"
        assert json.loads(committed.read_text()) == json.loads(path.read_text()), (
            f"{committed} is stale: run `python -m edgekd.schema`")
    assert {p.stem.split(".")[0] for p in DOCS.glob("*.schema.json")} == set(SCHEMAS)


def test_architecture_doc_lists_the_report_keys_of_docs_schema():
    """docs/architecture.md's report keys are generated from docs/schema (itself checked against the models above):
    a key the schema gains, loses or makes optional shows in the doc, or this fails."""
    schema = json.loads((DOCS / "report.schema.json").read_text())
    block = report_keys_doc(schema)
    assert block in (DOCS.parent / "architecture.md").read_text(), (
        "docs/architecture.md's report keys are stale: run `python -m edgekd.schema`")
    assert "  - `student{" in block and "selection?{" in block and "budget_source?" in block
    schema["properties"]["new_key"] = {"type": "string"}
    schema["required"].remove("created")
    changed = report_keys_doc(schema)
    assert "  - `new_key?`" in changed and "  - `created?`" in changed and changed not in block


def _entry(**changes):
    entry = {"path": "m.onnx", "role": "student", "format": "onnx", "precision": "int8", "runtime": "onnxruntime",
             "sha256": "a" * 64, "size_bytes": 10, "files": [{"path": "m.onnx", "sha256": "a" * 64}]}
    return {**entry, **changes}


@pytest.mark.parametrize(("changes", "message"), [
    ({"files": [{"path": "other.bin", "sha256": "b" * 64}]}, "do not include the artifact"),
    ({"files": [{"path": "../../etc/passwd", "sha256": "a" * 64}]}, "not a plain file name"),
    ({"sha256": "xyz"}, "sha256"),
    ({"size_bytes": -1}, "size_bytes"),
])
def test_manifest_entries_that_could_mislead_the_runner_are_refused(changes, message):
    manifest = {"edgekd_version": "0", "target": "t", "input": {}, "output": {}, "normalization": {}, "classes": [],
                "calibration": {}, "eval_inputs": {"path": "eval.npz", "sha256": "c" * 64},
                "artifacts": [_entry(**changes)]}
    with pytest.raises(EdgekdError, match=message):
        validate("manifest", manifest, "manifest.json", "rebuild")


def test_report_without_version_or_with_an_old_one_is_refused_clearly():
    with pytest.raises(EdgekdError, match="no schema_version"):
        validate("report", {"target": "x"}, "report.json", "rebuild")
    with pytest.raises(EdgekdError, match="schema_version 1 is older"):
        validate("report", {"schema_version": 1, "target": "x"}, "report.json", "rebuild")
