"""report.md and report.html rows for device results: where each number was measured (the device, this host, or
emulated), the delegation per delegate on Android and the layer precisions of a TensorRT engine."""

from __future__ import annotations

import html
from typing import Any

from edgekd.devices.gate_rules import delegation_words
from edgekd.devices.records import Delegation, LayerPrecisions


def where_measured(measured_on: dict[str, Any]) -> str:
    """'device (identity)', 'emulated', or 'host, not the target (mismatch)': the column every row carries."""
    rule = (measured_on.get("identity") or {}).get("rule", "?")
    if measured_on.get("where") == "emulated" or rule == "emulated":
        return "emulated"
    if measured_on.get("is_target_device"):
        return f"target device ({rule})"
    return f"{measured_on.get('where') or 'host'}, not the target ({rule})"


def _num(x: float | None, fmt: str = ".4f") -> str:
    return "-" if x is None else format(x, fmt)


def _detail(row: dict[str, Any]) -> str:
    """Delegation or engine precision in words, from the validated records (a malformed one is said, not shown)."""
    try:
        if row.get("delegation"):
            diff = row.get("delegate_vs_cpu") or {}
            versus = (f"; outputs vs the CPU on the device: mean abs. difference up to {diff['max_avg_error']:.3g}"
                      if isinstance(diff.get("max_avg_error"), (int, float)) else "")
            return delegation_words(Delegation.model_validate(row["delegation"])) + versus
        if row.get("layer_precisions"):
            layers = LayerPrecisions.model_validate(row["layer_precisions"])
            counts = ", ".join(f"{n} {p}" for p, n in layers.counts.items())
            floats = ", ".join(layers.float_layers[:12]) or "none"
            return f"{layers.engine_precision} engine: {counts} layers; left in float: {floats}"
    except ValueError:
        return "(unreadable record)"
    return ""


def _rows(report: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [(d, a) for d in report.get("device_results") or [] for a in d.get("artifacts") or []]


def markdown_lines(report: dict[str, Any]) -> list[str]:
    """'## Measured on devices': one row per device and artifact, with where it was measured and what ran where."""
    rows = _rows(report)
    if not rows:
        return []
    out = ["## Measured on devices", "The table above was measured on the build host; these rows on the devices "
           "(`edgekd bench`). Accuracy on a device row is the host's unless the row says otherwise.", "",
           "| device | measured | artifact | runtime | p50 ms | p95 ms | peak MB | delegation / engine precision |",
           "|---|---|---|---|---|---|---|---|"]
    for d, a in rows:
        lat = a.get("latency_ms") or {}
        cells = [str(d.get("remote")), where_measured(d.get("measured_on") or {}), str(a.get("path")),
                 f"{a.get('runtime')} {a.get('runtime_version') or ''}".strip(), _num(lat.get("p50")),
                 _num(lat.get("p95")), _num(a.get("peak_memory_mb"), ".1f"), _detail(a) or "-"]
        out.append("| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |")
    return [*out, ""]


def html_section(report: dict[str, Any]) -> str:
    """Operators per delegate (Android) and layer precisions (TensorRT), every cell escaped."""
    parts = []
    for d, a in _rows(report):
        head = f"{d.get('remote')}: {a.get('path')} ({where_measured(d.get('measured_on') or {})})"
        table = _delegate_table(a) if a.get("delegation") else _layer_table(a) if a.get("layer_precisions") else ""
        if table:
            parts.append(f"<h3>{html.escape(head)}</h3><p>{html.escape(_detail(a))}</p>{table}")
    return "".join(parts)


def _table(head: list[str], rows: list[list[Any]], classes: list[str]) -> str:
    body = []
    for row, cls in zip(rows, classes, strict=True):
        cells = "".join(f"<td>{html.escape(str(c))}</td>" for c in row)
        body.append(f'<tr class="{cls}">{cells}</tr>' if cls else f"<tr>{cells}</tr>")
    return ('<div class="scroll"><table><thead><tr>' + "".join(f"<th>{html.escape(h)}</th>" for h in head)
            + f"</tr></thead><tbody>{''.join(body)}</tbody></table></div>")


def _delegate_table(a: dict[str, Any]) -> str:
    try:
        d = Delegation.model_validate(a["delegation"])
    except ValueError:
        return ""
    rows = [[home, op, n] for home, ops in d.operators_by_delegate.items() for op, n in ops.items()]
    return _table(["runs on", "operator / node type", "nodes"], rows,
                  ["fail" if r[0] == "cpu" and d.delegate != "xnnpack" else "" for r in rows])


def _layer_table(a: dict[str, Any]) -> str:
    try:
        layers = LayerPrecisions.model_validate(a["layer_precisions"])
    except ValueError:
        return ""
    floats = set(layers.float_layers)
    rows = [[la.name, la.layer_type, la.precision, "left in float" if la.name in floats else ""]
            for la in layers.layers]
    return _table(["layer", "type", "precision", ""], rows, ["fail" if r[3] else "" for r in rows])
