"""Teacher architectures built by a model library (``torchvision:resnet18``, ``timm:mobilenetv3_large_100``).

One row per library prefix: how to build the named network *without* weights (``weights=None`` /
``pretrained=False``: nothing is downloaded, ever), the install hint, and the input normalisation the library's
models expect (ImageNet statistics for torchvision; each timm model's own ``pretrained_cfg``). The user's state
dict supplies the weights. Networks are never re-implemented here: the libraries are the source of truth.

torchvision's PyPI wheels are CUDA builds whose compiled ops (detection: nms, roi_align...) cannot load beside the
CPU torch wheel; the classification networks are plain Python and never call those ops, but torchvision's import
registers fake kernels for two of them and fails when they are absent. ``import_torchvision`` declares those two
schemas (no kernel) in that case only, so the model zoo imports; calling a detection op then still fails loudly.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from edgekd.data.dataset import NORMALIZATION_PRESETS
from edgekd.errors import EdgekdError, MissingDependencyError

_SHIM: Any = None  # the torch.library.Library holding the declared schemas: dropped, it would unregister them


@dataclass(frozen=True)
class ArchLibrary:
    """A model library usable as ``--teacher-arch PREFIX:NAME``."""

    prefix: str
    package: str
    build: Callable[[str, tuple[int, ...], int, dict[str, Any]], nn.Module]  # name, input shape, classes, kwargs
    names: Callable[[], list[str]]  # every architecture name the library builds
    normalization: Callable[[str], dict[str, Any]]  # the statistics the named network expects


def import_torchvision() -> Any:
    """``import torchvision``, also when its compiled ops belong to another torch build (see the module doc)."""
    global _SHIM
    spec = importlib.util.find_spec("torchvision")
    if spec is None:
        raise MissingDependencyError("torchvision", "teachers", "--teacher-arch torchvision:NAME")
    if _SHIM is None and spec.submodule_search_locations:
        compiled = [os.path.join(d, f) for d in spec.submodule_search_locations for f in os.listdir(d)
                    if f.startswith("_C.") and f.endswith((".so", ".pyd"))]
        try:
            for path in compiled:
                torch.ops.load_library(path)
        except OSError:
            _SHIM = torch.library.Library("torchvision", "FRAGMENT")
            for op in ("nms", "qnms"):  # the two ops torchvision's import registers fakes for unconditionally
                _SHIM.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    return importlib.import_module("torchvision")


def _torchvision_build(name: str, shape: tuple[int, ...], classes: int, kwargs: dict[str, Any]) -> nn.Module:
    if len(shape) != 3 or shape[0] != 3:
        raise EdgekdError(f"torchvision:{name} takes RGB images (3, H, W); the data has shape {shape}",
                          "give RGB photos; --normalization imagenet (the default for torchvision names) loads RGB")
    return import_torchvision().models.get_model(name, weights=None, num_classes=classes, **kwargs)


def _torchvision_names() -> list[str]:
    return list(import_torchvision().models.list_models())


def _timm() -> Any:
    if importlib.util.find_spec("timm") is None:
        raise MissingDependencyError("timm", "teachers", "--teacher-arch timm:NAME")
    import_torchvision()  # timm imports torchvision
    return importlib.import_module("timm")


def _timm_build(name: str, shape: tuple[int, ...], classes: int, kwargs: dict[str, Any]) -> nn.Module:
    if len(shape) != 3:
        raise EdgekdError(f"timm:{name} takes images (C, H, W); the data has shape {shape}", "give image data")
    return _timm().create_model(name, pretrained=False, num_classes=classes, in_chans=shape[0], **kwargs)


def _timm_normalization(name: str) -> dict[str, Any]:
    cfg = _timm().get_pretrained_cfg(name)
    mean, std = (getattr(cfg, "mean", None), getattr(cfg, "std", None)) if cfg is not None else (None, None)
    if not mean or not std:
        return {"mean": list(IMAGENET[0]), "std": list(IMAGENET[1])}
    return {"mean": list(mean), "std": list(std)}


IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))

LIBRARIES: dict[str, ArchLibrary] = {
    "torchvision": ArchLibrary("torchvision", "torchvision", _torchvision_build, _torchvision_names,
                               lambda name: {"mean": list(IMAGENET[0]), "std": list(IMAGENET[1])}),
    "timm": ArchLibrary("timm", "timm", _timm_build, lambda: list(_timm().list_models()), _timm_normalization),
}


def split_arch(arch: str | None) -> tuple[ArchLibrary, str] | None:
    """``"torchvision:resnet18"`` -> (its library row, ``"resnet18"``); None for edgekd's own names."""
    if not arch or ":" not in arch:
        return None
    prefix, name = arch.split(":", 1)
    if prefix not in LIBRARIES:
        raise EdgekdError(f"unknown architecture library '{prefix}' in --teacher-arch {arch}",
                          f"use one of: {', '.join(f'{p}:NAME' for p in LIBRARIES)}, or an edgekd architecture name")
    return LIBRARIES[prefix], name


def build_library_model(arch: str, input_shape: tuple[int, ...], num_classes: int,
                        config: dict[str, Any] | None = None) -> nn.Module:
    """The named network with ``num_classes`` outputs and random weights: nothing downloaded."""
    found = split_arch(arch)
    assert found is not None, arch
    library, name = found
    names = library.names()
    if name not in names:
        close = difflib.get_close_matches(name, names, n=5)
        raise EdgekdError(f"{library.prefix} has no architecture '{name}'",
                          f"did you mean: {', '.join(close)}" if close else f"see {library.package}'s model list")
    try:
        return library.build(name, tuple(input_shape), num_classes, dict(config or {}))
    except EdgekdError:
        raise
    except (TypeError, ValueError) as exc:
        raise EdgekdError(f"cannot build {arch} with {config or {}}: {exc}",
                          "check --teacher-config against the library's constructor") from None


def library_normalization(arch: str | None) -> str | dict[str, Any] | None:
    """The normalisation a library network expects (``--normalization``'s default for such a teacher): a preset
    name when it is one (``imagenet``, ``inception``), else its mean/std."""
    found = split_arch(arch)
    if found is None:
        return None
    library, name = found
    stats = library.normalization(name)
    for preset, (mean, std) in NORMALIZATION_PRESETS.items():
        if np.allclose(stats["mean"], mean) and np.allclose(stats["std"], std):
            return preset
    return stats
