import gzip
import struct

import numpy as np
import pytest
from data_makers import image_folder, npz_arrays, write_npz
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


def test_flat_data_is_standardised_per_feature(tmp_path):
    rng = np.random.default_rng(0)
    scales = np.array([1.0, 100.0, 0.01], np.float32)
    x = (rng.normal(size=(200, 3)) * scales + [5.0, -50.0, 0.0]).astype(np.float32)
    spec = write_npz(tmp_path / "f.npz", x_train=x[:160], y_train=np.arange(160) % 2, x_test=x[160:],
                     y_test=np.arange(40) % 2)
    data = load_dataset(str(spec), val_fraction=0.0001)
    norm = data.describe()["normalization"]
    assert len(norm["mean"]) == len(norm["std"]) == 3 and norm["scale"] == 1.0
    assert np.allclose(data.x_train.mean(0), 0, atol=1e-4) and np.allclose(data.x_train.std(0), 1, atol=1e-3)
    assert data.normalization.std[1] > 1000 * data.normalization.std[2]  # one statistic per feature


def test_sparse_labels_are_remapped_and_named(tmp_path):
    arrays = npz_arrays()
    arrays["y_train"] = np.where(arrays["y_train"] == 0, 10**9, 0)
    arrays["y_test"] = np.where(arrays["y_test"] == 0, 10**9, 0)
    data = load_dataset(str(write_npz(tmp_path / "s.npz", **arrays)))
    assert data.classes == ["0", "1000000000"] and data.describe()["labels"] == "remapped"
    original = np.asarray(data.classes, dtype=np.int64)[data.y_test]
    assert np.array_equal(original, arrays["y_test"])  # the class names map outputs back to the user's labels


def test_string_labels_and_given_class_names(tmp_path):
    arrays = npz_arrays()
    names = np.array(["zebra", "ant", "moose"])
    named = {**arrays, "y_train": names[arrays["y_train"]], "y_test": names[arrays["y_test"]]}
    data = load_dataset(str(write_npz(tmp_path / "n.npz", **named)))
    assert data.classes == ["ant", "moose", "zebra"] and data.describe()["labels"] == "names"
    assert np.array_equal(np.asarray(data.classes)[data.y_test], named["y_test"])
    given = load_dataset(str(write_npz(tmp_path / "g.npz", **arrays, classes=names)))
    assert given.classes == ["zebra", "ant", "moose"] and given.describe()["labels"] == "given names"


def test_normalization_presets_and_explicit_statistics(tmp_path):
    folder = image_folder(tmp_path / "photos", size=(8, 8))
    imagenet = load_dataset(str(folder), normalization="imagenet")
    assert imagenet.normalization.mean == [0.485, 0.456, 0.406] and imagenet.normalization.scale == 255.0
    assert imagenet.describe()["normalization_source"] == "imagenet"
    explicit = load_dataset(str(folder), normalization={"mean": [0.5], "std": [0.25]})
    expected = (np.asarray(Image.open(folder / "test" / "cat" / "0.png"), np.float32) / 255 - 0.5) / 0.25
    assert np.allclose(explicit.x_test[0], expected.transpose(2, 0, 1), atol=1e-6)
    fitted = load_dataset(str(folder))
    assert fitted.describe()["normalization_source"] == "fit" and len(fitted.normalization.mean) == 3


def test_image_size_resizes_array_images_and_is_recorded(tmp_path):
    arrays = {k: v for k, v in npz_arrays().items() if k.startswith("y")}
    rng = np.random.default_rng(1)
    arrays["x_train"] = rng.integers(0, 255, (20, 12, 16, 3)).astype(np.uint8)
    arrays["x_test"] = rng.integers(0, 255, (6, 12, 16, 3)).astype(np.uint8)
    data = load_dataset(str(write_npz(tmp_path / "i.npz", **arrays)), image_size=(6, 8))
    assert data.input_shape == (3, 6, 8)
    block = data.describe()["preprocess"]
    assert block["image_size"] == [6, 8] and block["crop_fraction"] == 1.0 and block["crop"] == "centre"
    plain = load_dataset(str(tmp_path / "i.npz"))
    assert plain.input_shape == (3, 12, 16) and "preprocess" not in plain.describe()


def test_max_train_and_path_spec(tmp_path):
    spec = write_npz(tmp_path / "m.npz", **npz_arrays(n_train=100))
    data = load_dataset(spec, max_train=30)  # a Path works as well as a str
    assert len(data.y_train) + len(data.y_val) == 30 and data.source == str(spec)
    with pytest.raises(EdgekdError, match="none to train on"):
        load_dataset(spec, max_train=3)
