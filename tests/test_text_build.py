"""User story: "my labelled sentences become an on-device text classifier": ``edgekd build --text-column`` on a CSV
made here ships a TFLite artifact with its tokenizer, and the bundle's runner.py classifies raw strings on a
machine where torch, tokenizers and edgekd cannot be imported."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from test_text_data import sentiment_rows, write_csv

from edgekd.io import sha256_file

BLOCKED = ("torch", "tokenizers", "transformers", "edgekd")
NO_TORCH = ("import runpy, sys\n"
            f"for name in {BLOCKED!r}:\n"
            "    sys.modules[name] = None  # import fails: the device has none of these\n"
            "sys.argv = ['runner.py', *sys.argv[1:]]\n"
            "runpy.run_path('runner.py', run_name='__main__')\n")


def reviews_folder(tmp_path: Path, train: int, test: int) -> Path:
    """A train.csv + test.csv folder of made-up sentiment rows (the layout of the shared SST-2)."""
    data = tmp_path / "reviews"
    data.mkdir()
    write_csv(data / "train.csv", sentiment_rows(train))
    write_csv(data / "test.csv", sentiment_rows(test, seed=1))
    return data


def _runner(bundle: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", NO_TORCH, *args], cwd=bundle, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.slow
def test_text_csv_builds_and_the_bundle_classifies_raw_strings_without_torch(tmp_path: Path) -> None:
    data = reviews_folder(tmp_path, train=240, test=40)
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "edgekd", "build", "--target", "rpi4", "--data", str(data),
                           "--text-column", "text", "--label-column", "label", "--baseline", "--epochs", "4",
                           "--teacher-epochs", "4", "--runs", "10", "--warmup", "2", "--no-progress",
                           "--out", str(out), "--cache-dir", str(tmp_path / "cache")],
                          capture_output=True, text=True, timeout=2400)
    assert proc.returncode in (0, 1), proc.stderr[-3000:]  # built; 1 = a budget missed on this host, not an error

    manifest = json.loads((out / "manifest.json").read_text())
    tok = manifest["tokenizer"]
    assert manifest["input"]["dtype"] == "int32" and manifest["input"]["layout"] == "NL"
    assert sha256_file(out / tok["vocab_file"]) == tok["vocab_sha256"]
    assert sha256_file(out / tok["settings_file"]) == tok["settings_sha256"]
    report = json.loads((out / "report.json").read_text())
    assert report["teacher"]["accuracy"] is not None and report["student"]["accuracy_trained_alone"] is not None
    shipped = [a for a in report["artifacts"] if a["shipped"] and a["format"] == "tflite"]
    assert shipped, [(a["path"], a["shipped"]) for a in report["artifacts"]]
    tflite = shipped[0]
    assert tflite["preprocess"]["applies_to"] == "text" and tflite["preprocess"]["ids_equal_build"]
    if tflite["precision"] == "int8":  # the embedding lookup stays float: the report says so
        assert "EMBEDDING_LOOKUP" in tflite["precision_detail"]

    assert subprocess.run([sys.executable, "-m", "edgekd", "bundle", str(out), "--out", str(tmp_path / "bundle")],
                          capture_output=True, text=True, timeout=300).returncode == 0
    bundle = tmp_path / "bundle"
    assert (bundle / "vocab.txt").is_file() and (bundle / "tokenizer.json").is_file()
    texts = tmp_path / "texts.txt"
    texts.write_text("Honestly, a good film!\n\nHonestly, worst movie this year!\n", encoding="utf-8")
    ran = _runner(bundle, tflite["path"], "--text", "i loved it , wonderful", "--text-file", str(texts),
                  "--json", str(tmp_path / "out.json"))
    assert ran.returncode == 0, ran.stderr[-2000:]
    result = json.loads((tmp_path / "out.json").read_text())
    assert result["torch_imported"] is False and result["sha256_verified"] and result["texts"] == 3
    assert {p["class"] for p in result["predictions"]} <= {"negative", "positive"}
    assert result["tokenize_ms"]["p50"] > 0 and result["inference_ms"]["p50"] > 0

    (bundle / "vocab.txt").write_text("[PAD]\n[UNK]\ngood\n", encoding="utf-8")  # a changed vocabulary is refused
    ran = _runner(bundle, tflite["path"], "--text", "a good film")
    assert ran.returncode == 2 and "sha256 mismatch for vocab.txt" in ran.stderr


# This venv's torchvision does not load against its torch (torchvision::nms missing) and transformers imports it for
# BERT, which needs none of it: the build runs with it unimportable, as on a machine without torchvision.
NO_TORCHVISION = ("import sys\nsys.modules['torchvision'] = None\nfrom edgekd.cli import main\n"
                  "sys.exit(main(sys.argv[1:]))\n")


SAVE_BERT = """
import json, sys
sys.modules["torchvision"] = None
import torch
from transformers import BertConfig, BertForSequenceClassification
root, vocab = sys.argv[1], json.loads(sys.argv[2])
torch.manual_seed(0)
config = BertConfig(vocab_size=len(vocab), hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
                    intermediate_size=256, max_position_embeddings=32, num_labels=2)
BertForSequenceClassification(config).save_pretrained(root, safe_serialization=True)
"""


def save_bert_teacher(root: Path, words: list[str]) -> Path:
    """A 2-layer BERT sequence classifier with random weights and a vocab.txt, as save_pretrained writes them (in a
    fresh process: see NO_TORCHVISION)."""
    pytest.importorskip("transformers")
    vocab = ["[PAD]", "[unused0]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]
    made = subprocess.run([sys.executable, "-c", SAVE_BERT, str(root), json.dumps(vocab)], capture_output=True,
                          text=True, timeout=600)
    assert made.returncode == 0, made.stderr[-2000:]
    (root / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    return root


@pytest.mark.slow
def test_a_hugging_face_teacher_directory_teaches_a_text_student(tmp_path: Path) -> None:
    data = reviews_folder(tmp_path, train=200, test=30)
    words = sorted({w for row in sentiment_rows(200) for w in row["text"].lower().replace(",", " , ")
                   .replace("!", " ! ").split()})
    teacher = save_bert_teacher(tmp_path / "bert", words)
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-c", NO_TORCHVISION, "build", "--target", "rpi4", "--data", str(data),
                           "--text-column", "text", "--label-column", "label", "--teacher", str(teacher),
                           "--epochs", "2", "--runs", "10", "--warmup", "2", "--no-progress", "--out", str(out),
                           "--cache-dir", str(tmp_path / "cache")], capture_output=True, text=True, timeout=2400)
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["teacher"]["source"] == "huggingface" and report["teacher"]["arch"] == "hf:bert"
    tok = json.loads((out / "manifest.json").read_text())["tokenizer"]
    assert tok["trained_on"] == "the teacher's vocabulary (bert/vocab.txt)" and tok["cls_token"] == "[CLS]"
    assert (out / "vocab.txt").read_text(encoding="utf-8") == (teacher / "vocab.txt").read_text(encoding="utf-8")
