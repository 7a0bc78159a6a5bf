"""Student family ``text_cnn``: a CNN over token embeddings (Kim 2014), several kernel widths, max-pool over time.

Why this family: convolutions and a max are the ops every edge runtime runs fast and quantizes fully, and its cost
grows linearly with the sequence. Padding is neutral by construction: the embeddings of ``[PAD]`` are zeroed (the
same zeros the convolution pads with), and the ReLU outputs at padded positions are zeroed before the max (ReLU
outputs are >= 0, so a zero never wins over a real position's value unless that value is 0 as well).

Export, measured on int32 ids with torch 2.13, onnxruntime 1.32, litert-torch 0.10.0 and ai-edge-quantizer 0.10.0
(static_wi8_ai8, float I/O); tests/text/test_text_models.py repeats the checks (the int8 float ops: slow tests).

| format | ops (besides reshapes) | precision shipped |
| --- | --- | --- |
| ONNX | Gather, Equal/Not/Cast, Conv, Relu, Mul, MaxPool, Concat, Gemm | fp32, onnxruntime parity 1e-6 |
| TFLite | EMBEDDING_LOOKUP, NOT_EQUAL, CAST, CONV_2D, MUL, MAX_POOL_2D, CONCATENATION, FULLY_CONNECTED | fp32 |
| TFLite int8 | the same + QUANTIZE/DEQUANTIZE | int8 but EMBEDDING_LOOKUP (table float32), CAST (mask) |
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edgekd.text.models import padding_mask, register_text_family

KERNEL_WIDTHS = (3, 5, 7)  # odd: symmetric 'same' padding, which ONNX and TFLite express without an extra Pad


class TextCNN(nn.Module):
    def __init__(self, vocab_size: int, num_classes: int, max_len: int, width: int,
                 kernel_widths: tuple[int, ...] = KERNEL_WIDTHS) -> None:
        super().__init__()
        self.max_len = max_len
        self.embed = nn.Embedding(vocab_size, width, padding_idx=0)
        self.convs = nn.ModuleList(nn.Conv1d(width, width, k, padding=k // 2) for k in kernel_widths)
        self.dropout = nn.Dropout(0.1)
        self.classifier = nn.Linear(width * len(kernel_widths), num_classes)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        mask = padding_mask(input_ids).unsqueeze(1)  # [B, 1, L]
        x = self.embed(input_ids).transpose(1, 2) * mask  # [B, width, L], zeros at [PAD]
        # max over time as a max-pool spanning the sequence: TFLite MAX_POOL_2D has an int8 kernel, REDUCE_MAX
        # stays float under ai-edge-quantizer's static recipe
        pooled = [F.max_pool1d(torch.relu(conv(x)) * mask, x.shape[2]).squeeze(2) for conv in self.convs]
        return self.classifier(self.dropout(torch.cat(pooled, dim=1)))


@register_text_family("text_cnn", int8_float_ops=("CAST", "EMBEDDING_LOOKUP"))
def _text_cnn(*, vocab_size: int, num_classes: int, max_len: int, width: int) -> nn.Module:
    return TextCNN(vocab_size, num_classes, max_len, width)
