import gzip
import struct

import numpy as np
import pytest
from PIL import Image

from edgekd.data import load_dataset
from edgekd.errors import EdgekdError


def test_digits_split_is_deterministic_and_normalised():
    a, b = load_dataset("digits", seed=3), load_dataset("digits", seed=3)
    assert a.input_shape == (1, 8, 8) and a.num_classes == 10
    assert np.array_equal(a.x_train, b.x_train) and np.array_equal(a.y_val, b.y_val)
    assert abs(float(a.x_train.mean())) < 0.05 and abs(float(a.x_train.std()) - 1) < 0.05
    assert len(a.y_train) + len(a.y_val) + len(a.y_test) == 1797
    c = load_dataset("digits", seed=4)
    assert not np.array_equal(a.y_train, c.y_train)
    norm = a.describe()["normalization"]
    assert norm["scale"] == 16.0 and len(norm["mean"]) == 1


def _write_idx(path, arr, gz=True):
    magic = (0x08 << 8) | arr.ndim
    payload = struct.pack(">I", magic) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.astype(np.uint8).tobytes()
    (gzip.open if gz else open)(path, "wb").write(payload)


def test_idx_directory(tmp_path):
    rng = np.random.default_rng(0)
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", rng.integers(0, 255, (40, 6, 6)))
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.arange(40) % 4)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte", rng.integers(0, 255, (8, 6, 6)), gz=False)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.arange(8) % 4, gz=False)
    data = load_dataset(str(tmp_path))
    assert data.input_shape == (1, 6, 6) and data.num_classes == 4 and len(data.y_test) == 8
    assert data.normalization.scale == 255.0


def test_image_folder(tmp_path):
    for split, n in (("train", 6), ("test", 2)):
        for cls in ("cat", "dog"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(np.full((5, 5, 3), i * 20, np.uint8)).save(tmp_path / split / cls / f"{i}.png")
    data = load_dataset(str(tmp_path))
    assert data.classes == ["cat", "dog"] and data.input_shape == (3, 5, 5)


def test_image_folder_rejects_mixed_sizes(tmp_path):
    for split in ("train", "test"):
        (tmp_path / split / "a").mkdir(parents=True)
        Image.fromarray(np.zeros((5, 5), np.uint8)).save(tmp_path / split / "a" / "0.png")
    Image.fromarray(np.zeros((6, 6), np.uint8)).save(tmp_path / "train" / "a" / "1.png")
    with pytest.raises(EdgekdError, match="resize"):
        load_dataset(str(tmp_path))


def test_npz_flat_and_nhwc(tmp_path):
    rng = np.random.default_rng(0)
    flat = tmp_path / "flat.npz"
    np.savez(flat, x_train=rng.normal(size=(30, 12)), y_train=np.arange(30) % 3,
             x_test=rng.normal(size=(6, 12)), y_test=np.arange(6) % 3)
    assert load_dataset(str(flat)).input_shape == (12,)
    nhwc = tmp_path / "nhwc.npz"
    np.savez(nhwc, x_train=rng.integers(0, 255, (30, 7, 7, 3)).astype(np.uint8), y_train=np.arange(30) % 3,
             x_test=rng.integers(0, 255, (6, 7, 7, 3)).astype(np.uint8), y_test=np.arange(6) % 3)
    assert load_dataset(str(nhwc)).input_shape == (3, 7, 7)


@pytest.mark.parametrize("problem", ["missing_key", "nan", "bad_labels"])
def test_npz_bad_input(tmp_path, problem):
    x = np.zeros((10, 4), np.float32)
    arrays = {"x_train": x, "y_train": np.zeros(10), "x_test": x, "y_test": np.zeros(10)}
    if problem == "missing_key":
        arrays.pop("y_test")
    elif problem == "nan":
        arrays["x_train"] = np.full((10, 4), np.nan, np.float32)
    else:
        arrays["y_train"] = -np.ones(10)
    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(EdgekdError):
        load_dataset(str(tmp_path / "d.npz"))


def test_unknown_layout_and_missing_path(tmp_path):
    (tmp_path / "junk.txt").write_text("x")
    with pytest.raises(EdgekdError, match="none of the known layouts"):
        load_dataset(str(tmp_path))
    with pytest.raises(EdgekdError, match="not found"):
        load_dataset(str(tmp_path / "nope"))
