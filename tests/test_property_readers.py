"""Property-based tests (issue 27) over every reader of a user's file: JSON reports and manifests, target YAML,
.npz, IDX, CSV/Parquet and image-folder trees. Whatever hypothesis generates, a reader gives one clean EdgekdError
(exit 2 through the CLI) or a valid result, never another exception. Inputs are mostly near-misses of valid files
(a field replaced, a header byte changed, a file swapped for junk), which reach deeper than random bytes would.

Bounded: a fixed number of examples per reader (the file runs in well under a minute) and no example database, so
nothing is written to the checkout.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import struct
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from data_makers import idx_bytes, idx_dir, npz_arrays
from factories import make_report
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from edgekd import runner
from edgekd.cli import main
from edgekd.data import load_dataset
from edgekd.errors import EdgekdError
from edgekd.targets import TargetProfile, load_target

# EDGEKD_PROPERTY_EXAMPLES=500 searches harder (minutes) when a reader changes; CI runs the bounded default.
BOUNDED = settings(max_examples=int(os.environ.get("EDGEKD_PROPERTY_EXAMPLES", "25")), deadline=None, database=None,
                   suppress_health_check=list(HealthCheck))

LEAVES = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=True)
          | st.text(max_size=12))
JSON_VALUES = st.recursive(LEAVES, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=20)


@contextlib.contextmanager
def folder() -> Iterator[Path]:
    """A fresh directory per example (pytest's tmp_path is one per test, shared by all its examples)."""
    with tempfile.TemporaryDirectory(prefix="edgekd-property-") as tmp:
        yield Path(tmp)


def clean(call: Callable[[], Any]) -> Any:
    """``call()``, or None when it refused with one EdgekdError (a problem on one line and a fix)."""
    try:
        return call()
    except EdgekdError as exc:
        assert exc.problem.strip() and "Traceback" not in str(exc), str(exc)
        return None


def nested(depth: int, opener: str = "[") -> str:
    closer = {"[": "]", "{": "}"}[opener]
    inner = '"a": ' if opener == "{" else ""
    return (opener + inner) * depth + "1" + closer * depth


@st.composite
def mutated(draw, base: Any) -> Any:
    """``base`` (a JSON-like value) with one value somewhere replaced by a generated one, or a key dropped."""
    value = copy.deepcopy(base)
    node, path = value, []
    while isinstance(node, dict | list) and node and draw(st.booleans()):
        key = draw(st.sampled_from(sorted(node) if isinstance(node, dict) else range(len(node))))
        path.append(key)
        node = node[key]
    if not path:
        return draw(JSON_VALUES)
    parent = value
    for key in path[:-1]:
        parent = parent[key]
    if isinstance(parent, dict) and draw(st.booleans()):
        del parent[path[-1]]
    else:
        parent[path[-1]] = draw(JSON_VALUES)
    return value


def json_texts(base: Any) -> st.SearchStrategy[str]:
    """Near-misses of ``base`` and oddities: any JSON value, deep nesting, truncation, text that is not JSON."""
    return st.one_of(
        mutated(base).map(json.dumps),
        JSON_VALUES.map(json.dumps),
        st.builds(nested, st.integers(0, 3000), st.sampled_from("[{")),
        st.builds(lambda text, cut: text[:cut], mutated(base).map(json.dumps), st.integers(0, 400)),
        st.text(max_size=200),
    )


# ---------------------------------------------------------------------------------------------- reports, manifests
def _small_report() -> dict:
    """A valid report without its long sample lists (a failing example stays readable)."""
    report = make_report()
    for artifact in report["artifacts"]:
        artifact.pop("predictions", None)
        artifact.get("latency_ms_detail", {}).update(samples_ms=[0.1, 0.2], processes=[])
    return report


REPORT = _small_report()


@BOUNDED
@given(text=json_texts(REPORT))
def test_gate_reads_any_report_or_baseline_to_a_verdict_or_exit_2(text):
    with folder() as tmp:
        path = tmp / "report.json"
        path.write_text(text)
        good = tmp / "good.json"
        good.write_text(json.dumps(REPORT))
        for argv in (["gate", str(path), "--target", "x86-cpu"],
                     ["gate", str(good), "--target", "x86-cpu", "--baseline", str(path)]):
            with contextlib.redirect_stderr(io.StringIO()) as err, contextlib.redirect_stdout(io.StringIO()):
                code = main(argv)
            assert code in (0, 1, 2), err.getvalue()  # 3 would be an internal error: a traceback in a log
            assert "Traceback" not in err.getvalue()


MANIFEST = {"format_version": 1, "artifacts": [{"path": "model.onnx", "format": "onnx", "precision": "fp32",
                                                "sha256": "0" * 64, "files": [{"path": "model.onnx",
                                                                               "sha256": "0" * 64}]}],
            "input": {"shape": [1, 4], "dtype": "float32"}, "eval_inputs": {"path": "eval.npz", "sha256": "0" * 64}}


@BOUNDED
@given(text=json_texts(MANIFEST))
def test_manifests_are_read_or_refused_by_the_runner_and_by_edgekd(text):
    from edgekd.schema import read

    with folder() as tmp:
        (tmp / "manifest.json").write_text(text)
        (tmp / "model.onnx").write_bytes(b"not a model")
        try:
            manifest, entry = runner.find_manifest_entry(str(tmp / "model.onnx"))
            assert isinstance(manifest, dict) and (entry is None or isinstance(entry, dict))
        except runner.RunnerError as exc:
            assert str(exc).strip()
        clean(lambda: read("manifest", tmp / "manifest.json"))


# ---------------------------------------------------------------------------------------------------- target YAML
TARGET = yaml.safe_load(open(load_target("x86-cpu").path))


@BOUNDED
@given(text=st.one_of(
    mutated(TARGET).map(lambda v: yaml.safe_dump(v, sort_keys=False)),
    JSON_VALUES.map(yaml.safe_dump),
    st.builds(nested, st.integers(0, 3000), st.sampled_from("[{")),
    st.sampled_from(["name: !!int 0x", "a: !!python/object:os.system x", "a: &a [*a]", "- !!binary '@@'",
                     "a: &a [x, x, x, x]\nb: &b [*a, *a, *a, *a]\nc: &c [*b, *b, *b, *b]\nd: [*c, *c, *c, *c]",
                     "name: !!timestamp 2001-99-99", "? [1]\n: 2", "\x00", "name: x\nname: y"]),
    st.text(max_size=200),
))
def test_target_yaml_loads_or_is_refused(text):
    with folder() as tmp:
        path = tmp / "board.yaml"
        path.write_text(text, encoding="utf-8")
        target = clean(lambda: load_target(str(path)))
        assert target is None or isinstance(target, TargetProfile)


# ------------------------------------------------------------------------------------------------------ datasets
def check_dataset(data) -> None:
    """What every loaded dataset promises: aligned splits, labels in range, finite inputs."""
    if data is None:
        return
    for x, y in ((data.x_train, data.y_train), (data.x_val, data.y_val), (data.x_test, data.y_test)):
        assert len(x) == len(y) and tuple(x.shape[1:]) == tuple(data.input_shape)
        assert len(y) == 0 or (0 <= int(np.min(y)) and int(np.max(y)) < data.num_classes)
        assert np.isfinite(np.asarray(x, dtype=np.float64)).all()
    assert len(data.y_train) > 0


DTYPES = st.sampled_from(["float32", "float64", "int64", "uint8", "bool", "complex64", "U3", "object", "float16"])


@st.composite
def npz_members(draw) -> dict[str, np.ndarray]:
    arrays = npz_arrays()
    for name in draw(st.sets(st.sampled_from(sorted(arrays)), max_size=2)):
        n = draw(st.integers(0, 8))
        shape = (n, *draw(st.lists(st.integers(0, 4), max_size=3)))
        dtype = draw(DTYPES)
        if dtype == "object":
            arrays[name] = np.array([None, {"a": 1}], dtype=object)
        else:
            arrays[name] = np.asarray(draw(st.lists(st.integers(-3, 300), min_size=int(np.prod(shape)),
                                                    max_size=int(np.prod(shape))))).reshape(shape).astype(dtype)
    if draw(st.booleans()):
        arrays.pop(draw(st.sampled_from(sorted(arrays))))
    return arrays


@BOUNDED
@given(members=npz_members(), junk=st.none() | st.binary(max_size=64))
def test_npz_files_load_or_are_refused(members, junk):
    with folder() as tmp:
        path = tmp / "data.npz"
        if junk is None:
            np.savez(path, **members)
        else:
            path.write_bytes(b"PK\x03\x04" + junk)
        check_dataset(clean(lambda: load_dataset(str(path), use_cache=False)))


IDX_SHAPES = {"train-images-idx3-ubyte": (24, 4, 4), "train-labels-idx1-ubyte": (24,),
              "t10k-images-idx3-ubyte": (8, 4, 4), "t10k-labels-idx1-ubyte": (8,)}


@st.composite
def idx_file(draw) -> tuple[str, bytes]:
    """One of the four files, rewritten near its valid form: a header field or the payload length changed, the
    labels' values shifted, or the whole file replaced by junk."""
    name = draw(st.sampled_from(sorted(IDX_SHAPES)))
    shape = list(IDX_SHAPES[name])
    if draw(st.integers(0, 5)) == 0:
        return name, draw(st.binary(max_size=40))
    magic = draw(st.sampled_from([b"\0\0"] * 4 + [b"\0\1", b"\xff\xff"]))
    dtype_byte = draw(st.sampled_from([0x08] * 4 + [0x09, 0x0D, 0xFF]))
    if draw(st.booleans()):
        shape[draw(st.integers(0, len(shape) - 1))] = draw(st.integers(0, 70))
    if draw(st.integers(0, 4)) == 0:
        shape = draw(st.lists(st.integers(0, 9), max_size=5))
    count = int(np.prod(shape)) + draw(st.sampled_from([0] * 6 + [-3, -1, 1, 7]))
    high = draw(st.sampled_from([4, 4, 256]))  # labels 0-3 (valid) or any byte
    payload = np.random.default_rng(draw(st.integers(0, 3))).integers(0, high, max(count, 0)).astype(np.uint8)
    header = magic + bytes([dtype_byte, len(shape)]) + struct.pack(f">{len(shape)}I", *shape)
    return name, header + payload.tobytes()


@BOUNDED
@given(files=st.lists(idx_file(), max_size=2), gz=st.booleans())
def test_idx_directories_load_or_are_refused(files, gz):
    import gzip

    with folder() as tmp:
        root = idx_dir(tmp / "idx", n_train=24, n_test=8, side=4)
        for name, blob in files:
            if gz:
                (root / name).unlink(missing_ok=True)
                (root / f"{name}.gz").write_bytes(gzip.compress(blob, 1))
            else:
                (root / name).write_bytes(blob)
        check_dataset(clean(lambda: load_dataset(str(root), use_cache=False)))


def test_the_idx_property_starts_from_a_valid_directory(tmp_path):
    """The control: the directory the IDX property rewrites loads as it is, with the shapes it rewrites from."""
    root = idx_dir(tmp_path / "idx", n_train=24, n_test=8, side=4)
    assert load_dataset(str(root), use_cache=False).input_shape == (1, 4, 4)
    assert (root / "train-labels-idx1-ubyte").read_bytes()[:8] == idx_bytes(np.arange(24) % 4)[:8]


CELLS = st.one_of(st.integers(-5, 5), st.floats(allow_nan=True, allow_infinity=True, width=32),
                  st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=6), st.just(""))


@st.composite
def table(draw) -> tuple[list[str], list[list]]:
    """A small labelled table (label column 'y' first, 0-3 features), with up to two cells and one name replaced
    by anything: empty, text, NaN, infinite, a repeated or odd column name."""
    features = draw(st.integers(0, 3))
    header = ["y", *(f"f{i}" for i in range(features))]
    n = draw(st.integers(0, 40))
    classes = draw(st.integers(1, 4))
    rows = [[i % classes, *(draw(st.integers(-9, 9)) / 4 for _ in range(features))] for i in range(n)]
    for _ in range(draw(st.integers(0, 2)) if rows else 0):
        row = draw(st.integers(0, n - 1))
        rows[row][draw(st.integers(0, features))] = draw(CELLS)
    if draw(st.integers(0, 3)) == 0:
        header[draw(st.integers(0, features))] = draw(st.sampled_from(["", "y", "f0", " y", "$x^{$", "é"]))
    if draw(st.integers(0, 5)) == 0:
        rows.append(rows[-1][:-1] if rows else [1])  # a ragged row
    return header, rows


@BOUNDED
@given(data=table(), delimiter=st.sampled_from([",", ";", "\t", "|"]))
def test_csv_tables_load_or_are_refused(data, delimiter):
    import csv

    header, rows = data
    with folder() as tmp:
        path = tmp / "table.csv"
        with open(path, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh, delimiter=delimiter)
            writer.writerow(header)
            writer.writerows(rows)
        for label in ("y", None):
            check_dataset(clean(lambda label=label: load_dataset(str(path), label_column=label, use_cache=False)))


@BOUNDED
@given(data=table(), kinds=st.lists(st.sampled_from(["float", "int", "text", "bool", "dictionary"]), min_size=4,
                                    max_size=4), nulls=st.booleans())
def test_parquet_tables_load_or_are_refused(data, kinds, nulls):
    """The same tables as Parquet, each column cast to a type (text and dictionary-encoded text included)."""
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    header, rows = data
    columns = {}
    for i, name in enumerate(dict.fromkeys(header)):  # Parquet needs unique column names
        cells = [row[i] if i < len(row) else None for row in rows]
        kind = kinds[i]
        if kind == "text" or kind == "dictionary" or any(isinstance(c, str) for c in cells):
            array = pa.array([None if c is None else str(c) for c in cells], pa.string())
            array = array.dictionary_encode() if kind == "dictionary" else array
        else:
            typed = [None if c is None else (bool(c) if kind == "bool" else int(c) if kind == "int" and c == c
                                             and abs(c) < 2**62 else float(c)) for c in cells]
            array = pa.array(typed, from_pandas=not nulls)
        columns[name] = array
    with folder() as tmp:
        path = tmp / "table.parquet"
        pq.write_table(pa.table(columns), path)
        check_dataset(clean(lambda: load_dataset(str(path), label_column="y", use_cache=False)))


# ------------------------------------------------------------------------------------------------- image folders
NAMES = st.text(alphabet="abcXYZ019_-. $^{}é", min_size=1, max_size=8).filter(lambda n: n not in (".", ".."))
LAYOUTS = [("train", "test"), ("train", "val"), ("train", "val", "test"), (None,), ("train",), ("test", "val")]
SUFFIXES = st.sampled_from([".png"] * 3 + [".jpg", ".jpeg", ".bmp", ".PNG", ".txt", ""])


@st.composite
def photo(draw, size: tuple[int, int]) -> tuple[str, bytes | tuple[str, int, int]]:
    """(file name, junk bytes or (mode, width, height) to encode): mostly images of the tree's size."""
    name = draw(NAMES) + draw(SUFFIXES)
    if draw(st.integers(0, 11)) == 0:
        return name, draw(st.binary(max_size=40))
    if draw(st.integers(0, 7)) == 0:
        size = (draw(st.integers(1, 12)), draw(st.integers(1, 12)))
    return name, (draw(st.sampled_from(["RGB"] * 4 + ["L", "RGBA", "P", "1"])), *size)


def write_image(path: Path, content: bytes | tuple[str, int, int]) -> None:
    if isinstance(content, bytes):
        path.write_bytes(content)
        return
    mode, width, height = content
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP"}.get(path.suffix.lower(), "PNG")
    image = Image.new(mode, (width, height), 1)
    (image.convert("RGB") if fmt == "JPEG" and mode not in ("RGB", "L") else image).save(path, fmt)


@st.composite
def photo_tree(draw) -> dict[tuple[str | None, str], list]:
    """(split or None, class) -> photos: a known or unknown layout, odd class names, junk among the images."""
    size = (draw(st.integers(1, 10)), draw(st.integers(1, 10)))
    classes = draw(st.lists(NAMES, min_size=1, max_size=3, unique_by=str.lower))
    return {(split, cls): draw(st.lists(photo(size), max_size=7)) for split in draw(st.sampled_from(LAYOUTS))
            for cls in classes}


@BOUNDED
@given(tree=photo_tree(), image_size=st.none() | st.integers(1, 8), seed=st.integers(0, 2))
def test_image_folder_trees_load_or_are_refused(tree, image_size, seed):
    """Whichever layouts the reader knows, a tree gives a valid dataset or one EdgekdError."""
    with folder() as tmp:
        root = tmp / "photos"
        root.mkdir()
        for (split, cls), photos in tree.items():
            target = root / split / cls if split else root / cls
            target.mkdir(parents=True, exist_ok=True)
            for i, (name, content) in enumerate(photos):
                write_image(target / f"{i}{name}", content)
        check_dataset(clean(lambda: load_dataset(str(root), image_size=image_size, seed=seed, use_cache=False)))
