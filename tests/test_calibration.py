import numpy as np
import pytest

from edgekd.compress.calibration import build_calibration_set, load_calibration_set, save_calibration_set
from edgekd.errors import EdgekdError
from edgekd.io import sha256_file


def test_class_balanced_and_deterministic(toy_data):
    a = build_calibration_set(toy_data, 12, seed=1)
    b = build_calibration_set(toy_data, 12, seed=1)
    assert np.array_equal(a.x, b.x) and len(a.x) == 12
    counts = a.source["per_class"]
    assert max(counts) - min(counts) <= 1 and sum(counts) == 12


def test_more_than_available_takes_all(toy_data):
    calib = build_calibration_set(toy_data, 10_000)
    assert len(calib.x) == len(toy_data.y_train)


def test_save_load_roundtrip(tmp_path, toy_data):
    calib = build_calibration_set(toy_data, 9)
    manifest = save_calibration_set(calib, tmp_path / "c.npz")
    assert manifest["sha256"] == sha256_file(tmp_path / "c.npz")
    assert (tmp_path / "c.manifest.json").exists()
    loaded = load_calibration_set(tmp_path / "c.npz", toy_data.input_shape)
    assert np.array_equal(loaded.x, calib.x) and loaded.source["seed"] == 0


def test_bad_calibration_input(tmp_path, toy_data):
    with pytest.raises(EdgekdError):
        build_calibration_set(toy_data, 0)
    save_calibration_set(build_calibration_set(toy_data, 4), tmp_path / "c.npz")
    with pytest.raises(EdgekdError, match="samples of shape"):
        load_calibration_set(tmp_path / "c.npz", (3, 8, 8))
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(EdgekdError, match="cannot read"):
        load_calibration_set(tmp_path / "bad.npz", toy_data.input_shape)
