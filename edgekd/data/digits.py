"""scikit-learn's bundled 8x8 digits: the offline default for demos and fast tests."""

from __future__ import annotations

import numpy as np

from edgekd.data.base import RawData

TEST_FRACTION = 0.2
SEED_OFFSET = 7919  # the test split depends on the seed, but not the same way as the validation split


def read_digits(seed: int) -> RawData:
    from sklearn.datasets import load_digits  # lazy: scikit-learn takes ~1 s to import; only this data set needs it

    bunch = load_digits()
    images = bunch.images.astype(np.float32)[:, None, :, :]  # values 0..16
    labels = bunch.target.astype(np.int64)
    order = np.random.default_rng(seed + SEED_OFFSET).permutation(len(labels))
    n_test = int(round(TEST_FRACTION * len(labels)))
    test, train = order[:n_test], order[n_test:]
    return RawData(images[train], labels[train], images[test], labels[test], 16.0,
                   class_names=[str(c) for c in bunch.target_names])
