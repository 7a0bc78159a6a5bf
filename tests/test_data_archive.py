"""Archives of a data layout: unpacked once into the cache by sha256, then read by the format inside."""

from __future__ import annotations

import tarfile
import zipfile

import numpy as np
import pytest
from data_makers import image_folder, npz_arrays, write_npz

from edgekd.data import archive, load_dataset
from edgekd.io import sha256_file


def _tar_of(folder, path, arcname):
    with tarfile.open(path, "w:gz") as tar:
        tar.add(folder, arcname=arcname)
    return path


def test_tar_of_an_image_folder_unpacks_once(tmp_path, monkeypatch):
    folder = image_folder(tmp_path / "src" / "photos")
    path = _tar_of(folder, tmp_path / "photos.tar.gz", "photos")  # wrapped in one top folder
    cache = tmp_path / "cache"
    data = load_dataset(str(path), cache_dir=cache)
    direct = load_dataset(str(folder), use_cache=False)
    assert data.name == "photos" and data.classes == ["cat", "dog"]
    assert np.array_equal(data.x_test, direct.x_test) and np.array_equal(data.y_train, direct.y_train)
    digest = sha256_file(path)
    assert data.describe()["archive"] == {"format": "image-folder", "sha256": digest}
    entry = cache / "datasets" / digest
    assert (entry / "photos" / "train" / "cat" / "0.png").is_file()
    assert oct((entry / "photos" / "train" / "cat" / "0.png").stat().st_mode & 0o777) == "0o600"

    def no_extraction(*args, **kwargs):
        raise AssertionError("unpacked again")

    monkeypatch.setattr(archive, "extract", no_extraction)
    assert np.array_equal(load_dataset(str(path), cache_dir=cache).x_train, data.x_train)


def test_zip_of_one_npz_file(tmp_path):
    npz = write_npz(tmp_path / "src" / "set.npz", **npz_arrays())
    path = tmp_path / "set.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.write(npz, "set.npz")
    data = load_dataset(str(path), cache_dir=tmp_path / "cache")
    assert data.input_shape == (4,) and data.describe()["archive"]["format"] == "npz"


def test_without_cache_it_unpacks_to_a_temporary_directory(tmp_path):
    folder = image_folder(tmp_path / "src")
    path = _tar_of(folder, tmp_path / "flat.tgz", ".")
    data = load_dataset(str(path), cache_dir=tmp_path / "cache", use_cache=False)
    assert data.num_classes == 2 and not (tmp_path / "cache").exists()


@pytest.mark.parametrize("name", ["../x", "/abs", "a/../../x", "C:/x", "a\\..\\x"])
def test_member_names_that_leave_the_folder_are_refused(name, tmp_path):
    from edgekd.errors import EdgekdError

    with pytest.raises(EdgekdError):
        archive.safe_member_path(name, tmp_path / "a.tar")
    assert str(archive.safe_member_path("./a//b/./c.png", tmp_path)) == "a/b/c.png"
