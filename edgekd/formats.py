"""The format registry: one ``FormatSpec`` row per artifact format, read by export, runner, bundle, compat, report,
the latency cache, ``edgekd --version`` and the install checks.

A format has two halves that run in different places:

* the **backend** (``edgekd/backends/<name>.py``, a class with ``export``, ``precisions``, ``list_operators``,
  ``accuracy_aware_int8`` and ``from_target``): runs on the build host, may import torch. Its int8 search lives
  there too, built on the generic float-layer search of ``edgekd.compress.accuracy_aware``;
* the **session** (a ``edgekd_runner.Session`` subclass, named by the row): loads and runs the artifact with numpy
  and the runtime only, on the host (parity, benchmarks) and on the device. The runner imports nothing of edgekd,
  so the three built-in formats keep their sessions inside the standalone ``runner.py`` and the row names the
  class (checked against the runner's own table when it is looked up); any other format keeps its session in its
  backend file, which must then import nothing but the standard library, numpy and ``edgekd_runner`` at module
  level (torch inside functions only). That file is passed to the runner with ``--session-plugin``, shipped in
  device bundles and listed with its sha256 in the manifest, so the runner verifies it before importing it.

Everything else about a format is a field of its row, and every table that lists formats is derived from the rows:
the pip extra and its import names (``EXTRA_MODULES``), the distributions whose versions a result depends on
(``edgekd --version``, the latency cache key), what a device installs, whether an ONNX teacher can be exported to
it. Adding a format = that one backend file + one ``register_format(FormatSpec(...))`` row.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

from edgekd import runner
from edgekd.errors import EdgekdError


@dataclass(frozen=True)
class Extra:
    """A pip extra (pyproject.toml [project.optional-dependencies]): the import names it installs and the extras it
    includes. How a build tells, before any training, that a format's tools are missing (tests/test_targets.py
    checks the rows against pyproject.toml)."""

    name: str
    modules: tuple[str, ...]
    includes: tuple[str, ...] = ()


@dataclass(frozen=True)
class FormatSpec:
    """Everything edgekd needs to know about a format that isn't behaviour of its backend or session."""

    name: str
    module: str  # backend module: a dotted name, or the path of a torch-free plugin file
    backend: str  # class name of the backend in that module
    session: str  # class name of its runner session: in runner.py (built in) or in ``module`` (a plugin)
    extra: Extra | None = None  # installs the exporter and the runtime on the build host (None: nothing to install)
    # (distribution, what it does) whose versions a result depends on: listed by `edgekd --version`
    distributions: tuple[tuple[str, str], ...] = ()
    # Distributions that may provide the runtime, preferred first: the first is what a device installs; the first
    # installed names the runtime's version in the latency cache key (a runtime upgrade invalidates the entries)
    runtime_distributions: tuple[str, ...] = ()
    device_note: str = ""
    colour: str = "#444444"  # in plots
    # An ONNX (or scikit-learn) teacher: "as-is" = it is this format's artifact already; "converts" = the exporter
    # reads it; "" = this format cannot take it
    onnx_teacher: Literal["as-is", "converts", ""] = ""

    @property
    def builtin_session(self) -> bool:
        """The session lives in runner.py itself (nothing to ship beside it)."""
        return isinstance(getattr(runner, self.session, None), type)

    @property
    def plugin_file(self) -> Path | None:
        """The file holding the session, to pass to the runner and ship to devices (None: built into runner.py)."""
        return None if self.builtin_session else Path(self._module().__file__ or self.module).resolve()

    def _module(self) -> ModuleType:
        return load_module(self.module)

    def backend_class(self) -> type:
        return getattr(self._module(), self.backend)

    def session_class(self) -> type:
        """The row's session class, which must be the one the runner runs this format with."""
        home = runner if self.builtin_session else self._module()  # a plugin registers its session on import
        cls = getattr(home, self.session, None)
        if cls is None or runner.SESSIONS.get(self.name) is not cls:
            raise EdgekdError(f"format '{self.name}' names session class '{self.session}', but the runner runs "
                              f"'{self.name}' with {runner.SESSIONS.get(self.name)}",
                              "make the row's session the class that declares this format and registers it")
        return cls

    @property
    def suffix(self) -> str:
        return self.session_class().suffixes[0]

    @property
    def runtime(self) -> str:
        return self.session_class().runtime

    @property
    def device_requirement(self) -> str:
        """What `pip install` needs on the device to run it."""
        return self.runtime_distributions[0] if self.runtime_distributions else ""

    def runtime_version(self) -> str:
        """The installed version of the format's runtime on this host (part of every latency cache key)."""
        for dist in self.runtime_distributions:
            try:
                return f"{self.runtime} {importlib.metadata.version(dist)}"
            except importlib.metadata.PackageNotFoundError:
                continue
        return f"{self.runtime} unknown"


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
    loaded = runner.import_plugin(module)
    sys.modules.setdefault(loaded.__name__, loaded)
    _MODULES[module] = loaded
    return loaded


def artifact_suffixes() -> str:
    """The registered formats' artifact suffixes, for messages: '.onnx/.xml/.tflite'."""
    return "/".join(spec.suffix for spec in FORMATS.values())


def version_distributions() -> list[tuple[str, str]]:
    """(distribution, what it does) for `edgekd --version`: torch, then every format's tools."""
    rows = [("torch", "training, export")]
    for spec in FORMATS.values():
        rows += [d for d in spec.distributions if d not in rows]
    return rows


def extra_modules(extra: str) -> tuple[str, ...]:
    """The modules ``pip install 'edgekd[extra]'`` provides, those of the extras it includes too."""
    included = [m for sub in EXTRA_INCLUDES.get(extra, ()) for m in extra_modules(sub)]
    return tuple(dict.fromkeys([*included, *EXTRA_MODULES.get(extra, ())]))


register_format(FormatSpec(
    "onnx", "edgekd.backends.onnx", "OnnxBackend", "OnnxSession", Extra("onnx", ("onnx", "onnxscript", "onnxruntime")),
    (("onnx", "ONNX export"), ("onnxruntime", "ONNX runtime")), ("onnxruntime",), colour="#1f77b4",
    onnx_teacher="as-is"))
register_format(FormatSpec(
    "openvino", "edgekd.backends.openvino", "OpenVinoBackend", "OpenVinoSession",
    Extra("openvino", ("openvino", "nncf"), includes=("onnx",)),
    (("openvino", "OpenVINO runtime"), ("nncf", "OpenVINO int8")), ("openvino",), colour="#d62728",
    onnx_teacher="converts"))
register_format(FormatSpec(
    "tflite", "edgekd.backends.tflite", "TfliteBackend", "TfliteSession",
    Extra("tflite", ("litert_torch", "ai_edge_quantizer", "ai_edge_litert", "torchao"), includes=("onnx",)),
    (("litert-torch", "TFLite export"), ("ai-edge-quantizer", "TFLite int8"),
     ("ai-edge-litert", "LiteRT (TFLite runtime)")),
    ("ai-edge-litert", "ai_edge_litert", "tflite-runtime"),
    device_note="on boards without ai-edge-litert wheels: tflite-runtime with numpy<2", colour="#2ca02c"))

# Extras that install no format: pruning, table readers and sklearn teachers, library teachers.
OTHER_EXTRAS = (Extra("prune", ("torch_pruning",)), Extra("tabular", ("pyarrow", "skl2onnx", "skops")),
                Extra("teachers", ("torchvision", "timm")))
_EXTRAS = [*(s.extra for s in FORMATS.values() if s.extra is not None), *OTHER_EXTRAS]
EXTRA_MODULES: dict[str, tuple[str, ...]] = {e.name: e.modules for e in _EXTRAS}
EXTRA_INCLUDES: dict[str, tuple[str, ...]] = {e.name: e.includes for e in _EXTRAS if e.includes}
