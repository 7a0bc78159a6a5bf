"""Teachers that run outside PyTorch: any ``.onnx`` model (onnxruntime) and scikit-learn models in ``.skops`` files.

Why ONNX is the common form: Keras (tf2onnx), JAX, scikit-learn (skl2onnx), XGBoost/LightGBM (onnxmltools) all
export it, onnxruntime runs it without the framework, and the runner can then time the teacher exactly as it times
the student. A ``.skops`` file is checked against its types before anything is built from it (never a raw pickle)
and converted with skl2onnx, so both arrive at one path: ``prepare_onnx`` rewrites the graph to take the
normalised float32 input every edgekd artifact takes and to return one ``logits`` output, then ``OnnxTeacher`` runs
it as a plain ``nn.Module`` (logits only: the trainer caches them once, like any teacher's; feature losses are
refused because an ONNX graph has no modules to tap).

Inputs: a teacher on flat (tabular) data reads the table's raw columns, as such models are trained, so edgekd's
per-feature standardisation is undone inside the graph (``x * std + mean``, times ``scale``); an image teacher
reads the normalised image (pass the teacher's ``--normalization``). Outputs: a classifier's probabilities
(scikit-learn's ZipMap removed) become ``log(p)``; a network ending in Softmax is read before it (its logits).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgekd.data import Normalization
from edgekd.errors import EdgekdError, MissingDependencyError
from edgekd.models.onnx_graph import count_onnx_cost, prepare_onnx
from edgekd.models.teacher_base import Teacher

# scikit-learn internals skops does not trust by default that hold only arrays (fitted trees): trusted here.
# Anything else a .skops file names beyond skops' own trusted defaults is refused.
SKOPS_TRUSTED = frozenset({
    "sklearn.tree._tree.Tree",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
    "sklearn._loss.link.Interval",
})


class OnnxTeacher(nn.Module):
    """An ONNX graph (already ``prepare_onnx``-ed) as a module: normalised float32 in, logits out, via onnxruntime.

    No parameters; a buffer holds the graph's sha256 so checkpoints and caches key on the teacher's content.
    """

    logits_only = True

    def __init__(self, onnx_bytes: bytes, static_batch: int | None = None, threads: int = 0) -> None:
        super().__init__()
        self.onnx_bytes, self.static_batch, self.threads = onnx_bytes, static_batch, threads
        digest = hashlib.sha256(onnx_bytes).digest()
        self.register_buffer("onnx_sha256", torch.tensor(list(digest), dtype=torch.uint8))
        self._session: Any = None

    @property
    def session(self) -> Any:
        if self._session is None:
            import onnxruntime as ort  # lazy: optional heavy dependency (the onnx extra)

            opts = ort.SessionOptions()
            opts.intra_op_num_threads = self.threads or torch.get_num_threads()
            opts.log_severity_level = 3
            self._session = ort.InferenceSession(self.onnx_bytes, opts, providers=["CPUExecutionProvider"])
        return self._session

    def __getstate__(self) -> dict:  # deepcopy / pickle: the session is rebuilt on demand
        state = self.__dict__.copy()
        state["_session"] = None
        return state

    def train(self, mode: bool = True) -> OnnxTeacher:
        self.training = mode  # the graph's mode was fixed at export
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        arr = np.ascontiguousarray(x.detach().float().cpu().numpy())
        name = self.session.get_inputs()[0].name
        b = self.static_batch
        if b is None or len(arr) == b:
            out = self.session.run(None, {name: arr})[0]
        else:  # exported with a fixed batch: run chunks of that size, padding the last one
            parts = []
            for i in range(0, len(arr), b):
                chunk = arr[i : i + b]
                pad = b - len(chunk)
                if pad:
                    chunk = np.concatenate([chunk, np.repeat(chunk[:1], pad, axis=0)])
                parts.append(self.session.run(None, {name: chunk})[0][: b - pad])
            out = np.concatenate(parts)
        return torch.from_numpy(np.asarray(out, np.float32)).to(x.device)


def load_foreign_teacher(path: Path, input_shape: tuple[int, ...], num_classes: int,
                         normalization: Normalization | None, classes: list[str] | None) -> Teacher:
    """A ``.onnx`` or ``.skops`` teacher as an ``OnnxTeacher`` checked against the data's shape and classes."""
    try:
        import onnx  # lazy: optional heavy dependency (the onnx extra)
    except ImportError:
        raise MissingDependencyError("onnx", "onnx", f"the teacher {path.name}") from None
    if path.suffix.lower() == ".skops":
        model, source = skops_to_onnx(path, input_shape), "skops"
    else:
        try:
            model, source = onnx.load(str(path)), "onnx"
        except Exception as exc:  # noqa: BLE001 - a broken file is the user's
            raise EdgekdError(f"cannot read ONNX teacher {path}: {type(exc).__name__}: {str(exc)[:200]}",
                              "pass a valid .onnx file (onnx.checker.check_model passes on it)") from None
    raw = normalization if len(input_shape) == 1 else None  # tabular teachers read raw columns
    prepared = prepare_onnx(model, input_shape, num_classes, raw, classes, str(path))
    # Tree ensembles sum their trees in thread order, and log(p) magnifies that float noise near p = 0: one thread,
    # as the runner's parity check uses, makes the logits reproducible (trees are cheap to run anyway).
    teacher = OnnxTeacher(prepared.model.SerializeToString(), prepared.static_batch, 1 if prepared.ml_ops else 0)
    params, macs = count_onnx_cost(prepared.model, input_shape)
    config = {"file": path.name, "reads": "raw columns" if raw is not None else "normalised input",
              "output": prepared.output_kind, "params": params, "macs": macs, "ml_ops": prepared.ml_ops}
    name = prepared.ml_ops[0] if prepared.ml_ops else "onnx-network"
    return Teacher(teacher, source, name, f"{source} teacher from {path}, run by onnxruntime", config)


def skops_to_onnx(path: Path, input_shape: tuple[int, ...]) -> Any:
    """A scikit-learn model from a ``.skops`` file (types checked, never unpickled) converted with skl2onnx."""
    try:
        import skops.io as sio  # lazy: optional dependency (the tabular extra)
        from skl2onnx import to_onnx  # lazy: optional dependency (the tabular extra)
    except ImportError:
        raise MissingDependencyError("skops and skl2onnx", "tabular", f"the teacher {path.name}") from None
    try:
        untrusted = sio.get_untrusted_types(file=str(path))
    except Exception as exc:  # noqa: BLE001
        raise EdgekdError(f"cannot read skops teacher {path}: {type(exc).__name__}: {str(exc)[:200]}",
                          "save it with skops.io.dump(model, path)") from None
    refused = sorted(set(untrusted) - SKOPS_TRUSTED)
    if refused:
        raise EdgekdError(f"skops teacher {path} contains types edgekd does not trust: {', '.join(refused)}",
                          "give a plain scikit-learn model, or export it to ONNX (skl2onnx) and pass the .onnx")
    estimator = sio.load(str(path), trusted=list(untrusted))
    if len(input_shape) != 1:
        raise EdgekdError(f"skops teacher {path} needs flat feature data; the data has shape {input_shape}",
                          "use it on a CSV/Parquet table or an .npz of feature rows")
    expected = getattr(estimator, "n_features_in_", None)
    if expected is not None and expected != input_shape[0]:
        raise EdgekdError(f"skops teacher {path} was fitted on {expected} features; the data has {input_shape[0]}",
                          "give the table the teacher was trained on (same feature columns, same order)")
    try:
        return to_onnx(estimator, np.zeros((1, input_shape[0]), np.float32))
    except Exception as exc:  # noqa: BLE001 - skl2onnx has no converter for this estimator
        raise EdgekdError(f"skl2onnx cannot convert the skops teacher {path} ({type(estimator).__name__}): "
                          f"{type(exc).__name__}: {str(exc)[:200]}",
                          "export it to ONNX yourself (skl2onnx/onnxmltools) and pass the .onnx") from None
