"""Predict a candidate's latency from its per-layer features: non-negative least squares over the timed ones.

Latency ~ c0 + sum_k c_k * feature_k with every c_k >= 0 (a layer never makes a model faster), fitted with
``scipy.optimize.nnls`` on the candidates measured on this target. Its error is measured, not assumed: the median
leave-one-out |predicted - measured| / measured, which the search uses as the margin on a prediction.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import nnls

from edgekd.selection.candidates import FEATURES, Candidate, feature_matrix

MIN_POINTS = 3  # below this the fit is a guess: the search measures instead of predicting


@dataclass
class LatencyPredictor:
    coefficients: np.ndarray  # per FEATURES column, in ms per (scaled) unit
    scale: np.ndarray
    points: int
    loo_error_pct: float | None  # median leave-one-out error, %; None with too few points

    def predict(self, candidates: list[Candidate]) -> np.ndarray:
        return (feature_matrix(candidates) / self.scale) @ self.coefficients

    def summary(self) -> str:
        err = "n/a" if self.loo_error_pct is None else f"{self.loo_error_pct:.1f} %"
        return f"NNLS over {self.points} timed candidates, median leave-one-out error {err}"

    def to_dict(self) -> dict:
        per_unit = self.coefficients / self.scale
        return {"kind": "nnls", "features": list(FEATURES), "points": self.points,
                "coefficients": {f: float(c) for f, c in zip(FEATURES, per_unit, strict=True)},
                "loo_error_pct": self.loo_error_pct, "summary": self.summary()}


def _fit(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scale = np.maximum(np.abs(x).max(axis=0), 1e-12)
    coef, _ = nnls(x / scale, y)
    return coef, scale


def fit_predictor(candidates: list[Candidate], latency_ms: list[float]) -> LatencyPredictor | None:
    """The fit over the timed candidates, with its leave-one-out error; None when fewer than MIN_POINTS."""
    if len(candidates) < MIN_POINTS:
        return None
    x, y = feature_matrix(candidates), np.asarray(latency_ms, dtype=np.float64)
    coef, scale = _fit(x, y)
    errors = []
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        c, s = _fit(x[keep], y[keep])
        errors.append(abs(float((x[i] / s) @ c) - y[i]) / y[i] * 100.0)
    return LatencyPredictor(coef, scale, len(y), float(np.median(errors)))
