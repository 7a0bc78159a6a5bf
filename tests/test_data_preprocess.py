"""The numpy pre-processing the device will copy: resize (shorter side), centre crop, normalise."""

from __future__ import annotations

import ast
import inspect

import numpy as np
from data_makers import image_folder
from PIL import Image

from edgekd.data import load_dataset, preprocess_image, resize_and_crop
from edgekd.data import preprocess as preprocess_module
from edgekd.data.preprocess import crop_plan


def _photo(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth image with some texture: what resizing is for (pure noise has nothing to preserve)."""
    yy, xx = np.mgrid[0:height, 0:width] / max(height, width)
    rng = np.random.default_rng(seed)
    channels = [np.sin(6 * yy + c) * np.cos(4 * xx - c) * 100 + 128 + rng.normal(0, 8, (height, width))
                for c in range(3)]
    return np.clip(np.stack(channels, -1), 0, 255).astype(np.uint8)


def test_same_size_is_unchanged():
    image = _photo(9, 7)
    assert np.array_equal(resize_and_crop(image, (9, 7)), image)


def test_a_side_already_at_size_is_still_cropped():
    """A 16x17 photo asked for 16x16 needs no resize, only the crop (it came back 16x17 and broke a build)."""
    image = _photo(16, 17)
    for height, width in ((16, 16), (16, 15), (14, 17)):
        top, left = (16 - height) // 2, (17 - width) // 2
        assert np.array_equal(resize_and_crop(image, (height, width)), image[top:top + height, left:left + width])


def test_crop_plan_is_the_usual_resize_then_crop():
    assert crop_plan(375, 500, (224, 224), 0.875) == (256, 341, 16, 58)  # shorter side 256, then 224 centre
    assert crop_plan(32, 32, (32, 32)) == (32, 32, 0, 0)
    full_h, full_w, top, left = crop_plan(100, 50, (20, 30))  # wider target than the image: width decides
    assert full_w == 30 and full_h == 60 and left == 0 and top == 20


def test_resize_matches_pillow_bilinear_within_rounding():
    """Shrinking (antialiased) and enlarging land within a level or two of Pillow's BILINEAR on a photo."""
    image = _photo(150, 200)
    for size in ((40, 53), (300, 400)):
        ours = resize_and_crop(image, size).astype(np.int16)
        pillow = np.asarray(Image.fromarray(image).resize(size[::-1], Image.BILINEAR)).astype(np.int16)
        assert ours.shape == pillow.shape
        assert np.abs(ours - pillow).mean() < 1.0 and np.abs(ours - pillow).max() <= 6


def test_centre_crop_keeps_the_middle():
    image = np.zeros((20, 60), np.uint8)
    image[:, 20:40] = 255  # a white band in the middle third
    out = resize_and_crop(image, (10, 10))  # shorter side 20 -> 10, width 30, crop the middle 10
    assert out.shape == (10, 10) and out[:, 2:8].min() == 255


def test_preprocess_image_reproduces_the_training_input(tmp_path):
    """What the device computes from the photo equals the dataset's row, given the manifest's blocks."""
    folder = image_folder(tmp_path / "photos", size=(23, 17), per_class=(4, 2))
    data = load_dataset(str(folder), image_size=(8, 10), crop_fraction=0.875, normalization="imagenet")
    described = data.describe()
    spec = {**described["preprocess"], "normalization": described["normalization"]}
    photo = np.asarray(Image.open(folder / "test" / "cat" / "1.png").convert("RGB"))
    assert np.allclose(preprocess_image(photo, spec), data.x_test[1], atol=1e-5)


def test_module_needs_numpy_only():
    """It must be copyable into the runner, which carries numpy and the runtime only."""
    tree = ast.parse(inspect.getsource(preprocess_module))
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported <= {"numpy", "math", "collections", "__future__"}
