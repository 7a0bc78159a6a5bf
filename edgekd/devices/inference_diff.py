"""Parse TFLite's ``inference_diff`` tool: the delegate's outputs against single-threaded CPU kernels, on the device.

Format: tensorflow/lite/tools/evaluation/tasks/inference_diff/README.md (TF 2.x / LiteRT): "Num evaluation runs:
50", "Reference run latency: avg=84364.2(us), std_dev=12525(us)", "Test run latency: ...", one "OutputDiff[i]:
avg_error=..., std_dev=..." per output tensor (the absolute difference of raw values, per element). The inputs are
random Gaussian data, so this is agreement with the CPU reference, not accuracy against labels.
"""

from __future__ import annotations

import math
import re
from typing import Any

NUM = r"-?\d+(?:\.\d*)?(?:[eE][+-]?\d+)?"
_RUNS = re.compile(r"Num evaluation runs: (\d+)")
_LATENCY = re.compile(rf"(Reference|Test) run latency: avg=({NUM})\(us\), std_dev=({NUM})\(us\)")
_DIFF = re.compile(rf"OutputDiff\[(\d+)\]: avg_error=({NUM}), std_dev=({NUM})")


class InferenceDiffError(ValueError):
    """inference_diff's output does not say what edgekd needs."""


def _value(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise InferenceDiffError(f"inference_diff printed an unusable value {text[:40]!r}")
    return value


def parse_output(text: str) -> dict[str, Any]:
    runs = _RUNS.search(text)
    diffs = [{"output": int(i), "avg_error": _value(a), "std_dev": _value(s)} for i, a, s in _DIFF.findall(text)]
    if runs is None or not diffs:
        raise InferenceDiffError("inference_diff printed no 'Num evaluation runs' or 'OutputDiff[i]: avg_error=' "
                                 "line")
    latency = {kind.lower(): {"avg_us": _value(avg), "std_dev_us": _value(std)}
               for kind, avg, std in _LATENCY.findall(text)}
    return {"tool": "inference_diff", "runs": int(runs.group(1)), "latency": latency, "output_diff": diffs[:64],
            "max_avg_error": max(d["avg_error"] for d in diffs),
            "inputs": "random Gaussian data (the tool's own): agreement with the CPU reference, not accuracy"}
