"""Feature taps: forward hooks on modules named by their dotted path (``features.3``, ``block.conv``).

Tapping by name rather than by architecture-specific code is what lets any teacher/student pair be distilled,
CNN or MLP: a loss asks for ``("features", "features")`` and the trainer hooks whatever modules those are.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

import torch
from torch import nn

from edgekd.errors import EdgekdError


def module_names(model: nn.Module) -> list[str]:
    """Every addressable module path of ``model`` (the root itself is ``""`` and is left out)."""
    return [name for name, _ in model.named_modules() if name]


def resolve_module(model: nn.Module, path: str, role: str = "model") -> nn.Module:
    """The submodule at ``path``; a path naming nothing is the user's typo, so suggest the nearest names."""
    modules = dict(model.named_modules())
    if path in modules and path:
        return modules[path]
    names = module_names(model)
    nearest = difflib.get_close_matches(path, names, n=5, cutoff=0.3) or names[:5]
    raise EdgekdError(
        f"feature path '{path}' names no module of the {role} ({type(model).__name__})",
        f"nearest module names: {', '.join(nearest) if nearest else '(the model has no submodules)'}",
    )


def _first_tensor(output: object) -> torch.Tensor:
    """Modules may return tuples (e.g. attention blocks); the first tensor is the feature map."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)):
        for item in output:
            if isinstance(item, torch.Tensor):
                return item
    raise TypeError(f"tapped module returned {type(output).__name__}, not a tensor")


class FeatureTaps:
    """Hooks that keep the latest output of each named module in ``self.outputs`` (path -> tensor).

    Kept registered for a whole training run (cheap), cleared by the caller each step, removed by ``close()``.
    """

    def __init__(self, model: nn.Module, paths: Iterable[str], role: str = "model") -> None:
        self.outputs: dict[str, torch.Tensor] = {}
        self._handles = []
        for path in dict.fromkeys(paths):
            module = resolve_module(model, path, role)
            try:
                self._handles.append(module.register_forward_hook(self._hook(path)))
            except RuntimeError as exc:  # TorchScript modules refuse Python hooks
                self.close()
                raise EdgekdError(
                    f"cannot tap '{path}' of the {role}: {str(exc).splitlines()[0]}",
                    "use logit-only losses (kd, dkd, ce) with this model, or load it as a state_dict with its "
                    "architecture (--teacher-arch) so its modules can be hooked",
                ) from None

    def _hook(self, path: str):
        def hook(_module: nn.Module, _inputs: object, output: object) -> None:
            self.outputs[path] = _first_tensor(output)

        return hook

    def take(self) -> dict[str, torch.Tensor]:
        """The outputs captured since the last call, and forget them (so stale features are never reused)."""
        out, self.outputs = self.outputs, {}
        return out

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def __enter__(self) -> FeatureTaps:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
