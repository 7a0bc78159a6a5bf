"""CSV and Parquet tables: a label column, numeric features, stratified single-table split or a test file beside."""

from __future__ import annotations

import numpy as np
import pytest
from data_makers import fraud_table, write_csv

from edgekd.data import load_dataset, stratified_split

FEATURES = [f"f{i}" for i in range(8)]


def _fraud_csv(path, n=600, labels=None):
    x, y = fraud_table(n)
    values = y if labels is None else np.asarray(labels)[y]
    rows = [[*row, label] for row, label in zip(x.round(6), values, strict=True)]
    return write_csv(path, [*FEATURES, "is_fraud"], rows), x, y


def test_imbalanced_table_splits_stratified_and_standardised(tmp_path):
    spec, x, y = _fraud_csv(tmp_path / "fraud.csv")
    data = load_dataset(str(spec), label_column="is_fraud", seed=1)
    assert data.input_shape == (8,) and data.classes == ["0", "1"] and not data.is_image
    assert len(data.y_train) + len(data.y_val) + len(data.y_test) == 600
    split = data.describe()["test_split"]
    assert split == {"from": "single table", "fraction": 0.2, "stratified": True, "seed": 1 + 7919}
    assert len(data.y_test) == 120 and data.y_test.sum() == round(0.2 * y.sum())  # minority kept in proportion
    assert data.describe()["features"] == FEATURES and data.describe()["label_column"] == "is_fraud"
    assert len(data.normalization.mean) == 8
    assert np.allclose(data.x_train.mean(0), 0, atol=1e-5) and np.allclose(data.x_train.std(0), 1, atol=1e-3)
    again = load_dataset(str(spec), label_column="is_fraud", seed=1)
    assert np.array_equal(data.x_test, again.x_test)  # seeded


def test_class_names_from_strings(tmp_path):
    spec, _, y = _fraud_csv(tmp_path / "named.csv", labels=["legit", "fraud"])
    data = load_dataset(str(spec), label_column="is_fraud")
    assert data.classes == ["fraud", "legit"] and data.describe()["labels"] == "names"
    assert (np.asarray(data.classes)[data.y_test] == "fraud").sum() == round(0.2 * y.sum())


def test_test_file_beside_the_training_file(tmp_path):
    x, y = fraud_table(300)
    write_csv(tmp_path / "fraud_train.csv", [*FEATURES, "y"], [[*r, v] for r, v in zip(x[:250], y[:250], strict=True)])
    write_csv(tmp_path / "fraud_test.csv", [*FEATURES, "y"], [[*r, v] for r, v in zip(x[250:], y[250:], strict=True)])
    data = load_dataset(str(tmp_path / "fraud_train.csv"), label_column="y")
    assert len(data.y_test) == 50 and data.describe()["test_split"] == {"from": "fraud_test.csv"}
    assert np.array_equal(data.y_test, y[250:])


def test_delimiters_are_sniffed(tmp_path):
    rows = [[i % 3, i * 0.5, -i] for i in range(30)]
    (tmp_path / "semi.csv").write_text("y;a;b\n" + "\n".join(";".join(map(str, r)) for r in rows) + "\n")
    (tmp_path / "tab.tsv").write_text("y\ta\tb\n" + "\n".join("\t".join(map(str, r)) for r in rows) + "\n")
    for name in ("semi.csv", "tab.tsv"):
        assert load_dataset(str(tmp_path / name), label_column="y").input_shape == (2,)


def test_parquet_matches_csv(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    spec, x, y = _fraud_csv(tmp_path / "fraud.csv", labels=["legit", "fraud"])
    columns = {name: x.round(6)[:, i].astype(np.float64) for i, name in enumerate(FEATURES)}
    labels = pa.array(np.asarray(["legit", "fraud"])[y]).dictionary_encode()
    pq.write_table(pa.table({**columns, "is_fraud": labels}), tmp_path / "fraud.parquet")
    from_csv = load_dataset(str(spec), label_column="is_fraud")
    from_parquet = load_dataset(str(tmp_path / "fraud.parquet"), label_column="is_fraud")
    assert from_parquet.classes == from_csv.classes and from_parquet.describe()["format"] == "parquet"
    assert np.array_equal(from_parquet.x_test, from_csv.x_test) and np.array_equal(from_parquet.y_test, from_csv.y_test)


def test_stratified_split_keeps_every_class():
    y = np.array([0] * 95 + [1] * 4 + [2] * 1)
    train, test = stratified_split(y, 0.2, seed=0)
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(100))
    assert np.bincount(y[test], minlength=3).tolist() == [19, 1, 0]  # a class of 1 stays in train
    assert np.array_equal(test, stratified_split(y, 0.2, seed=0)[1])
