"""ImageFolder: colour policy, requested sizes, and the decoded-image cache (hit, invalidation, off)."""

from __future__ import annotations

import os

import numpy as np
import pytest
from data_makers import image_folder
from PIL import Image

from edgekd.data import image_folder as reader
from edgekd.data import load_dataset
from edgekd.errors import EdgekdError


def _files(root):
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def test_grey_stays_grey_unless_rgb_statistics_are_asked_for(tmp_path):
    folder = image_folder(tmp_path / "grey", mode="L")
    assert load_dataset(str(folder)).input_shape == (1, 5, 5)
    assert load_dataset(str(folder), normalization="imagenet").input_shape == (3, 5, 5)
    Image.new("RGB", (5, 5), (255, 0, 0)).save(folder / "train" / "cat" / "red.png")
    assert load_dataset(str(folder)).input_shape == (3, 5, 5)  # one colour photo: all read as RGB


def test_requested_size_accepts_mixed_sizes(tmp_path):
    folder = image_folder(tmp_path / "photos", size=(40, 30))
    Image.new("RGB", (64, 48)).save(folder / "train" / "dog" / "large.jpg")
    data = load_dataset(str(folder), image_size=16)
    assert data.input_shape == (3, 16, 16) and data.describe()["preprocess"]["image_size"] == [16, 16]
    assert data.describe()["image_files"] == {"train": 13, "test": 4}


def test_decoded_arrays_are_cached_and_reused(tmp_path, monkeypatch):
    folder, cache = image_folder(tmp_path / "photos"), tmp_path / "cache"
    first = load_dataset(str(folder), cache_dir=cache, image_size=4)
    entries = list((cache / "datasets" / "decoded").iterdir())
    assert len(entries) == 1 and {p.name for p in entries[0].iterdir()} == {
        "train.npy", "test.npy", "meta.json", "source_data.npy", "source_shapes.npy"}  # + test photos at source size
    assert oct(entries[0].stat().st_mode & 0o777) == "0o700"
    assert len(first.source_test) == len(first.y_test) and first.source_test[0].shape[1:] != (4, 4)

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again despite the cache")

    monkeypatch.setattr(reader, "decode", no_decoding)
    again = load_dataset(str(folder), cache_dir=cache, image_size=4)
    assert np.array_equal(first.x_train, again.x_train) and np.array_equal(first.x_test, again.x_test)
    with pytest.raises(AssertionError, match="decoded again"):
        load_dataset(str(folder), cache_dir=cache, image_size=5)  # another size is another entry


def test_a_changed_file_invalidates_the_cache(tmp_path):
    folder, cache = image_folder(tmp_path / "photos"), tmp_path / "cache"
    before = load_dataset(str(folder), cache_dir=cache)
    target = folder / "test" / "cat" / "0.png"
    Image.fromarray(np.full((5, 5, 3), 7, np.uint8)).save(target)
    os.utime(target, ns=(1, 1))
    after = load_dataset(str(folder), cache_dir=cache)
    assert not np.array_equal(before.x_test, after.x_test)
    assert len(list((cache / "datasets" / "decoded").iterdir())) == 2


def test_a_damaged_cache_entry_is_rebuilt(tmp_path):
    folder, cache = image_folder(tmp_path / "photos"), tmp_path / "cache"
    first = load_dataset(str(folder), cache_dir=cache)
    entry = next((cache / "datasets" / "decoded").iterdir())
    np.save(entry / "test.npy", np.zeros((1, 1), np.float64))  # wrong shape and dtype
    again = load_dataset(str(folder), cache_dir=cache)
    assert np.array_equal(first.x_test, again.x_test)


def test_without_cache_nothing_is_written(tmp_path):
    folder, cache = image_folder(tmp_path / "photos"), tmp_path / "cache"
    load_dataset(str(folder), cache_dir=cache, use_cache=False)
    assert _files(cache) == []


def test_a_cache_others_can_write_is_refused(tmp_path):
    folder, cache = image_folder(tmp_path / "photos"), tmp_path / "cache"
    (cache / "datasets").mkdir(parents=True)
    os.chmod(cache / "datasets", 0o777)
    with pytest.raises(EdgekdError, match="can be written by other users"):
        load_dataset(str(folder), cache_dir=cache)
