"""The dtype a model input travels in: one rule for every place that hands samples to a model or a runtime.

Images and tables are normalised float32; text is int32 token ids (``edgekd.text``), which a float cast would turn
into meaningless numbers an embedding lookup refuses. Export samples, calibration sets, ``eval.npz`` and timing
inputs all go through ``model_input`` so the data's own dtype decides, never the call site.
"""

from __future__ import annotations

import numpy as np

TOKEN_DTYPE = np.int32  # token ids: what every text model, artifact and the runner take


def model_input(x: np.ndarray) -> np.ndarray:
    """``x`` contiguous in the dtype a model takes: integer arrays as int32 token ids, anything else float32."""
    arr = np.asarray(x)
    dtype = TOKEN_DTYPE if np.issubdtype(arr.dtype, np.integer) else np.float32
    return np.ascontiguousarray(arr, dtype=dtype)


def input_dtype_name(x: np.ndarray) -> str:
    """``"int32"`` or ``"float32"``: the manifest's ``input.dtype`` for samples like ``x``."""
    return model_input(np.asarray(x)[:0]).dtype.name
