"""The format registry: one ``FormatSpec`` row per artifact format, read by export, runner, bundle, compat and report.

A format has two halves that run in different places:

* the **backend** (``edgekd/backends/<name>.py``, a class with ``export``, ``precisions``, ``list_operators``,
  ``accuracy_aware_int8`` and ``from_target``): runs on the build host, may import torch;
* the **session** (a ``edgekd_runner.Session`` subclass): loads and runs the artifact with numpy and the runtime
  only, on the host (parity, benchmarks) and on the device. The three built-in formats have their sessions inside
  the standalone ``runner.py``; any other format keeps its session in its backend file, which must then import
  nothing but the standard library, numpy and ``edgekd_runner`` at module level (torch inside functions only).
  That file is passed to the runner with ``--session-plugin``, shipped in device bundles and listed with its
  sha256 in the manifest, so the runner verifies it before importing it.

Adding a format = that one backend file + one ``register_format(FormatSpec(...))`` row.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from edgekd.errors import EdgekdError


@dataclass(frozen=True)
class FormatSpec:
    """Everything edgekd needs to know about a format that isn't behaviour of its backend or session."""

    name: str
    module: str  # backend module: a dotted name, or the path of a torch-free plugin file
    backend: str  # class name of the backend in that module
    extra: str  # pip extra that installs the exporter and the runtime on the build host
    device_requirement: str  # what `pip install` needs on the device to run it
    device_note: str = ""
    colour: str = "#444444"  # in plots
    builtin_session: bool = False  # the session lives in runner.py itself (nothing to ship beside it)

    @property
    def plugin_file(self) -> Path | None:
        """The file holding the session, to pass to the runner and ship to devices (None: built into runner.py)."""
        return None if self.builtin_session else Path(self._module().__file__ or self.module).resolve()

    def _module(self) -> ModuleType:
        return load_module(self.module)

    def backend_class(self) -> type:
        return getattr(self._module(), self.backend)

    def session_class(self) -> type:
        from edgekd import runner

        self._module()  # a plugin registers its session with the runner on import
        return runner.session_for_format(self.name)

    @property
    def suffix(self) -> str:
        return self.session_class().suffixes[0]

    @property
    def runtime(self) -> str:
        return self.session_class().runtime


# What each pip extra (pyproject.toml [project.optional-dependencies]) installs, as import names, and the extras it
# includes: how a build tells, before any training, that a format's tools are missing (tests/test_targets.py checks
# it against pyproject.toml).
EXTRA_MODULES: dict[str, tuple[str, ...]] = {
    "onnx": ("onnx", "onnxscript", "onnxruntime"),
    "openvino": ("openvino", "nncf"),
    "tflite": ("litert_torch", "ai_edge_quantizer", "ai_edge_litert", "torchao"),
    "prune": ("torch_pruning",),
    "tabular": ("pyarrow", "skl2onnx", "skops"),
    "teachers": ("torchvision", "timm"),
}
EXTRA_INCLUDES: dict[str, tuple[str, ...]] = {"openvino": ("onnx",), "tflite": ("onnx",)}


def extra_modules(extra: str) -> tuple[str, ...]:
    """The modules ``pip install 'edgekd[extra]'`` provides, those of the extras it includes too."""
    included = [m for sub in EXTRA_INCLUDES.get(extra, ()) for m in extra_modules(sub)]
    return tuple(dict.fromkeys([*included, *EXTRA_MODULES.get(extra, ())]))


FORMATS: dict[str, FormatSpec] = {}
_MODULES: dict[str, ModuleType] = {}


def register_format(spec: FormatSpec) -> FormatSpec:
    FORMATS[spec.name] = spec
    return spec


def get_format(name: str) -> FormatSpec:
    if name not in FORMATS:
        raise EdgekdError(f"unknown format '{name}'", f"use one of: {', '.join(FORMATS)}")
    return FORMATS[name]


def get_backend(name: str, **options: Any):
    """The backend for format ``name``; ``options`` go to its constructor (e.g. ``integer_io`` for tflite)."""
    return get_format(name).backend_class()(**options)


def load_module(module: str) -> ModuleType:
    """Import a backend module by dotted name, or a plugin file by path (once: its session registers on import)."""
    if module in _MODULES:
        return _MODULES[module]
    if not module.endswith(".py"):
        _MODULES[module] = importlib.import_module(module)
        return _MODULES[module]
    from edgekd import runner

    loaded = runner.import_plugin(module)
    sys.modules.setdefault(loaded.__name__, loaded)
    _MODULES[module] = loaded
    return loaded


register_format(FormatSpec(
    "onnx", "edgekd.backends.onnx", "OnnxBackend", extra="onnx", device_requirement="onnxruntime",
    colour="#1f77b4", builtin_session=True))
register_format(FormatSpec(
    "openvino", "edgekd.backends.openvino", "OpenVinoBackend", extra="openvino", device_requirement="openvino",
    colour="#d62728", builtin_session=True))
register_format(FormatSpec(
    "tflite", "edgekd.backends.tflite", "TfliteBackend", extra="tflite", device_requirement="ai-edge-litert",
    device_note="on boards without ai-edge-litert wheels: tflite-runtime with numpy<2", colour="#2ca02c",
    builtin_session=True))
