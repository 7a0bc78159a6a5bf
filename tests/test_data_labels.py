"""The label policy (ids kept, sparse ids remapped, names sorted) and the limits read from the environment."""

from __future__ import annotations

import numpy as np
import pytest

from edgekd.data.labels import encode_labels
from edgekd.data.limits import ENV_MAX_BYTES, DataLimits, parse_count
from edgekd.errors import EdgekdError

LIMITS = DataLimits(max_bytes=1 << 30, max_bytes_source="test")


def _encode(train, test=(), names=None):
    return encode_labels(np.asarray(train), np.asarray(test), names, LIMITS, "t")


def test_ids_that_look_like_ids_are_kept():
    labels = _encode(np.arange(40) % 10 + 1, [3, 4])  # 1..10: "0" is unused but the ids are the user's
    assert labels.encoding == "ids" and labels.classes == [str(i) for i in range(11)]
    assert labels.y_test.tolist() == [3, 4]
    assert _encode(np.array([0.0, 1.0, 2.0] * 10)).encoding == "ids"  # integral floats are ids


def test_sparse_ids_are_remapped_in_sorted_order():
    labels = _encode([1009, 1000, 1005] * 10, [1005])
    assert labels.encoding == "remapped" and labels.classes == ["1000", "1005", "1009"]
    assert labels.y_train[:3].tolist() == [2, 0, 1] and labels.y_test.tolist() == [1]


def test_names_are_sorted_and_test_only_names_get_a_class():
    labels = _encode(["b", "a"] * 10, ["c"])
    assert labels.classes == ["a", "b", "c"] and labels.y_test.tolist() == [2]


def test_given_names_must_cover_the_ids():
    assert _encode([0, 1] * 10, [1], names=["no", "yes"]).classes == ["no", "yes"]
    with pytest.raises(EdgekdError, match="label 2 has no class name"):
        _encode([0, 2] * 10, names=["no", "yes"])
    with pytest.raises(EdgekdError, match="repeat"):
        _encode([0, 1] * 10, names=["x", "x"])


def test_parse_count_and_env_limits(monkeypatch):
    assert parse_count("8G", "X") == 8 << 30 and parse_count("500m", "X") == 500 << 20
    assert parse_count("1.5KiB", "X") == 1536 and parse_count(" 12000 ", "X") == 12000
    for bad in ("", "-1", "0", "1e99x", "lots"):
        with pytest.raises(EdgekdError, match="not a positive size"):
            parse_count(bad, "X")
    monkeypatch.setenv(ENV_MAX_BYTES, "2G")
    limits = DataLimits.from_env()
    assert limits.max_bytes == 2 << 30 and ENV_MAX_BYTES in limits.max_bytes_source
    monkeypatch.delenv(ENV_MAX_BYTES)
    assert "available memory" in DataLimits.from_env().max_bytes_source
