"""The gate rows of ``runtime.require_full_delegation`` judged on what the device's own tool saw.

The build checks operators against the delegate's documented list (``edgekd.compat``); only the device says what
its delegate really took. On Android, a partial or absent NNAPI/GPU delegation (``benchmark_model``) fails the row,
naming the operators that ran on the CPU; in a TensorRT engine, a compute layer left in float in an int8/fp16
engine (``trtexec --exportLayerInfo``) fails it, naming the layers. Like latency, the row counts only when the
measurement is the target device's (``on_device``); elsewhere it is unverified.
"""

from __future__ import annotations

from typing import Any

from edgekd.devices.records import Delegation, LayerPrecisions, read_record
from edgekd.gate_rows import BudgetCheck, DeviceMeasurement, budget_check
from edgekd.targets import TargetProfile

NAMES_SHOWN = 12


def _listing(names: list[str]) -> str:
    more = f" and {len(names) - NAMES_SHOWN} more" if len(names) > NAMES_SHOWN else ""
    return ", ".join(names[:NAMES_SHOWN]) + more


def delegation_words(d: Delegation) -> str:
    """'nnapi partial: 60 of 64 nodes in 2 partition(s); on the CPU: MEAN (x1), SOFTMAX (x1)'."""
    nodes = (f"{d.delegated_nodes} of {d.total_nodes} nodes" if d.total_nodes is not None
             else f"{d.delegate_kernels} delegate kernel(s)" if d.delegate_kernels is not None else "")
    parts = f" in {d.partitions} partition(s)" if d.partitions is not None else ""
    cpu = _listing([f"{op} (x{n})" for op, n in d.cpu_operators.items()]) or "none seen in the op profile"
    return f"{d.delegate} {d.status}" + (f": {nodes}{parts}" if nodes else "") + f"; on the CPU: {cpu}"


def _delegation_check(row: dict[str, Any], device: DeviceMeasurement, artifact: str) -> BudgetCheck:
    d = read_record(Delegation, row["delegation"], f"device result for {artifact}")
    if d.status == "full":
        cpu = 0
    elif d.cpu_nodes is not None:
        cpu = max(1, d.cpu_nodes)
    else:
        cpu = max(1, sum(d.cpu_operators.values()))
    return budget_check("full_delegation", artifact, cpu, 0, "nodes on the CPU", "<=", True, device.on_device,
                  f"{delegation_words(d)}; {device.where}")


def _precision_check(row: dict[str, Any], device: DeviceMeasurement, artifact: str) -> BudgetCheck:
    layers = read_record(LayerPrecisions, row["layer_precisions"], f"device result for {artifact}")
    named = _listing(layers.float_layers) or "none"
    return budget_check("full_delegation", artifact, len(layers.float_layers), 0, "float layers", "<=", True,
                  device.on_device, f"{layers.engine_precision} engine, compute layers left in float: {named}; "
                                    f"{device.where}")


def device_tool_checks(device: DeviceMeasurement, target: TargetProfile, artifact: str) -> list[BudgetCheck]:
    """The ``full_delegation`` row of one shipped artifact, when the target requires it and the device row that
    judges the artifact carries a delegation (Android) or layer precisions (TensorRT); else nothing."""
    if not target.runtime.require_full_delegation:
        return []
    row = device.extra  # the device tool's records: fields the report schema leaves open
    if row.get("delegation"):
        return [_delegation_check(row, device, artifact)]
    if row.get("layer_precisions"):
        return [_precision_check(row, device, artifact)]
    return []
