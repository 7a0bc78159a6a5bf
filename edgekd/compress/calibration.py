"""Calibration sets: a class-balanced sample of real training inputs, saved with its provenance.

Quantization ranges are only as good as the inputs observed while choosing them, so a calibration set is
drawn from the training data (already normalised exactly as deployed) with every class represented.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.data import Dataset
from edgekd.data.inputs import model_input
from edgekd.data.limits import DataLimits
from edgekd.data.npz import _member_header
from edgekd.errors import EdgekdError
from edgekd.io import atomic_write, read_json_object, sha256_file, write_json


@dataclass
class Calibration:
    """Real inputs the quantizer observes, and where they came from (recorded with every int8 artifact)."""

    x: np.ndarray
    source: dict[str, Any]

    def __post_init__(self) -> None:
        if len(self.x) == 0:
            raise EdgekdError("the calibration set is empty", "build one with `edgekd calibrate` (N >= 1)")
        if not np.isfinite(self.x).all():
            raise EdgekdError("the calibration set contains NaN or infinite values", "rebuild it from clean data")


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


def load_calibration_set(path: str | Path, input_shape: tuple[int, ...],
                         data_fingerprint: str | None = None) -> Calibration:
    """Load a set written by ``edgekd calibrate``; refuse one made for other data or another input shape."""
    path = Path(path)
    fix = "rebuild it from the same data with `edgekd calibrate`"
    try:
        _check_declared_size(path, fix)
        with np.load(path, allow_pickle=False) as npz:
            x = np.asarray(npz["x"])
    except EdgekdError:
        raise
    except Exception as exc:  # noqa: BLE001 - a bad or hostile file is the user's input, never a traceback
        raise EdgekdError(f"cannot read calibration set {path}: {type(exc).__name__}: {exc}", fix) from None
    if not np.issubdtype(x.dtype, np.floating) or tuple(x.shape[1:]) != tuple(input_shape):
        raise EdgekdError(f"calibration set {path} holds {x.dtype} samples of shape {tuple(x.shape[1:])}; the model "
                          f"takes float samples of shape {tuple(input_shape)}", fix)
    manifest_path = path.with_suffix(".manifest.json")
    source: dict = {"file": path.name, "sha256": sha256_file(path), "manifest": None}
    if manifest_path.is_file():
        source = {**read_json_object(manifest_path, "calibration manifest", fix), "file": path.name,
                  "sha256": sha256_file(path)}
    made_for = source.get("data_fingerprint")
    if data_fingerprint is not None and made_for is not None and made_for != data_fingerprint:
        raise EdgekdError(f"calibration set {path} was made from other data (fingerprint {made_for}, this build's "
                          f"data is {data_fingerprint}): its inputs are normalised for that data", fix)
    return Calibration(model_input(x), source)


def _check_declared_size(path: Path, fix: str) -> None:
    """The 'x' member's header must match its declared size, and that size fit the data memory limit, before
    numpy allocates (a 100-byte header can ask for terabytes)."""
    with zipfile.ZipFile(path) as zf:
        info = next((i for i in zf.infolist() if i.filename == "x.npy"), None)
        if info is None:
            raise EdgekdError(f"calibration set {path} has no array 'x'", fix)
        try:
            header = _member_header(zf, info, path)
        except EdgekdError as exc:
            raise EdgekdError(f"calibration set {exc.problem}", fix) from None
    DataLimits.from_env().check_bytes(header.nbytes, f"calibration set {path}", fix)
