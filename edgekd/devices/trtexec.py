"""Parse what TensorRT's ``trtexec`` writes: its log, ``--exportTimes`` and ``--exportLayerInfo`` JSON.

Formats: trtexec of TensorRT 8.5-10.x (samples/trtexec/trtexec.cpp, samples/common/sampleReporting.cpp,
sampleEngines.cpp; the developer guide's "trtexec" section). The device is a foreign machine: its files are input,
so anything malformed is a ``TrtexecOutputError`` saying what was expected, never a traceback.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from edgekd.devices.records import LayerPrecision, LayerPrecisions

MAX_JSON_CHARS = 64 << 20
NUM = r"-?\d+(?:\.\d*)?(?:[eE][+-]?\d+)?"
_BUILT = re.compile(rf"Engine built in ({NUM}) sec")
_VERSION = re.compile(r"TensorRT version: (\d+(?:\.\d+){1,3})|\[TensorRT v(\d+)\]")
_MANAGED = re.compile(r"TensorRT-managed allocation in ([\w ]+?): CPU [+-]?\d+, GPU [+-]?\d+, now: CPU (\d+), "
                      r"GPU (\d+) \(MiB\)")
_LATENCY = re.compile(r"\] Latency: (.*)$", re.MULTILINE)
_PRECISIONS = (("int8", "Int8"), ("fp8", "FP8"), ("fp16", "FP16"), ("fp16", "Half"), ("fp32", "FP32"),
               ("fp32", "Float"), ("int32", "Int32"), ("int64", "Int64"), ("bool", "Bool"))
_ORDER = {"int8": 0, "fp8": 1, "fp16": 2, "fp32": 3}
_COMPUTE = re.compile(r"conv|gemm|matmul|matrix|fullyconnected|linear", re.IGNORECASE)
FLOAT_FOR = {"int8": ("fp16", "fp32"), "fp16": ("fp32",)}  # what counts as left in float, per engine precision


class TrtexecOutputError(ValueError):
    """trtexec's log or files do not say what edgekd needs; the message says what is missing."""


@dataclass
class TrtexecLog:
    passed: bool
    version: str | None = None
    build_s: float | None = None
    device_memory_mb: float | None = None
    summary: dict[str, float] = field(default_factory=dict)  # the "Latency: min = ... ms" line, in ms
    errors: list[str] = field(default_factory=list)


def _finite(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise TrtexecOutputError(f"trtexec wrote an unusable {what}: {str(value)[:40]!r}")
    return float(value)


def parse_log(text: str) -> TrtexecLog:
    """Pass/fail (``&&&& PASSED`` / ``&&&& FAILED``), version, engine build time, TensorRT-managed device memory
    after the engine was loaded (the build's own allocations left out), the summary latency line, [E] lines."""
    log = TrtexecLog(passed="&&&& PASSED" in text and "&&&& FAILED" not in text)
    if (v := _VERSION.search(text)) is not None:
        log.version = v.group(1) or _version_from_int(v.group(2))
    if (b := _BUILT.search(text)) is not None:
        log.build_s = _finite(float(b.group(1)), "engine build time")
    managed = [int(m.group(3)) for m in _MANAGED.finditer(text) if "building" not in m.group(1)]
    log.device_memory_mb = float(max(managed)) if managed else None
    if (lat := _LATENCY.search(text)) is not None:
        pairs = re.findall(rf"([\w()%]+) = ({NUM}) ms", lat.group(1))
        log.summary = {k: _finite(float(v), "latency") for k, v in pairs}
    log.errors = [ln.split("[E]", 1)[1].strip()[:300] for ln in text.splitlines() if "[E]" in ln][:5]
    return log


def _version_from_int(v: str) -> str:
    """trtexec's banner writes 8.6.1 as v8601 and 10.3.0 as v100300."""
    if len(v) >= 6:
        return f"{int(v[:-4])}.{int(v[-4:-2])}.{int(v[-2:])}"
    return f"{int(v[:-3])}.{int(v[-3:-2])}.{int(v[-2:])}" if len(v) == 4 else v


def _load_json(text: str, what: str) -> Any:
    if len(text) > MAX_JSON_CHARS:
        raise TrtexecOutputError(f"trtexec's {what} is over {MAX_JSON_CHARS} characters")
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise TrtexecOutputError(f"trtexec's {what} is not JSON ({str(exc)[:80]})") from None


def parse_times(text: str) -> list[float]:
    """Each timed inference's ``latencyMs`` (host-to-host, H2D + compute + D2H) from ``--exportTimes``: a list of
    ``{"startEnqMs", "endEnqMs", "startComputeMs", "endComputeMs", ..., "latencyMs", "computeMs"}``."""
    data = _load_json(text, "--exportTimes file")
    if not isinstance(data, list) or not data or not all(isinstance(d, dict) for d in data):
        raise TrtexecOutputError("trtexec's --exportTimes file is not a non-empty list of timing records")
    if any("latencyMs" not in d for d in data):
        raise TrtexecOutputError("trtexec's --exportTimes records have no 'latencyMs'")
    return [_finite(d["latencyMs"], "latencyMs") for d in data]


def precision_of(datatype: str) -> str:
    """'Row major linear FP32' -> fp32, 'Four wide channel vectorized row major Int8 format' -> int8."""
    for name, token in _PRECISIONS:
        if re.search(rf"\b{token}\b", datatype):
            return name
    return "unknown"


def _layer(item: Any) -> LayerPrecision:
    if isinstance(item, str):  # --profilingVerbosity below detailed: names only
        return LayerPrecision(name=item[:200], layer_type="unknown", precision="unknown", compute=False)
    if not isinstance(item, dict) or not isinstance(item.get("Name"), str):
        raise TrtexecOutputError("a layer of trtexec's --exportLayerInfo file has no 'Name'")
    kind = str(item.get("LayerType") or item.get("ParameterType") or "unknown")[:100]
    tensors = [t for key in ("Inputs", "Outputs") for t in (item.get(key) or []) if isinstance(t, dict)]
    inputs = [precision_of(str(t.get("Format/Datatype", ""))) for t in (item.get("Inputs") or [])
              if isinstance(t, dict)]
    found = [p for p in inputs if p in _ORDER] or [precision_of(str(t.get("Format/Datatype", ""))) for t in tensors]
    ranked = [p for p in found if p in _ORDER]
    precision = min(ranked, key=_ORDER.get) if ranked else (found[0] if found else "unknown")
    return LayerPrecision(name=item["Name"][:200], layer_type=kind, precision=precision,
                          compute=bool(_COMPUTE.search(kind)) and kind.lower() != "reformat")


def parse_layers(text: str, engine_precision: str) -> LayerPrecisions:
    """Each layer's realised precision (its inputs' datatype) from ``--exportLayerInfo`` (``{"Layers": [...],
    "Bindings": [...]}``); a compute layer in float inside an int8/fp16 engine is a ``float_layers`` entry."""
    data = _load_json(text, "--exportLayerInfo file")
    layers = data.get("Layers") if isinstance(data, dict) else None
    if not isinstance(layers, list) or not layers:
        raise TrtexecOutputError("trtexec's --exportLayerInfo file has no 'Layers' list")
    parsed = [_layer(item) for item in layers[:100_000]]
    counts: dict[str, int] = {}
    for layer in parsed:
        counts[layer.precision] = counts.get(layer.precision, 0) + 1
    floats = FLOAT_FOR.get(engine_precision, ())
    return LayerPrecisions(engine_precision=engine_precision, layers=parsed, counts=dict(sorted(counts.items())),
                           float_layers=[la.name for la in parsed if la.compute and la.precision in floats])
