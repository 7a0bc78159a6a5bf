"""User story: "my photos, kept as I keep them, become a deployable int8 artifact": ``edgekd build --target x86-cpu
--data PHOTOS`` for a folder of ``<class>/*.jpg`` and for ``train/ + val/``, JPEGs of varied sizes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from data_makers import PHOTO_LAYOUTS, photo_folders

from edgekd.io import sha256_file

CLASSES = ["cat", "dog", "owl"]
CHEAP = ["--image-size", "16", "--teacher-epochs", "2", "--epochs", "15", "--runs", "10", "--warmup", "2",
         "--no-progress"]  # varied sizes need --image-size; the rest keeps a tiny build cheap


def _files(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): sha256_file(p) for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["classes", "train+val"])
def test_photos_become_an_int8_artifact_labelled_by_folder(tmp_path, layout):
    photos = photo_folders(tmp_path / "photos", layout, classes=CLASSES, per_class=20)
    (photos / PHOTO_LAYOUTS[layout][0] / "cat" / "Thumbs.db").write_bytes(b"\0" * 64)  # not an image: skipped
    before, out = _files(photos), tmp_path / "run"
    small_batches = tmp_path / "distill.yaml"  # 42-60 photos: batches of 8, so 15 epochs are ~100 steps
    small_batches.write_text("batch_size: 8\n")
    proc = subprocess.run([sys.executable, "-m", "edgekd", "build", "--target", "x86-cpu", "--data", str(photos),
                           "--out", str(out), "--cache-dir", str(tmp_path / "cache"), *CHEAP,
                           "--distill-config", str(small_batches)],
                          capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]  # built, and the gate passed
    assert _files(photos) == before  # the user's photos untouched

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["classes"] == CLASSES  # the folder names are the labels
    report = json.loads((out / "report.json").read_text())
    shipped = [a for a in report["artifacts"] if a["shipped"]]
    assert {a["precision"] for a in shipped} == {"int8"} and {a["format"] for a in shipped} == {"openvino", "onnx"}
    for entry in manifest["artifacts"]:
        assert all(sha256_file(out / f["path"]) == f["sha256"] for f in entry["files"])
    assert manifest["preprocessing"]["image_size"] == [16, 16]  # the device resizes its own photos

    where = "/".join(part for part in (PHOTO_LAYOUTS[layout][0], "cat", "Thumbs.db") if part)
    skipped = f"Skipped 1 entry that is not an image: {where}."
    assert skipped in proc.stderr and skipped in proc.stdout  # said as the build starts, and in report.md
    data, markdown = report["data"], (out / "report.md").read_text()
    if layout == "classes":
        assert data["image_folder"]["split"]["seed"] == 0 and manifest["data"]["image_folder"]["split"]["stratified"]
        assert data["splits"] == {"train": 42, "val": 6, "test": 12} and report["eval_inputs"]["samples"] == 12
        assert "split here, stratified by class and seeded" in markdown and "accuracy (test)" in proc.stderr
    else:
        assert data["evaluation_split"] == "val" and report["eval_inputs"]["samples"] == 60  # all of val/, scored
        assert data["splits"] == {"train": 54, "val": 6, "test": 60}  # validation held out of train/
        assert "Evaluation-split (val/, no separate test split) accuracy" in markdown
        assert "Evaluation split: val/ (no separate test split exists)" in markdown
        assert "accuracy (val/, no separate test)" in proc.stderr
