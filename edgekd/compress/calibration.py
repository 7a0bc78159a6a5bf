"""Calibration sets: a class-balanced sample of real training inputs, saved with its provenance.

Quantization ranges are only as good as the inputs observed while choosing them, so a calibration set is
drawn from the training data (already normalised exactly as deployed) with every class represented.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from edgekd.backends import Calibration
from edgekd.data import Dataset
from edgekd.errors import EdgekdError
from edgekd.io import atomic_write, sha256_file, write_json


def build_calibration_set(data: Dataset, samples: int, seed: int = 0) -> Calibration:
    """Pick ``samples`` training inputs, as equal a number per class as the data allows."""
    if samples < 1:
        raise EdgekdError(f"calibration samples must be >= 1, got {samples}", "set calibration.samples >= 1")
    rng = np.random.default_rng(seed + 104729)
    per_class = [rng.permutation(np.flatnonzero(data.y_train == c)) for c in range(data.num_classes)]
    chosen: list[int] = []
    depth = 0
    while len(chosen) < samples and any(depth < len(p) for p in per_class):
        chosen += [int(p[depth]) for p in per_class if depth < len(p)]
        depth += 1
    idx = np.asarray(sorted(chosen[:samples]))
    counts = np.bincount(data.y_train[idx], minlength=data.num_classes)
    source = {
        "data": data.source,
        "split": "train",
        "seed": seed,
        "samples": int(len(idx)),
        "per_class": [int(c) for c in counts],
        "data_fingerprint": data.fingerprint(),
    }
    return Calibration(data.x_train[idx], source)


def save_calibration_set(calibration: Calibration, path: str | Path) -> dict:
    """Write ``.npz`` (x) and ``<name>.manifest.json`` (source, seed, sha256)."""
    path = Path(path)
    if path.suffix != ".npz":
        raise EdgekdError(f"calibration file must end in .npz, got {path.name}", "use e.g. calib.npz")

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, x=calibration.x)

    atomic_write(path, write)
    manifest = {**calibration.source, "file": path.name, "sha256": sha256_file(path),
                "shape": list(calibration.x.shape), "dtype": str(calibration.x.dtype)}
    write_json(path.with_suffix(".manifest.json"), manifest)
    return manifest


def load_calibration_set(path: str | Path, input_shape: tuple[int, ...]) -> Calibration:
    """Load a saved set and check it matches the model's input shape."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            x = npz["x"].astype(np.float32)
    except (OSError, KeyError, ValueError) as exc:
        raise EdgekdError(f"cannot read calibration set {path}: {exc}", "rebuild it with `edgekd calibrate`") from None
    if tuple(x.shape[1:]) != tuple(input_shape):
        raise EdgekdError(
            f"calibration set {path} has sample shape {tuple(x.shape[1:])}, the model takes {tuple(input_shape)}",
            "rebuild it from the same data with `edgekd calibrate`",
        )
    manifest_path = path.with_suffix(".manifest.json")
    source = json.loads(manifest_path.read_text()) if manifest_path.exists() else {"file": str(path)}
    return Calibration(x, source)
