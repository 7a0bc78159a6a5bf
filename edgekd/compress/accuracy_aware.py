"""Accuracy-aware int8: the target's ``max_quantization_drop`` is a contract, not a hope.

Plain post-training int8 can lose accuracy silently, and usually a few layers cause most of the loss (an
activation range dominated by outliers, a depthwise conv with few weights per channel). Keeping exactly those
layers in float restores the accuracy while the rest stays int8.

This module is the format-independent half: the contract, the job a backend gets, the result it returns, and the
greedy float-layer search with its scoring, latency cost and atomic placement. Each format's own search (which
layers it can keep float, how it re-quantizes) is its backend's ``accuracy_aware_int8``, in its backend file
(``edgekd.backends.onnx``: onnxruntime's ``nodes_to_exclude``; ``edgekd.backends.tflite``: ai-edge-quantizer
recipes; ``edgekd.backends.openvino``: NNCF's own accuracy control).

Either way the result lists the layers that stayed float and what they cost in latency against plain int8,
measured in the same run. When no int8 model within ``max_float_fraction`` of float layers meets the contract
(or the fp32 model itself misses ``min_accuracy``), a ``ContractError`` says what the best attempt reached and
nothing is written.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.compress.calibration import Calibration
from edgekd.data.inputs import model_input
from edgekd.errors import ContractError, EdgekdError
from edgekd.timing import measure_interleaved

EvalSet = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class QuantContract:
    """``max_drop``: fp32 accuracy minus int8 accuracy, absolute, on every evaluation split given.
    ``min_accuracy``: an absolute floor for the int8 model (e.g. min_accuracy_ratio x teacher accuracy)."""

    max_drop: float
    min_accuracy: float | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.max_drop <= 1.0:
            raise EdgekdError(f"max_quantization_drop must lie in [0, 1], got {self.max_drop}", "use e.g. 0.01")


@dataclass
class QuantJob:
    """What a backend's accuracy-aware int8 search gets: the model, its fp32 and plain-int8 artifacts in this
    format, real calibration data and the validation split. Never the test split: the gate scores that once."""

    model: Any  # the PyTorch student (nn.Module)
    sample: np.ndarray
    fp32: Path
    plain: Any  # edgekd.backends.Artifact: the plain int8 that broke the contract (its details, e.g. the scheme)
    out: Path
    calibration: Calibration
    val: EvalSet
    contract: QuantContract
    max_float_fraction: float = 0.5
    threads: int = 1
    timing_x: np.ndarray | None = None
    log: Callable[[str], None] | None = None


@dataclass
class Attempt:
    float_layers: list[str]
    accuracy: list[float]  # per evaluation split
    drop: list[float]
    met: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class AccuracyAwareResult:
    """What was shipped (``path``), which layers stayed float, and what that cost against plain int8."""

    path: Path
    format: str
    method: str
    contract: QuantContract
    fp32_accuracy: list[float]
    plain_int8_accuracy: list[float]
    accuracy: list[float]
    drop: list[float]
    float_layers: list[str]
    quantized_layers: int
    candidate_layers: int
    attempts: list[Attempt]
    sensitivity: list[dict[str, Any]] = field(default_factory=list)
    latency_ms: dict[str, float] = field(default_factory=dict)  # fp32 / plain_int8 / shipped p50, same run
    latency_cost: float | None = None  # shipped p50 / plain int8 p50 - 1
    summary: str = ""
    float_tensors: list[str] = field(default_factory=list)  # ONNX: the activation tensors kept float
    # Where plain int8 diverged from fp32, per layer (edgekd.compress.int8_divergence), when it broke the contract
    int8_divergence: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"] = str(self.path)
        return d


def accuracy(logits: np.ndarray, y: np.ndarray) -> float:
    return float((logits.argmax(1) == y).mean()) if len(y) else 0.0


def fmt_acc(values: Sequence[float]) -> str:
    return "/".join(f"{v:.4f}" for v in values)


def contract_unmet(what: str, contract: QuantContract, attempts: list[Attempt], cap: int, total: int,
                    units: str, unit: str, fp32_acc: list[float]) -> ContractError:
    """The error when no float-layer budget meets the contract, naming the best attempt; nothing ships."""
    best = max(attempts, key=lambda a: (min(a.accuracy), -len(a.float_layers)))
    return ContractError(
        f"no {what} model meets the accuracy contract (max drop {contract.max_drop}"
        + (f", min accuracy {contract.min_accuracy}" if contract.min_accuracy is not None else "")
        + f") with at most {cap} of {total} {units} in float: the best attempt kept "
        f"{len(best.float_layers)} {unit} float {best.float_layers} and reached accuracy "
        f"{fmt_acc(best.accuracy)} vs fp32 {fmt_acc(fp32_acc)} (drop {fmt_acc(best.drop)}); nothing was shipped",
        "relax max_quantization_drop, allow fp16/fp32 in the target, raise max_float_fraction, or use "
        "quantization-aware training (edgekd.compress.qat)")


def check_sets(eval_sets: Sequence[EvalSet]) -> list[EvalSet]:
    sets = [(model_input(x), np.asarray(y)) for x, y in eval_sets]
    if not sets or any(len(y) == 0 for _, y in sets):
        raise EdgekdError("accuracy-aware quantization needs a non-empty evaluation split",
                          "pass the validation split (x_val, y_val)")
    return sets


def contract_met(contract: QuantContract, acc: list[float], fp32: list[float]) -> tuple[bool, list[float]]:
    drops = [f - a for f, a in zip(fp32, acc, strict=True)]
    ok = all(d <= contract.max_drop + 1e-12 for d in drops)
    if contract.min_accuracy is not None:
        ok = ok and all(a >= contract.min_accuracy - 1e-12 for a in acc)
    return ok, drops


def check_fp32_floor(contract: QuantContract, fp32_acc: list[float]) -> None:
    if contract.min_accuracy is not None and min(fp32_acc) < contract.min_accuracy:
        raise ContractError(
            f"no precision can meet the accuracy contract: even the fp32 model reaches only "
            f"{min(fp32_acc):.4f} < min_accuracy {contract.min_accuracy:.4f}; nothing was shipped",
            "relax min_accuracy_ratio in the target, or train a better student/teacher")


def check_fraction(max_float_fraction: float) -> None:
    if not 0.0 <= max_float_fraction <= 1.0:
        raise EdgekdError(f"max_float_fraction must lie in [0, 1], got {max_float_fraction}", "use e.g. 0.5")


@dataclass
class Scored:
    """One quantization with a given set of float layers, scored in the real runtime on every split."""

    accuracy: list[float]
    logit_mse: float
    path: Path
    details: dict[str, Any] = field(default_factory=dict)


def score_logits(session, sets: list[EvalSet], references: list[np.ndarray]) -> tuple[list[float], float]:
    """(accuracy per split, mean squared logit error vs the fp32 references) of a loaded int8 session."""
    accs, errs = [], []
    for (x, y), ref in zip(sets, references, strict=True):
        logits = session.run_batched(x)
        accs.append(accuracy(logits, y))
        errs.append(float(np.mean((logits - ref) ** 2)))
    return accs, float(np.mean(errs))


@dataclass(frozen=True)
class Candidate:
    """A choice the greedy search can make: ``label`` for the report, ``members`` the layers it keeps float."""

    label: str
    members: tuple[str, ...]


@dataclass
class Search:
    """The greedy float-layer search's outcome: what stayed float and the model that met (or missed) the contract."""

    labels: list[str]
    members: list[str]
    final: Scored
    drops: list[float]
    attempts: list[Attempt]
    met: bool


def greedy_float_search(score: Callable[[list[str]], Scored], ranked: Sequence[Candidate],
                        cost: Callable[[list[str]], int], cap: int, contract: QuantContract, fp32_acc: list[float],
                        plain: Scored, say: Callable[[str], None], what: str) -> Search:
    """Keep candidates float, most sensitive first, until the contract holds or the float budget (``cap``, in
    units of ``cost``) is spent: shared by the ONNX and TFLite searches."""
    ok, drops = contract_met(contract, plain.accuracy, fp32_acc)
    search = Search([], [], plain, drops, [Attempt([], plain.accuracy, drops, ok)], ok)
    if ok or cap <= 0:
        return search
    for candidate in ranked:
        trial = list(dict.fromkeys(search.members + list(candidate.members)))
        if cost(trial) > cap or trial == search.members:
            continue
        search.members, search.labels = trial, [*search.labels, candidate.label]
        scored = score(trial)
        ok, drops = contract_met(contract, scored.accuracy, fp32_acc)
        search.attempts.append(Attempt(list(trial), scored.accuracy, drops, ok))
        say(f"{what} contract: keep {candidate.label} float ({len(trial)} float) -> accuracy "
            f"{fmt_acc(scored.accuracy)}, drop {fmt_acc(drops)}")
        if ok:
            search.final, search.drops, search.met = scored, drops, True
            break
    return search


def latency_cost(timing_x: np.ndarray | None, threads: int, fp32: tuple[Path, str], plain: Path,
                  shipped: Path | None) -> tuple[dict[str, float], float | None]:
    """p50 of fp32, plain int8 and the shipped model, interleaved in one run, and the float layers' cost."""
    if timing_x is None:
        return {}, None
    paths = {"fp32": fp32, "plain_int8": (plain, "int8")}
    if shipped is not None:
        paths["shipped"] = (shipped, "int8")
    latency = measure_interleaved(paths, model_input(timing_x), threads).medians()
    latency.setdefault("shipped", latency["plain_int8"])
    return latency, latency["shipped"] / latency["plain_int8"] - 1.0


def place(final: Path, out: Path) -> Path:
    """Copy the chosen model to ``out`` by one rename: never a half-written artifact there."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=out.parent, prefix=f".{out.stem}-", suffix=out.suffix, delete=False) as fh:
        staged = Path(fh.name)
    try:
        shutil.copyfile(final, staged)
        staged.replace(out)
    except BaseException:
        staged.unlink(missing_ok=True)
        raise
    return out
