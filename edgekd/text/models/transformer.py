"""Student family ``text_transformer`` (TinyBERT / MobileBERT-style) and the encoder the default teacher shares.

Token + position embeddings with LayerNorm, post-LN encoder layers (self-attention + GELU feed-forward, as BERT),
masked mean pooling, a linear classifier. Attention is written out (matmul, softmax) rather than calling
``scaled_dot_product_attention`` so it exports as plain MatMul/Softmax everywhere and so the attention
probabilities exist as a tensor for TinyBERT attention transfer.

The KD taps (``edgekd.text.kd``): ``hidden_taps.{i}`` (identity modules) see the embeddings' output (i = 0) and
each layer's output (i = 1..N) [batch, len, width]; ``attention_taps.{i}`` see layer i's attention probabilities
[batch, heads, len, len]. The Hugging Face teacher wrapper exposes the same names, so any transformer pair maps.

Padding is neutral: ``[PAD]`` keys get a -1e4 score bias (exp underflows to exactly 0 in float32), and pooling
averages real tokens only; positions are absolute and padding is on the right, so real tokens keep theirs.

Export, measured on int32 ids with torch 2.13, onnxruntime 1.32, litert-torch 0.10.0 and ai-edge-quantizer 0.10.0
(static_wi8_ai8, float I/O); tests/text/test_text_models.py repeats the checks (the int8 float ops: slow tests).

| format | ops (besides reshapes) | precision shipped |
| --- | --- | --- |
| ONNX | Gather, MatMul, Gemm, Softmax, LayerNormalization, Tanh/Pow (GELU), ReduceSum, Div, Clip | fp32, parity 1e-6 |
| TFLite | EMBEDDING_LOOKUP, FULLY_CONNECTED, BATCH_MATMUL, SOFTMAX, GELU, MEAN, SQUARED_DIFFERENCE, RSQRT | fp32 |
|  | (LayerNorm), SUM, DIV, MAXIMUM (pooling), NOT_EQUAL, CAST, ADD, SUB, MUL, SLICE | |
| TFLite int8 | the same + QUANTIZE/DEQUANTIZE | int8 but EMBEDDING_LOOKUP, CAST |

Softmax and the decomposed LayerNorm quantize under ai-edge-quantizer. The -1e4 mask bias may widen the int8 range
of the attention scores (not measured apart); the int8 drop in the build report shows the whole effect.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from edgekd.text.models import padding_mask, register_text_family

MASK_BIAS = -1e4  # not -inf: a fully padded row stays finite (uniform), and int8 calibration sees a finite range
HEAD_DIM = 32


def heads_for(width: int) -> int:
    """Heads of HEAD_DIM channels where the width allows, else the largest head count that divides it."""
    heads = max(1, width // HEAD_DIM)
    while width % heads:
        heads -= 1
    return heads


class SelfAttention(nn.Module):
    def __init__(self, width: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, width // heads
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, n, w = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim) + bias  # [B, H, L, L]
        probs = torch.softmax(scores, dim=-1)
        context = (self.dropout(probs) @ v).transpose(1, 2).reshape(b, n, w)
        return self.out(context), probs


class EncoderLayer(nn.Module):
    def __init__(self, width: int, heads: int, ffn: int, dropout: float) -> None:
        super().__init__()
        self.attention = SelfAttention(width, heads, dropout)
        self.norm1 = nn.LayerNorm(width)
        self.ffn = nn.Sequential(nn.Linear(width, ffn), nn.GELU(approximate="tanh"), nn.Linear(ffn, width))
        self.norm2 = nn.LayerNorm(width)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        attended, probs = self.attention(x, bias)
        x = self.norm1(x + self.dropout(attended))
        return self.norm2(x + self.dropout(self.ffn(x))), probs


class TextTransformer(nn.Module):
    def __init__(self, vocab_size: int, num_classes: int, max_len: int, width: int, layers: int = 2,
                 heads: int | None = None, ffn_mult: int = 4, dropout: float = 0.1) -> None:
        super().__init__()
        heads = heads or heads_for(width)
        self.max_len = max_len
        self.token = nn.Embedding(vocab_size, width, padding_idx=0)
        self.position = nn.Parameter(torch.zeros(1, max_len, width))
        nn.init.normal_(self.position, std=0.02)
        self.embed_norm = nn.LayerNorm(width)
        self.dropout = nn.Dropout(dropout)
        self.layers = nn.ModuleList(EncoderLayer(width, heads, ffn_mult * width, dropout) for _ in range(layers))
        self.hidden_taps = nn.ModuleList(nn.Identity() for _ in range(layers + 1))
        self.attention_taps = nn.ModuleList(nn.Identity() for _ in range(layers))
        self.classifier = nn.Linear(width, num_classes)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        mask = padding_mask(input_ids)  # [B, L]
        bias = ((1.0 - mask) * MASK_BIAS)[:, None, None, :]
        x = self.embed_norm(self.token(input_ids) + self.position[:, : input_ids.shape[1]])
        x = self.hidden_taps[0](self.dropout(x))
        for i, layer in enumerate(self.layers):
            x, probs = layer(x, bias)
            self.attention_taps[i](probs)
            x = self.hidden_taps[i + 1](x)
        pooled = (x * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True).clamp(min=1.0)
        return self.classifier(pooled)


@register_text_family("text_transformer", widths=(32, 48, 64, 96, 128, 192, 256),
                      int8_float_ops=("CAST", "EMBEDDING_LOOKUP"))
def _text_transformer(*, vocab_size: int, num_classes: int, max_len: int, width: int) -> nn.Module:
    return TextTransformer(vocab_size, num_classes, max_len, width)
