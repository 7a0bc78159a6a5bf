"""Text tables: read as raw strings, tokenized by a vocabulary of the training split only, and bad input refused
with one message naming the column (exit 2, no traceback, nothing written)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from edgekd.cli import main
from edgekd.data import load_dataset

GOOD = ["a good film", "great acting , lovely plot", "i loved it", "wonderful and warm", "best movie this year"]
BAD = ["a bad film", "awful acting , dull plot", "i hated it", "boring and cold", "worst movie this year"]


def write_csv(path: Path, rows: list[dict], columns: tuple[str, ...] = ("text", "label")) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(rows)
    return path


def sentiment_rows(n: int, seed: int = 0) -> list[dict]:
    """Short made-up reviews whose words give the class away (learnable in an epoch or two)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        label = "positive" if i % 2 == 0 else "negative"
        pool = GOOD if label == "positive" else BAD
        words = " ".join(pool[j] for j in rng.choice(len(pool), size=int(rng.integers(1, 3)), replace=False))
        rows.append({"text": f"Honestly, {words}!", "label": label})
    return rows


def test_text_folder_becomes_int32_ids_with_a_train_only_vocabulary(tmp_path: Path) -> None:
    folder = tmp_path / "reviews"
    folder.mkdir()
    write_csv(folder / "train.csv", sentiment_rows(120))
    write_csv(folder / "test.csv", [*sentiment_rows(20, seed=1), {"text": "zyzzyva quixotry", "label": "positive"}])
    data = load_dataset(folder, text_column="text", label_column="label", cache_dir=tmp_path / "cache")
    assert data.is_text and data.input_dtype == "int32" and data.classes == ["negative", "positive"]
    assert data.x_train.dtype == data.x_test.dtype == np.int32 and data.x_test.shape[1] == data.input_shape[0]
    assert (data.x_train != 0).any(axis=1).all()  # every training text has tokens; padding is id 0
    assert "zyzzyva" not in data.tokenizer.vocab  # test words never reach the vocabulary
    assert data.test_texts[-1] == "zyzzyva quixotry" and len(data.test_texts) == len(data.y_test)
    described = data.describe()
    assert described["layout"] == "NL" and described["tokenizer"]["trained_on"] == "the training split only"


def test_single_parquet_table_is_split_and_tokenized(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    rows = sentiment_rows(80)
    path = tmp_path / "reviews.parquet"
    pq.write_table(pa.table({"review": [r["text"] for r in rows], "y": [r["label"] for r in rows]}), path)
    data = load_dataset(path, text_column="review", label_column="y", use_cache=False)
    assert data.meta["test_split"]["from"] == "single table"
    assert len(data.y_train) + len(data.y_val) + len(data.y_test) == 80 and data.x_val.dtype == np.int32


def _build(tmp_path: Path, data: Path, text_column: str = "text") -> list[str]:
    return ["build", "--target", "rpi4", "--data", str(data), "--text-column", text_column, "--label-column",
            "label", "--out", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "cache"), "--no-progress"]


@pytest.mark.parametrize(("rows", "columns", "text_column", "message"), [
    ([{"body": "nice", "label": "positive"}], ("body", "label"), "text", "has no column 'text' (--text-column)"),
    ([{"text": " ", "label": "positive"}, {"text": "", "label": "negative"}], ("text", "label"), "text",
     "text column 'text' is empty in every row"),
    ([{"text": "3.5", "label": "positive"}, {"text": "7", "label": "negative"}], ("text", "label"), "text",
     "text column 'text' holds numbers"),
    ([{"text": "fine", "label": "positive"}, {"text": "", "label": "negative"}], ("text", "label"), "text",
     "10 rows have no text in column 'text' (the first is data row 2)"),
])
def test_bad_text_columns_exit_2_with_one_message(tmp_path: Path, capsys, rows, columns, text_column,
                                                  message) -> None:
    table = write_csv(tmp_path / "reviews.csv", rows * 10, columns)
    before = table.read_bytes()
    assert main(_build(tmp_path, table, text_column)) == 2
    err = capsys.readouterr().err
    assert message in err and "fix:" in err and "Traceback" not in err
    assert table.read_bytes() == before and not (tmp_path / "run").exists()


def test_a_parquet_column_of_numbers_is_not_text(tmp_path: Path, capsys) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    path = tmp_path / "reviews.parquet"
    pq.write_table(pa.table({"text": [1.5, 2.5] * 10, "label": ["a", "b"] * 10}), path)
    assert main(_build(tmp_path, path)) == 2
    err = capsys.readouterr().err
    assert "text column 'text' has type double, not strings" in err and "Traceback" not in err


def test_a_teacher_directory_asking_for_remote_code_is_refused_before_the_data_is_read(tmp_path: Path, capsys
                                                                                      ) -> None:
    teacher = tmp_path / "bert"
    teacher.mkdir()
    (teacher / "config.json").write_text('{"model_type": "bert", "auto_map": {"AutoModel": "modeling.MyBert"}}')
    (teacher / "model.safetensors").write_bytes(b"")
    (teacher / "vocab.txt").write_text("[PAD]\n[UNK]\ngood\n")
    table = write_csv(tmp_path / "reviews.csv", sentiment_rows(40))
    assert main([*_build(tmp_path, table), "--teacher", str(teacher)]) == 2
    err = capsys.readouterr().err
    assert "asks to run its own code (auto_map in config.json)" in err and "Traceback" not in err


def test_a_teacher_vocabulary_tokenizes_the_data_with_cls_and_sep(tmp_path: Path) -> None:
    from edgekd import runner
    from edgekd.data.text_table import TeacherVocabulary

    tokens = ["[PAD]", "[unused0]", "[UNK]", "[CLS]", "[SEP]", ",", "!", "honestly", "good", "bad", "film", "a",
              "i", "it", "##ly"]
    folder = tmp_path / "reviews"
    folder.mkdir()
    write_csv(folder / "train.csv", sentiment_rows(60))
    write_csv(folder / "test.csv", [*sentiment_rows(10, seed=1), {"text": "good " * 40, "label": "positive"}])
    given = TeacherVocabulary(tuple(tokens), True, 12, "the teacher's vocabulary (bert/vocab.txt)")
    data = load_dataset(folder, text_column="text", label_column="label", text_vocab=given, use_cache=False)
    assert data.tokenizer.vocab == tokens and data.input_shape == (12,)  # within the teacher's 12 positions
    assert (data.x_train[:, 0] == 3).all() and data.x_test[-1][-1] == 4  # [CLS] first; a cut text keeps [SEP]
    enc = runner.WordPieceEncoder(data.tokenizer.vocab, data.tokenizer.settings.to_dict())
    assert np.array_equal(np.concatenate([enc.encode(t) for t in data.test_texts]), data.x_test)
    assert data.describe()["tokenizer"]["trained_on"] == "the teacher's vocabulary (bert/vocab.txt)"
