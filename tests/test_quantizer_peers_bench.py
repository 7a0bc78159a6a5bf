"""benchmarks/quantizer_peers.py: peers quantize the run's own fp32 file into sha256-listed artifacts (a peer that
fails or is missing is a row with its reason), the paired McNemar test, the ahead/level/behind summary computed from
the rows, and --quick end to end (a real digits build, every peer, the runner's interleaved timing)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def peers(monkeypatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location("bench_quantizer_peers", BENCHMARKS / "quantizer_peers.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses resolve their annotations through it
    spec.loader.exec_module(module)
    return module


def _row(model="m", peer="p", accuracy=0.90, p_value=1.0, ratio=1.0, interval=(0.98, 1.02), fmt="onnx"):
    return {"model": model, "peer": peer, "setting": "defaults", "format": fmt, "status": "ok",
            "accuracy": accuracy, "ratio_to_edgekd": ratio, "ratio_interval_95": list(interval),
            "mcnemar_vs_edgekd": {"edgekd_only_right": 0, "peer_only_right": 0, "p_value": p_value}}


def test_summary_says_where_edgekd_is_ahead_level_or_behind(peers):
    edgekd = _row(peer="edgekd")
    rows = [edgekd,
            _row(peer="same"),                                              # level
            _row(peer="faster", ratio=0.8, interval=(0.75, 0.85)),          # behind: faster, as accurate
            _row(peer="better", accuracy=0.93, p_value=0.001),              # behind: more accurate, as fast
            _row(peer="worse", accuracy=0.85, p_value=0.001),               # ahead
            _row(peer="slower", ratio=1.3, interval=(1.2, 1.4)),            # ahead
            _row(peer="noisy", ratio=0.8, interval=(0.7, 1.1)),             # level: interval includes 1
            _row(peer="trade", accuracy=0.93, p_value=0.01, ratio=1.3, interval=(1.2, 1.4)),
            {"model": "m", "peer": "gone", "setting": "defaults", "format": "onnx", "status": "failed",
             "reason": "RuntimeError: boom"}]
    out = peers.summary(rows)
    by = {r["peer"]: r["edgekd"] for r in out["rows"]}
    assert by == {"same": "level", "faster": "behind", "better": "behind", "worse": "ahead", "slower": "ahead",
                  "noisy": "level", "trade": "trade-off"}
    assert out["counts"] == {"ahead": 2, "level": 2, "behind": 2, "trade-off": 1, "peer_not_measured": 1}
    assert {r["peer"] for r in out["behind"]} == {"faster", "better"}
    assert out["not_measured"][0]["reason"] == "RuntimeError: boom"


def test_mcnemar_is_the_two_sided_binomial_test_on_the_discordant_samples(peers):
    from scipy.stats import binomtest

    y = np.zeros(40, dtype=int)
    edgekd = np.zeros(40, dtype=int)
    edgekd[:3] = 1                       # edgekd wrong on 3 samples
    peer = np.zeros(40, dtype=int)
    peer[30:40] = 1                      # the peer wrong on 10 others
    out = peers.mcnemar(y, edgekd, peer)
    assert (out["edgekd_only_right"], out["peer_only_right"]) == (10, 3)
    assert out["p_value"] == pytest.approx(binomtest(3, 13, 0.5).pvalue)
    assert peers.mcnemar(y, edgekd, edgekd)["p_value"] == 1.0


@pytest.fixture
def onnx_run(tmp_path) -> Path:
    """A run folder as a build leaves it: model_fp32.onnx listed with its sha256 in manifest.json."""
    import torch

    from edgekd.backends.onnx import export_onnx_fp32
    from edgekd.io import sha256_file

    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(4 * 6 * 6, 3)).eval()
    fp32 = export_onnx_fp32(model, np.zeros((1, 1, 8, 8), np.float32), tmp_path / "model_fp32.onnx")
    digest = sha256_file(fp32)
    manifest = {"artifacts": [{"path": fp32.name, "sha256": digest, "files": [{"path": fp32.name, "sha256": digest}],
                               "format": "onnx", "precision": "fp32"}]}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    return tmp_path


def test_a_peer_quantizes_the_runs_verified_fp32_file_into_a_listed_artifact(peers, onnx_run):
    from edgekd.runner import verify_artifact

    x = np.random.default_rng(0).normal(size=(16, 1, 8, 8)).astype(np.float32)
    peer = next(p for p in peers.PEERS if p.package == "onnxruntime" and p.setting == "defaults")
    slug, info = peers.make_peer(peer, peers.RunFiles.read(onnx_run), onnx_run, x)
    assert info["status"] == "ok" and info["version"] and info["settings"]["per_channel"] is False
    entry, _ = verify_artifact(str(onnx_run / slug))  # the runner will check it by sha256 before it runs
    assert entry["precision"] == "int8" and entry["quantizer"] == peer.name


def test_a_peer_that_fails_or_is_missing_is_a_row_with_its_reason(peers, onnx_run):
    x = np.zeros((4, 1, 8, 8), np.float32)

    def broken(fp32, out, x):
        out.write_bytes(b"half")
        raise ValueError("unsupported operator Foo\nmore")

    run = peers.RunFiles.read(onnx_run)
    failing = peers.Peer("broken", "onnxruntime", "onnx", "defaults", broken, "test")
    slug, info = peers.make_peer(failing, run, onnx_run, x)
    assert slug is None and info["status"] == "failed"
    assert info["reason"] == "ValueError: unsupported operator Foo"
    assert sorted(p.name for p in onnx_run.iterdir()) == ["manifest.json", "model_fp32.onnx"]  # nothing half-made
    missing = peers.Peer("absent", "no-such-quantizer-dist", "onnx", "defaults", broken, "test")
    assert peers.make_peer(missing, run, onnx_run, x)[1]["status"] == "not installed"
    other = peers.Peer("ov", "onnxruntime", "openvino", "defaults", broken, "test")
    assert "no fp32 openvino artifact" in peers.make_peer(other, run, onnx_run, x)[1]["reason"]
    # the fp32 file changed since the build: the peer never reads it
    (onnx_run / "model_fp32.onnx").write_bytes(b"tampered")
    ok = next(p for p in peers.PEERS if p.package == "onnxruntime")
    slug, info = peers.make_peer(ok, run, onnx_run, x)
    assert slug is None and "sha256" in info["reason"]


@pytest.mark.slow
def test_quick_mode_compares_every_peer_on_a_digits_build_with_provenance(peers, tmp_path):
    out = tmp_path / "quantizer_peers.json"
    assert peers.main(["--quick", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["quick"] is True and set(doc["students"]) == {"digits"}
    rows = doc["rows"]
    assert {(r["peer"], r["setting"]) for r in rows} >= {(p.tool, p.setting) for p in peers.PEERS}
    for fmt in peers.FORMATS:
        mine = [r for r in rows if r["peer"] == "edgekd" and r["format"] == fmt]
        assert len(mine) == 1 and mine[0]["sha256_verified"] is True
        assert 0.5 < mine[0]["ratio_to_edgekd"] < 2.0  # edgekd's artifact timed against itself
    for r in rows:
        if r["status"] == "ok":
            assert 0 <= r["accuracy"] <= 1 and 0 <= r["agreement_with_fp32"] <= 1 and r["p50_ms"] > 0
            assert 0 <= r["mcnemar_vs_edgekd"]["p_value"] <= 1 and r["sha256_verified"] is True
        else:
            assert r["reason"]
    assert doc["summary"] == peers.summary(rows)
    assert doc["verdict"] in (doc["summary"]["counts"], "invalid: host busy")
    prov = doc["provenance"]
    assert prov["quiet_load"] == peers.QUIET_LOAD and prov["runtimes"]["onnxruntime"]
