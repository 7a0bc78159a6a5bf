"""ImageFolder: the four layouts users keep photos in (and their splits), skipped files, colour policy, requested
sizes, and the decoded-image cache (hit, invalidation, off)."""

from __future__ import annotations

import os

import numpy as np
import pytest
from data_makers import PHOTO_LAYOUTS, image_folder, photo_folders
from PIL import Image

from edgekd.data import DataLimits, load_dataset
from edgekd.data import image_folder as reader
from edgekd.data.base import ImageSize, ReadOptions
from edgekd.data.dataset import data_notes
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


# --- layouts: ROOT/<class>/*, train/ + val/, train/ + val/ + test/, train/ + test/ ------------------------------


def _rows(x: np.ndarray) -> set[bytes]:
    return {row.tobytes() for row in np.asarray(x)}


def test_class_folders_are_split_stratified_and_seeded(tmp_path):
    root = photo_folders(tmp_path / "photos", "classes", per_class=10)
    (root / "cat" / "notes.txt").write_text("not a photo")
    (root / "dog" / "raw").mkdir()  # a sub-folder: not read, counted
    (root / "README.md").write_text("loose file beside the class folders")
    data = load_dataset(str(root), image_size=8, use_cache=False)
    d = data.describe()
    assert data.classes == ["cat", "dog", "owl"] and d["image_folder"]["layout"] == "<class>/*"
    assert d["splits"] == {"train": 21, "val": 3, "test": 6} and d["image_files"] == d["splits"]
    for y in (data.y_train, data.y_val, data.y_test):  # stratified: every class in every split, evenly
        assert np.bincount(y, minlength=3).min() == np.bincount(y, minlength=3).max() > 0
    train, val, test = (_rows(x) for x in (data.x_train, data.x_val, data.x_test))
    assert len(train | val | test) == 30  # disjoint: no photo in two splits
    assert d["image_folder"]["split"] == {"stratified": True, "test_fraction": 0.2, "val_fraction_of_rest": 0.1,
                                          "seed": 0, "test_rng_seed": 7919, "val_rng_seed": 7920}
    assert d["image_folder"]["skipped_not_images"] == 3
    assert sorted(d["image_folder"]["skipped_examples"]) == ["README.md", "cat/notes.txt", "dog/raw/"]
    again = load_dataset(str(root), image_size=8, use_cache=False)
    assert _rows(again.x_test) == test  # seeded: the same split every time
    other = load_dataset(str(root), image_size=8, seed=1, use_cache=False)
    assert _rows(other.x_test) != test and other.describe()["image_folder"]["split"]["seed"] == 1


def test_class_folders_cache_one_entry_per_split(tmp_path, monkeypatch):
    root, cache = photo_folders(tmp_path / "photos", "classes"), tmp_path / "cache"
    first = load_dataset(str(root), image_size=8, cache_dir=cache)
    monkeypatch.setattr(reader, "decode", lambda *a, **k: (_ for _ in ()).throw(AssertionError("decoded again")))
    again = load_dataset(str(root), image_size=8, cache_dir=cache)
    assert np.array_equal(first.x_val, again.x_val) and np.array_equal(first.x_test, again.x_test)
    assert len(again.source_test) == len(again.y_test)  # the test photos at source size, for the device
    with pytest.raises(AssertionError, match="decoded again"):
        load_dataset(str(root), image_size=8, cache_dir=cache, seed=1)  # another split is another entry


def test_train_val_scores_val_and_chooses_on_train(tmp_path):
    root = photo_folders(tmp_path / "photos", "train+val", per_class=8)
    data = load_dataset(str(root), image_size=8, use_cache=False)
    d = data.describe()
    assert d["image_folder"]["layout"] == "train/ + val/" and d["image_files"] == {"train": 24, "val": 24}
    assert d["evaluation_split"] == "val" and d["splits_from"]["test"] == "val/"
    assert len(data.y_test) == 24 and len(data.y_train) + len(data.y_val) == 24  # validation held out of train/
    assert not _rows(data.x_val) & _rows(data.x_test)  # nothing is chosen on val/
    notes = " ".join(data_notes(d))
    assert "Evaluation split: val/ (no separate test split exists)" in notes and "held out of train/" in notes


def test_train_val_test_takes_each_split_from_its_folder(tmp_path):
    root = photo_folders(tmp_path / "photos", "train+val+test", per_class=4)
    (root / "val" / "cat" / "IMG_0000.jpg").unlink()
    data = load_dataset(str(root), image_size=8, max_train=5, use_cache=False)
    d = data.describe()
    assert d["splits"] == {"train": 5, "val": 11, "test": 12}  # max_train caps train only
    assert d["splits_from"] == {"train": "train/", "val": "val/", "test": "test/"}
    assert "evaluation_split" not in d


@pytest.mark.parametrize("name", ["valid", "validation"])
def test_other_spellings_of_val(tmp_path, name):
    root = photo_folders(tmp_path / "photos", "train+val+test", per_class=2)
    (root / "val").rename(root / name)
    assert load_dataset(str(root), use_cache=False, image_size=8).describe()["splits_from"]["val"] == f"{name}/"


def test_train_test_keeps_todays_validation_split(tmp_path):
    root = photo_folders(tmp_path / "photos", "train+test", per_class=10)
    data = load_dataset(str(root), image_size=8, use_cache=False)
    raw = reader.read(root, ReadOptions(DataLimits.from_env(), image_size=ImageSize(8, 8)))
    held_out = np.random.default_rng(0).permutation(30)[:3]  # as before: a seeded, unstratified share of train/
    assert np.array_equal(data.y_val, raw.y_train[held_out])
    assert np.array_equal(data.x_val, data.normalization.apply(raw.x_train[held_out]))
    assert data.describe()["splits_from"]["val"] == "train/: a seeded 10% (seed 0, not stratified)"


@pytest.mark.parametrize(("make", "match"), [
    (lambda r: (r / "test" / "cat").mkdir(parents=True), "has test/ but no train/"),
    (lambda r: photo_folders(r, "train+val", per_class=2) and (r / "val").rename(r / "elsewhere"),
     "neither val/ nor test/"),
    (lambda r: photo_folders(r, "train+val", per_class=2) and (r / "valid").mkdir(), "several validation folders"),
    (lambda r: photo_folders(r, "classes", per_class=4) and (r / "empty").mkdir(), "without images: \\['empty'\\]"),
    (lambda r: photo_folders(r, "classes", per_class=1), "too few for a train/validation/test split"),
    (lambda r: photo_folders(r, "train+val", per_class=2) and (r / "val" / "bird").mkdir(),
     "classes that train lacks"),
])
def test_half_layouts_are_refused_by_name(tmp_path, make, match):
    root = tmp_path / "photos"
    root.mkdir()
    make(root)
    with pytest.raises(EdgekdError, match=match):
        load_dataset(str(root), use_cache=False, image_size=8)


def test_loose_photos_without_class_folders_are_no_layout(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.jpg")
    with pytest.raises(EdgekdError, match="none of the known layouts"):
        load_dataset(str(tmp_path))


def test_an_unreadable_photo_is_named(tmp_path):
    root = photo_folders(tmp_path / "photos", "classes", per_class=4)
    good = (root / "owl" / "IMG_0001.jpg").read_bytes()
    (root / "owl" / "IMG_0001.jpg").write_bytes(good[: len(good) // 2])  # truncated mid-scan
    with pytest.raises(EdgekdError, match="owl/IMG_0001.jpg"):
        load_dataset(str(root), image_size=8, use_cache=False)


@pytest.mark.parametrize("damage", ["truncate", "text"])
def test_every_unreadable_photo_is_named_at_once(tmp_path, damage):
    root = photo_folders(tmp_path / "photos", "train+val", per_class=4)
    broken = [root / "train" / "dog" / "IMG_0002.jpg", root / "val" / "owl" / "IMG_0000.jpg",
              root / "val" / "owl" / "IMG_0003.jpg"]
    for path in broken:
        path.write_bytes(path.read_bytes()[:200] if damage == "truncate" else b"not a jpeg at all")
    with pytest.raises(EdgekdError, match="3 images cannot be read") as caught:
        load_dataset(str(root), image_size=8, use_cache=False)
    assert all(str(path) in caught.value.problem for path in broken)


def test_every_layout_reads(tmp_path):
    for layout in PHOTO_LAYOUTS:
        data = load_dataset(str(photo_folders(tmp_path / layout, layout, per_class=4)), image_size=8,
                            use_cache=False)
        assert data.classes == ["cat", "dog", "owl"] and data.describe()["image_folder"]["skipped_not_images"] == 0
