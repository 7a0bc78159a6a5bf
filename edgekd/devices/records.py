"""What a device's own tool says about where the model ran: delegation on Android, layer precisions in TensorRT.

Both are pydantic models so that a record read back from report.json is checked before the gate trusts it.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edgekd.errors import EdgekdError

Count = Annotated[int, Field(ge=0)]


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Delegation(_Record):
    """How much of the graph the target's delegate took on the device (TFLite ``benchmark_model``).

    ``status``: ``full`` (every node in the delegate), ``partial`` (some nodes fell back to the CPU), ``none`` (the
    delegate took nothing: the model ran on the CPU). Counts are None where the tool did not print them."""

    delegate: str
    status: Literal["full", "partial", "none"]
    total_nodes: Count | None = None
    delegated_nodes: Count | None = None
    cpu_nodes: Count | None = None
    partitions: Count | None = None
    delegate_kernels: Count | None = None
    cpu_operators: dict[str, Count] = {}  # operator -> nodes that ran on the CPU (op profiling)
    operators_by_delegate: dict[str, dict[str, Count]] = {}  # "cpu", "nnapi", "xnnpack"... -> operator -> nodes
    evidence: list[str] = []  # the tool's lines the verdict rests on


class LayerPrecision(_Record):
    """One layer of a TensorRT engine and the precision it was built in (``trtexec --exportLayerInfo``)."""

    name: str
    layer_type: str
    precision: str  # int8 | fp16 | fp32 | int32 | bool | unknown
    compute: bool  # does the arithmetic (convolution, matrix multiply): where a float fallback costs


class LayerPrecisions(_Record):
    """Every layer's realised precision; ``float_layers``: compute layers left in fp32 in an int8/fp16 engine."""

    engine_precision: str
    layers: list[LayerPrecision]
    counts: dict[str, Count]
    float_layers: list[str]


def read_record(kind: type[_Record], data: Any, where: str) -> _Record:
    """A record from report.json, validated: a hand-edited or foreign one is a clear error, never a crash."""
    try:
        return kind.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise EdgekdError(f"{where}: the {kind.__name__} record is invalid "
                          f"({'.'.join(str(p) for p in first['loc'])}: {first['msg']})",
                          "measure the device again with `edgekd bench` to rewrite it") from None
