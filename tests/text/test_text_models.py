"""Text student families: the input contract (int32/int64 ids, [PAD] = 0, logits out), padding neutrality, sizing
by width, and export to ONNX (onnxruntime parity) and TFLite (fp32 parity, int8 with the float ops named)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgekd.errors import EdgekdError
from edgekd.text.models import TEXT_STUDENTS, build_text_student, ranked_text_students, text_student_family

FAMILIES = sorted(TEXT_STUDENTS)
# the unrolled BiLSTM takes tens of seconds to export (and to train a few steps) on a loaded 2-core host
EXPORT_FAMILIES = [pytest.param(f, marks=pytest.mark.slow) if f == "text_bilstm" else f for f in FAMILIES]
VOCAB, CLASSES, MAX_LEN = 50, 3, 12


def padded_ids(seed: int = 0, batch: int = 4) -> torch.Tensor:
    """Random token ids, each row right-padded with 0 after a different length (one row unpadded)."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (batch, MAX_LEN), generator=gen, dtype=torch.int32)
    for row, length in enumerate([MAX_LEN, 1, 5, 9][:batch]):
        ids[row, length:] = 0
    return ids


def student(family: str, width: int = 16) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_text_student(family, vocab_size=VOCAB, num_classes=CLASSES, max_len=MAX_LEN, width=width).eval()


def test_all_three_families_are_registered():
    assert {"text_cnn", "text_transformer", "text_bilstm"} <= set(TEXT_STUDENTS)
    assert text_student_family("auto").name == "text_cnn"


@pytest.mark.parametrize("family", FAMILIES)
def test_takes_int32_and_int64_ids_and_returns_logits(family):
    model, ids = student(family), padded_ids()
    with torch.no_grad():
        out32, out64 = model(ids), model(ids.long())
    assert out32.shape == (4, CLASSES) and out32.dtype == torch.float32
    torch.testing.assert_close(out32, out64)


@pytest.mark.parametrize("family", FAMILIES)
def test_padding_does_not_change_a_sequences_logits(family):
    """Each padded row gives the logits of the same tokens alone, unpadded (the mask works)."""
    model, ids = student(family), padded_ids()
    with torch.no_grad():
        batched = model(ids)
        for row in range(len(ids)):
            length = int((ids[row] != 0).sum())
            alone = model(ids[row : row + 1, :length])
            torch.testing.assert_close(batched[row : row + 1], alone, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_pad_embedding_is_ignored(family):
    """Even a non-zero [PAD] embedding (padding_idx keeps it at zero only at init) leaves the logits unchanged."""
    model, ids = student(family), padded_ids()
    with torch.no_grad():
        before = model(ids)
        embedding = next(m for m in model.modules() if isinstance(m, torch.nn.Embedding))
        embedding.weight[0].normal_()
        torch.testing.assert_close(model(ids), before, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("family", EXPORT_FAMILIES)
def test_learns_which_token_decides_the_class(family):
    """Gradients reach every part that matters: 30 Adam steps learn 'token 7 anywhere -> class 1' on padded rows."""
    torch.manual_seed(0)
    ids = padded_ids(seed=1, batch=4).repeat(8, 1)
    ids[ids == 7] = 8
    labels = torch.arange(len(ids)) % 2
    lengths = (ids != 0).sum(1)
    ids[labels == 1, (torch.arange(len(ids)) % 5)[labels == 1] % lengths[labels == 1]] = 7
    model = student(family, width=16).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(30):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(ids), labels).backward()
        opt.step()
    with torch.no_grad():
        assert (model.eval()(ids).argmax(1) == labels).float().mean() >= 0.95


@pytest.mark.parametrize("family", FAMILIES)
def test_cost_counts_the_real_models_params_and_grows_with_width(family):
    spec = TEXT_STUDENTS[family]
    small = spec.cost(vocab_size=VOCAB, num_classes=CLASSES, max_len=MAX_LEN, width=16)
    large = spec.cost(vocab_size=VOCAB, num_classes=CLASSES, max_len=MAX_LEN, width=64)
    assert small[0] == sum(p.numel() for p in student(family, 16).parameters())
    assert 0 < small[0] < large[0] and 0 < small[1] < large[1]


def test_text_cnn_macs_are_its_convolutions_and_classifier():
    width, k = 16, sum((3, 5, 7))
    _, macs = TEXT_STUDENTS["text_cnn"].cost(vocab_size=VOCAB, num_classes=CLASSES, max_len=MAX_LEN, width=width)
    assert macs == MAX_LEN * width * width * k + 3 * width * CLASSES


def test_budget_picks_the_widest_student_that_fits():
    ranked = ranked_text_students("text_cnn", vocab_size=1000, num_classes=2, max_len=32, max_params=60_000)
    assert all(c.params <= 60_000 for c in ranked)
    assert ranked[0].width == max(c.width for c in ranked)
    wider = TEXT_STUDENTS["text_cnn"].search_space()[len(ranked)]["width"]
    assert TEXT_STUDENTS["text_cnn"].cost(vocab_size=1000, num_classes=2, max_len=32, width=wider)[0] > 60_000


def test_budget_too_small_and_unknown_family_are_user_errors():
    with pytest.raises(EdgekdError, match="no 'text_bilstm' text student fits"):
        ranked_text_students("text_bilstm", vocab_size=1000, num_classes=2, max_len=32, max_params=100)
    with pytest.raises(EdgekdError, match="unknown text student family 'rnn'"):
        build_text_student("rnn", vocab_size=10, num_classes=2, max_len=4, width=8)


@pytest.mark.parametrize("family", EXPORT_FAMILIES)
def test_exports_to_onnx_and_matches_onnxruntime(family, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from edgekd.backends.onnx import export_onnx_fp32

    model, ids = student(family), padded_ids().numpy()
    path = export_onnx_fp32(model, ids, tmp_path / "m.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].type == "tensor(int32)"
    got = session.run(None, {session.get_inputs()[0].name: ids})[0]
    with torch.no_grad():
        np.testing.assert_allclose(got, model(torch.from_numpy(ids)).numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_converts_to_tflite_and_int8_keeps_only_the_declared_float_ops(family, tmp_path):
    """fp32 TFLite matches PyTorch on int32 ids; int8 (static recipe) leaves exactly the family's declared float ops."""
    pytest.importorskip("litert_torch")
    pytest.importorskip("ai_edge_quantizer")
    from edgekd.backends import Calibration
    from edgekd.backends.tflite import _interpreter_cls, convert_fp32, describe, quantize

    model, ids = student(family), padded_ids().numpy()
    fp32, int8 = tmp_path / "fp32.tflite", tmp_path / "int8.tflite"
    convert_fp32(model, ids, fp32)
    interp = _interpreter_cls()(model_path=str(fp32))
    interp.allocate_tensors()
    (inp,), (out,) = interp.get_input_details(), interp.get_output_details()
    assert np.dtype(inp["dtype"]) == np.int32
    with torch.no_grad():
        expected = model(torch.from_numpy(ids)).numpy()
    for row in range(len(ids)):
        interp.set_tensor(inp["index"], ids[row : row + 1])
        interp.invoke()
        np.testing.assert_allclose(interp.get_tensor(out["index"]), expected[row : row + 1], rtol=1e-4, atol=1e-5)
    quantize(fp32, int8, "int8", Calibration(ids, {"test": "random ids"}), integer_io=False)
    assert tuple(describe(int8, ids, "int8")["float_ops"]) == TEXT_STUDENTS[family].int8_float_ops
