"""Text teachers: the default transformer, and a local Hugging Face directory loaded without running its code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from edgekd.errors import EdgekdError
from edgekd.text.teachers import default_text_teacher, import_transformers, load_hf_teacher

pytest.importorskip("transformers")
transformers = import_transformers()

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "bad", "movie", "the", "a", "##s", "not"]


def save_tiny_bert(root: Path, *, head: bool = True, safe: bool = True, vocab: list[str] = VOCAB) -> Path:
    """A 2-layer, hidden-32 BERT with random weights, saved as save_pretrained writes it, plus a vocab.txt."""
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=64, max_position_embeddings=24,
                                     num_labels=3)
    cls = transformers.BertForSequenceClassification if head else transformers.BertModel
    model = cls(config)
    if safe:
        model.save_pretrained(root, safe_serialization=True)
    else:
        config.save_pretrained(root)
        torch.save(model.state_dict(), root / "pytorch_model.bin")
    (root / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    return root


def ids() -> torch.Tensor:
    out = torch.tensor([[2, 8, 7, 5, 3, 0, 0, 0], [2, 11, 6, 3, 0, 0, 0, 0]], dtype=torch.int32)
    return out


def test_default_teacher_is_a_larger_transformer_with_taps():
    teacher = default_text_teacher(vocab_size=30, num_classes=2, max_len=8).eval()
    assert teacher(ids()).shape == (2, 2)
    assert len(teacher.attention_taps) == 4 and len(teacher.hidden_taps) == 5


def test_hf_directory_loads_as_a_teacher_with_its_vocab(tmp_path):
    teacher = load_hf_teacher(save_tiny_bert(tmp_path))
    assert teacher.vocab.path == tmp_path / "vocab.txt" and teacher.vocab.tokens == tuple(VOCAB)
    assert teacher.vocab.lowercase and teacher.vocab.size == len(VOCAB)
    assert teacher.num_labels == 3 and teacher.max_len == 24
    with torch.no_grad():
        logits = teacher(ids())
        direct = teacher.model(input_ids=ids().long(), attention_mask=(ids() != 0).long()).logits
        alone = teacher(ids()[:1, :5])
    assert logits.shape == (2, 3)
    torch.testing.assert_close(logits, direct)
    torch.testing.assert_close(logits[:1], alone, rtol=1e-4, atol=1e-5)  # the mask is built from [PAD] = 0


def test_hf_teacher_attention_taps_fire_when_hooked(tmp_path):
    teacher = load_hf_teacher(save_tiny_bert(tmp_path))
    seen: dict[int, torch.Tensor] = {}
    for i, tap in enumerate(teacher.attention_taps):
        tap.register_forward_hook(lambda _m, _i, out, i=i: seen.__setitem__(i, out))
    with torch.no_grad():
        teacher(ids())
    assert sorted(seen) == [0, 1] and seen[0].shape == (2, 2, 8, 8)
    torch.testing.assert_close(seen[1].sum(-1), torch.ones(2, 2, 8))


def test_remote_code_directory_is_refused_before_any_import(tmp_path):
    root = save_tiny_bert(tmp_path)
    marker = tmp_path / "code-ran"
    (root / "modeling_evil.py").write_text(f"open({str(marker)!r}, 'w').write('x')\n", encoding="utf-8")
    config = json.loads((root / "config.json").read_text())
    config["auto_map"] = {"AutoModelForSequenceClassification": "modeling_evil.EvilModel"}
    (root / "config.json").write_text(json.dumps(config))
    with pytest.raises(EdgekdError, match="asks to run its own code") as err:
        load_hf_teacher(root)
    assert err.value.exit_code == 2 and not marker.exists()


def test_pickle_only_directory_is_refused(tmp_path):
    root = save_tiny_bert(tmp_path, safe=False)
    assert (root / "pytorch_model.bin").exists()
    with pytest.raises(EdgekdError, match="no safetensors weights.*pytorch_model.bin") as err:
        load_hf_teacher(root)
    assert err.value.exit_code == 2


def test_model_without_a_classification_head_is_refused(tmp_path):
    with pytest.raises(EdgekdError, match="no trained classification head"):
        load_hf_teacher(save_tiny_bert(tmp_path, head=False))


def test_vocab_must_pad_with_id_zero(tmp_path):
    root = save_tiny_bert(tmp_path, vocab=["[UNK]", "[PAD]", *VOCAB[2:]])
    with pytest.raises(EdgekdError, match="not '\\[PAD\\]'"):
        load_hf_teacher(root)


def test_not_a_directory_is_refused(tmp_path):
    with pytest.raises(EdgekdError, match="is not a directory"):
        load_hf_teacher(tmp_path / "missing")
