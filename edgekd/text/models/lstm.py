"""Student family ``text_bilstm``: a bidirectional LSTM over token embeddings (Tang et al. 2019, "Distilling
Task-Specific Knowledge from BERT into Simple Neural Networks").

The recurrence is unrolled over ``max_len`` steps in plain ops (matmul, sigmoid, tanh, mul, add) rather than
``nn.LSTM``: ONNX, litert-torch and the int8 quantizer all take it as it is, with no LSTM kernel (unidirectional /
bidirectional sequence LSTM ops differ per runtime) to depend on. Each step keeps the previous state where the
token is ``[PAD]`` (``h = m*h_new + (1-m)*h``), which makes it exactly a packed sequence: the forward direction
carries its last real state through the trailing padding, the backward one starts from zeros at the last real
token. The classifier reads both final states, as Tang et al.'s does (concatenate, ReLU layer, linear).

Export, measured on int32 ids with torch 2.13, onnxruntime 1.32, litert-torch 0.10.0 and ai-edge-quantizer 0.10.0
(static_wi8_ai8, float I/O); tests/text/test_text_models.py repeats the checks (the int8 float ops: slow tests).

| format | ops (besides reshapes) | precision shipped |
| --- | --- | --- |
| ONNX | Gather, Gemm, MatMul, Sigmoid, Tanh, Mul, Add, Sub, Split, Concat (no LSTM op) | fp32, parity 1e-6 |
| TFLite | EMBEDDING_LOOKUP, FULLY_CONNECTED, LOGISTIC, TANH, MUL, ADD, SUB, SLICE, CONCATENATION, CAST | fp32 |
| TFLite int8 | the same + QUANTIZE/DEQUANTIZE | int8 but EMBEDDING_LOOKUP, CAST |

The unrolled graph has ~50 ops a step: conversion took about a minute at max_len 32 on a loaded 2-core host (ONNX
export as long), growing linearly with max_len.
"""

from __future__ import annotations

import torch
from torch import nn

from edgekd.text.models import padding_mask, register_text_family


class MaskedLSTM(nn.Module):
    """One direction of an LSTM; returns the final hidden state [batch, hidden] (real tokens only)."""

    def __init__(self, input_size: int, hidden: int, reverse: bool) -> None:
        super().__init__()
        self.hidden, self.reverse = hidden, reverse
        self.input_proj = nn.Linear(input_size, 4 * hidden)  # all steps in one matmul
        self.recurrent = nn.Linear(hidden, 4 * hidden, bias=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        gates_x = self.input_proj(x)  # [B, L, 4H]
        h = x.new_zeros(x.shape[0], self.hidden)
        c = h
        steps = range(x.shape[1] - 1, -1, -1) if self.reverse else range(x.shape[1])
        for t in steps:
            i, f, g, o = (gates_x[:, t] + self.recurrent(h)).chunk(4, dim=1)
            c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h_new = torch.sigmoid(o) * torch.tanh(c_new)
            m = mask[:, t : t + 1]
            c = m * c_new + (1.0 - m) * c
            h = m * h_new + (1.0 - m) * h
        return h


class TextBiLSTM(nn.Module):
    def __init__(self, vocab_size: int, num_classes: int, max_len: int, width: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.max_len = max_len
        self.embed = nn.Embedding(vocab_size, width, padding_idx=0)
        self.forward_lstm = MaskedLSTM(width, width, reverse=False)
        self.backward_lstm = MaskedLSTM(width, width, reverse=True)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(2 * width, width), nn.ReLU(), nn.Dropout(dropout),
                                  nn.Linear(width, num_classes))

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        mask = padding_mask(input_ids)
        x = self.embed(input_ids)
        return self.head(torch.cat([self.forward_lstm(x, mask), self.backward_lstm(x, mask)], dim=1))


@register_text_family("text_bilstm", widths=(16, 24, 32, 48, 64, 96, 128, 192),
                      int8_float_ops=("CAST", "EMBEDDING_LOOKUP"))
def _text_bilstm(*, vocab_size: int, num_classes: int, max_len: int, width: int) -> nn.Module:
    return TextBiLSTM(vocab_size, num_classes, max_len, width)
