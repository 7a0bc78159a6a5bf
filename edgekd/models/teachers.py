"""Load a user's teacher safely, or train the default one when none is given.

Supported files: a ``torch.export`` archive (``.pt2``, checked member by member so that nothing in it is fully
unpickled: ``pt2_safety``), a state_dict (loaded with ``weights_only=True``) plus a registered architecture name,
and TorchScript (``torch.jit.save``) only with ``trust_pickle``: PyTorch's security policy says TorchScript models
"should be treated the same way as locally executable code from an unknown source", so loading one is an opt-in.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgekd.data import Normalization
from edgekd.errors import EdgekdError, MissingDependencyError
from edgekd.models.arch_libraries import build_library_model, split_arch
from edgekd.models.foreign_teachers import load_foreign_teacher
from edgekd.models.pt2_safety import load_exported_program
from edgekd.models.students import build_model
from edgekd.models.teacher_base import Teacher as Teacher  # re-exported: where loaders' callers look for it

FOREIGN_SUFFIXES = (".onnx", ".skops")  # teachers run outside PyTorch (models/foreign_teachers.py)


class ExportedTeacher(nn.Module):
    """A ``torch.export`` program as a plain module: its mode is fixed at export, so train()/eval() are no-ops."""

    def __init__(self, program: torch.export.ExportedProgram) -> None:
        super().__init__()
        self.program = program.module()
        self.static_batch = _static_batch(program)

    def train(self, mode: bool = True) -> ExportedTeacher:
        self.training = mode
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.static_batch
        if b is None or x.shape[0] == b:
            return self.program(x)
        # Exported with a fixed batch: run in chunks of that size, padding the last one.
        outs = []
        for i in range(0, x.shape[0], b):
            chunk = x[i : i + b]
            pad = b - chunk.shape[0]
            if pad:
                chunk = torch.cat([chunk, chunk[:1].expand(pad, *chunk.shape[1:])])
            outs.append(self.program(chunk)[: b - pad])
        return torch.cat(outs)


def _static_batch(program: torch.export.ExportedProgram) -> int | None:
    names = set(program.graph_signature.user_inputs)
    for node in program.graph.nodes:
        if node.op == "placeholder" and node.name in names:
            size = node.meta["val"].shape[0] if "val" in node.meta else None
            return size if isinstance(size, int) else None
    return None


def _looks_like_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
    return any("/code/" in n for n in names) and any(n.endswith("constants.pkl") for n in names)


def load_teacher(
    path: str | Path,
    input_shape: tuple[int, ...],
    num_classes: int,
    arch: str | None = None,
    arch_config: dict[str, Any] | None = None,
    trust_pickle: bool = False,
    normalization: Normalization | None = None,
    classes: list[str] | None = None,
) -> Teacher:
    """Load a teacher file and check that it maps one sample to ``num_classes`` logits.

    ``.onnx`` and ``.skops`` teachers (``foreign_teachers``) run outside PyTorch: they need the data's
    ``normalization`` (a tabular model reads raw columns) and ``classes`` (checked against the model's labels).
    """
    path = Path(path)
    if not path.is_file():
        raise EdgekdError(f"teacher file not found: {path}",
                          "pass an existing .pt2, state_dict, .safetensors, .onnx or .skops file")
    if path.suffix.lower() in FOREIGN_SUFFIXES:
        teacher = load_foreign_teacher(path, input_shape, num_classes, normalization, classes)
        check_teacher_output(teacher.model, input_shape, num_classes, str(path))
        return teacher
    fix_kinds = "save it with torch.jit.save, torch.export.save, or torch.save(model.state_dict()) + --teacher-arch"
    try:
        if path.suffix == ".pt2":
            model = ExportedTeacher(load_exported_program(path, trust_pickle))
            source, name = "torch.export", "exported-program"
        elif _looks_like_torchscript(path):
            if not trust_pickle:
                raise EdgekdError(
                    f"teacher {path} is TorchScript, which PyTorch's security policy says to treat like executable "
                    "code from its author: edgekd does not load it unless you opt in",
                    "pass --trust-pickle if you trust who made the file, or give a .pt2 (torch.export.save) or a "
                    "state_dict + --teacher-arch instead")
            model, source, name = torch.jit.load(str(path), map_location="cpu"), "torchscript", "torchscript"
        else:
            state = _read_state(path, trust_pickle)
            if isinstance(state, nn.Module):
                model, source, name = state, "pickled-module", type(state).__name__
            else:
                if not arch:
                    raise EdgekdError(
                        f"teacher {path} is a state_dict, which needs its architecture",
                        "add --teacher-arch NAME (e.g. teacher_cnn, torchvision:resnet18, timm:NAME) and "
                        "--teacher-config JSON if not default",
                    )
                model = _build_arch(arch, input_shape, num_classes, arch_config)
                _load_weights(model, state, arch, path, num_classes)
                source, name = "state_dict", arch
    except EdgekdError:
        raise
    except Exception as exc:  # noqa: BLE001 - any loader failure is the user's file
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise EdgekdError(f"cannot load teacher {path}: {first}", fix_kinds) from None
    model.eval()
    check_teacher_output(model, input_shape, num_classes, str(path))
    return Teacher(model, source, name, f"{source} from {path}", dict(arch_config or {}))


def _read_state(path: Path, trust_pickle: bool) -> Any:
    """A state dict from ``.safetensors`` or ``torch.save`` (``weights_only`` unless trusted), unwrapped."""
    if path.suffix.lower() == ".safetensors":
        try:
            from safetensors.torch import load_file  # lazy: optional dependency (the teachers extra)
        except ImportError:
            raise MissingDependencyError("safetensors", "teachers", f"the teacher {path.name}") from None

        state = load_file(str(path), device="cpu")
    else:
        state = torch.load(str(path), map_location="cpu", weights_only=not trust_pickle)
    if isinstance(state, dict):
        for key in ("state_dict", "model_state_dict", "model"):  # common training-script wrappers
            if isinstance(state.get(key), dict):
                state = state[key]
                break
        if state and all(isinstance(k, str) and k.startswith("module.") for k in state):
            state = {k[len("module."):]: v for k, v in state.items()}  # saved from DataParallel / DDP
    return state


def _build_arch(arch: str, input_shape: tuple[int, ...], num_classes: int,
                config: dict[str, Any] | None) -> nn.Module:
    if split_arch(arch) is not None:
        return build_library_model(arch, input_shape, num_classes, config)
    return build_model(arch, input_shape, num_classes, **(config or {}))


def _load_weights(model: nn.Module, state: Any, arch: str, path: Path, num_classes: int) -> None:
    """``load_state_dict`` (strict), with the classifier head named when only its class count differs."""
    if not isinstance(state, dict):
        raise EdgekdError(f"teacher {path} holds a {type(state).__name__}, not a state_dict",
                          "save it with torch.save(model.state_dict(), path) or safetensors' save_file")
    own = model.state_dict()
    resized = [k for k, v in state.items()
               if k in own and hasattr(v, "shape") and tuple(v.shape) != tuple(own[k].shape)]
    if resized and all(own[k].shape[0] == num_classes for k in resized):
        heads = ", ".join(f"{k} {tuple(state[k].shape)}" for k in resized)
        raise EdgekdError(
            f"teacher {path}: the classifier head of {arch} has {state[resized[0]].shape[0]} outputs ({heads}), "
            f"but the data has {num_classes} classes",
            "fine-tune the teacher's head on this data's classes (one output per class, in the data's class order)")
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError) as exc:
        detail = " ".join(str(exc).split())  # torch lists missing / unexpected / mis-shaped keys on several lines
        raise EdgekdError(
            f"teacher state_dict {path} does not match architecture '{arch}': "
            f"{detail[:400] + ('...' if len(detail) > 400 else '')}",
            "pass the --teacher-arch/--teacher-config the weights were trained with",
        ) from None


def check_teacher_output(model: nn.Module, input_shape: tuple[int, ...], num_classes: int, label: str) -> None:
    try:
        with torch.no_grad():
            out = model(torch.zeros((2, *input_shape)))
    except Exception as exc:  # noqa: BLE001
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise EdgekdError(
            f"teacher {label} fails on inputs of shape (N, {', '.join(map(str, input_shape))}): {first}",
            "use a teacher trained on data of this shape",
        ) from None
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[1] != num_classes:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise EdgekdError(
            f"teacher {label} outputs {shape}, but the data has {num_classes} classes",
            "use a teacher whose classifier has one output per class of this data",
        )


# The teacher edgekd trains when the user gives none: (kind of input, smallest image side from, to, architecture), the
# first row that fits wins. At 28x28-32x32 (MNIST-class, CIFAR-class) the VGG-style teacher_cnn, chosen on the
# validation split: on Fashion-MNIST (rpi4 --baseline, all 54,000 training images, benchmarks/results/build_time.json
# and student_seed_noise_<arch>.json) the KD student it teaches (10.7 M MACs, 1/10 of its own) scored 0.9405-0.9420 on
# validation over 2 seeds (test 0.9348-0.9365), the one teacher_resnet (66 M MACs, 8 epochs) teaches (5 M MACs)
# 0.9310-0.9352 over 5 seeds (test 0.9265-0.9299); the teachers themselves 0.9395 and 0.9339 on test. teacher_cnn
# costs more per epoch (116 M MACs; 346 vs 218-251 s on a 2-core AVX2 host), so smaller images, where the cost matters
# more than the last points (digits 8x8), keep the residual one, and so do larger ones: teacher_cnn keeps 64 channels
# at full resolution, half as wide in teacher_resnet (7.4 vs 4.2 G MACs at 224x224).
DEFAULT_TEACHERS: tuple[tuple[str, int, int, str], ...] = (
    ("image", 28, 32, "teacher_cnn"),
    ("image", 0, 1 << 30, "teacher_resnet"),
    ("flat", 0, 0, "teacher_mlp"),
)


def default_teacher_arch(input_shape: tuple[int, ...]) -> str:
    kind = "image" if len(input_shape) == 3 else "flat"
    side = min(input_shape[1:]) if kind == "image" else 0
    return next(arch for k, low, high, arch in DEFAULT_TEACHERS if k == kind and low <= side <= high)


def predict_logits(model: nn.Module, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """Logits for a whole array, in eval mode, without gradients."""
    model.eval()
    outs = []
    with torch.inference_mode():
        for i in range(0, len(x), batch_size):
            outs.append(model(torch.from_numpy(np.ascontiguousarray(x[i : i + batch_size]))).float().numpy())
    return np.concatenate(outs) if outs else np.zeros((0, 0), np.float32)
