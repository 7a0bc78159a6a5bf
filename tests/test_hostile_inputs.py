"""Hostile inputs (issue 11): every malformed or malicious input ends in one EdgekdError, nothing is written.

One table of cases per entry point, each row: how to make the input (in the test), the call, what the message
must say. ``assert_refused`` checks the common contract: an EdgekdError with a one-line problem and a fix, and no
file created, changed or removed in the user's folder or the cache. Sections for other entry points (build,
calibrate, bundle, bench, gate, runner) add their own tables below the data section.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from data_makers import (
    fraud_table,
    idx_bytes,
    idx_dir,
    image_folder,
    npy_bytes,
    npz_arrays,
    tar_info,
    tar_members,
    write_csv,
    write_npz,
    zip_members,
)
from PIL import Image

from edgekd.data import load_dataset
from edgekd.errors import EdgekdError


# ------------------------------------------------------------------------------------------------ shared contract
def snapshot(*roots: Path) -> dict[str, str]:
    """Every file under ``roots`` (path -> sha256): to prove nothing was written, changed or removed."""
    files = {}
    for root in roots:
        for path in sorted(root.rglob("*")) if root.exists() else []:
            if path.is_file() or path.is_symlink():
                files[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "link"
    return files


def assert_refused(call: Callable[[], object], match: str, *watched: Path) -> EdgekdError:
    """``call`` raises one clear EdgekdError matching ``match`` and leaves every file under ``watched`` as it was."""
    before = snapshot(*watched)
    with pytest.raises(EdgekdError, match=match) as info:
        call()
    assert snapshot(*watched) == before, "a refused input must not write, change or remove files"
    error = info.value
    assert error.problem and "\n" not in error.problem and error.fix, (error.problem, error.fix)
    assert "Traceback" not in str(error)
    return error


@dataclass
class Hostile:
    id: str
    make: Callable[[Path], Path | str]  # writes the input under the given folder, returns the spec
    match: str
    kwargs: dict = field(default_factory=dict)
    env: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------------------- data
def _idx(mutate: Callable[[Path], None]) -> Callable[[Path], Path]:
    def make(root: Path) -> Path:
        folder = idx_dir(root / "idx")
        mutate(folder)
        return folder
    return make


def _set(name: str, data: bytes) -> Callable[[Path], None]:
    return lambda folder: (folder / name).write_bytes(data)


def _gz_images(data: bytes) -> Callable[[Path], None]:
    """Replace the plain training images by a ``.gz`` holding ``data``."""
    def mutate(folder: Path) -> None:
        (folder / IMAGES).unlink()
        (folder / f"{IMAGES}.gz").write_bytes(data)
    return mutate


IMAGES, LABELS = "train-images-idx3-ubyte", "train-labels-idx1-ubyte"
SMALL = np.zeros((40, 6, 6), np.uint8)


def _npz(**changes) -> Callable[[Path], Path]:
    def make(root: Path) -> Path:
        arrays = {**npz_arrays(), **changes}
        return write_npz(root / "d.npz", **{k: v for k, v in arrays.items() if v is not None})
    return make


def _npz_raw(member: str, data: bytes) -> Callable[[Path], Path]:
    """An .npz whose ``member`` is replaced by hand-made ``.npy`` bytes."""
    def make(root: Path) -> Path:
        members = {}
        for key, value in npz_arrays().items():
            buffer = io.BytesIO()
            np.save(buffer, value)
            members[f"{key}.npy"] = buffer.getvalue()
        members[f"{member}.npy"] = data
        return zip_members(root / "d.npz", members)
    return make


class _Payload:
    """Unpickling this creates a marker file: the proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _pickle_npz(root: Path) -> Path:
    payload = np.empty(20, dtype=object)
    payload[:] = [_Payload(root.parent / "PWNED")] * 20
    buffer = io.BytesIO()
    np.save(buffer, payload, allow_pickle=True)
    return _npz_raw("y_train", buffer.getvalue())(root)


def _png_claiming(width: int, height: int) -> bytes:
    """A 1x1 PNG whose header claims ``width x height``: a decompression bomb's calling card."""
    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(data)


def _folder(write: Callable[[Path], None], **kwargs) -> Callable[[Path], Path]:
    def make(root: Path) -> Path:
        folder = image_folder(root / "photos", **kwargs)
        write(folder)
        return folder
    return make


def _truncated_jpeg(folder: Path) -> None:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3)).astype(np.uint8)).save(buffer, "JPEG")
    (folder / "train" / "cat" / "broken.jpg").write_bytes(buffer.getvalue()[:400])


def _tar(*members: tuple[tarfile.TarInfo, bytes | None]) -> Callable[[Path], Path]:
    return lambda root: tar_members(root / "data.tar.gz", list(members))


def _zip(members: dict[str, bytes], symlink: str | None = None) -> Callable[[Path], Path]:
    def make(root: Path) -> Path:
        path = zip_members(root / "data.zip", members)
        if symlink:
            with zipfile.ZipFile(path, "a") as zf:
                info = zipfile.ZipInfo(symlink)
                info.external_attr = 0o120777 << 16
                zf.writestr(info, "/etc/passwd")
        return path
    return make


def _csv(header: list[str], rows: list[list]) -> Callable[[Path], Path]:
    return lambda root: write_csv(root / "table.csv", header, rows)


def _parquet(columns: dict) -> Callable[[Path], Path]:
    def make(root: Path) -> Path:
        pa = pytest.importorskip("pyarrow")
        import pyarrow.parquet as pq

        root.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table(columns), root / "t.parquet")
        return root / "t.parquet"
    return make


def _empty_parquet(root: Path) -> Path:
    """Typed columns, no rows: what ``df.head(0).to_parquet`` writes."""
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    root.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"y": pa.array([], pa.int64()), "a": pa.array([], pa.float32())}), root / "t.parquet")
    return root / "t.parquet"


def _bytes_file(name: str, data: bytes) -> Callable[[Path], Path]:
    def make(root: Path) -> Path:
        root.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
        return root / name
    return make


ROWS = [[i % 2, 0.5 * i, i] for i in range(30)]
X, Y = fraud_table(60, 3)

DATA_CASES = [
    # IDX: header checked before any allocation
    Hostile("idx-bad-magic", _idx(_set(IMAGES, b"\x01\x02" + idx_bytes(SMALL)[2:])), "bad magic"),
    Hostile("idx-dtype-not-ubyte", _idx(_set(IMAGES, idx_bytes(SMALL, dtype_byte=0x0D))), "dtype byte 0x0d"),
    Hostile("idx-zero-dims", _idx(_set(IMAGES, idx_bytes(SMALL, ndim=0, dims=()))), "0 dimensions"),
    Hostile("idx-huge-declared-dims", _idx(_set(IMAGES, idx_bytes(SMALL[:0], dims=(60000, 60000, 60000)))),
            "over the data memory limit"),
    Hostile("idx-truncated-payload", _idx(_set(IMAGES, idx_bytes(SMALL)[:-100])), "payload is"),
    Hostile("idx-trailing-payload", _idx(_set(IMAGES, idx_bytes(SMALL) + b"\0" * 7)), "payload is"),
    Hostile("idx-truncated-gzip", _idx(_gz_images(gzip.compress(idx_bytes(SMALL))[:-10])), "truncated|cannot be read"),
    Hostile("idx-not-gzip", _idx(_gz_images(b"not gzip at all")), "cannot be read"),
    Hostile("idx-labels-2d", _idx(_set(LABELS, idx_bytes(np.zeros((40, 2))))), "labels must have 1 dim"),
    Hostile("idx-count-mismatch", _idx(_set(LABELS, idx_bytes(np.zeros(39)))), "40 train images but 39 labels"),
    Hostile("idx-test-images-other-shape", _idx(_set("t10k-images-idx3-ubyte", idx_bytes(np.zeros((8, 2, 6))))),
            "test samples have shape \\(1, 2, 6\\), training samples \\(1, 6, 6\\)"),  # issue 27, property tests
    # .npz: member headers read from the zip first; never unpickled
    Hostile("npz-not-a-zip", _bytes_file("d.npz", b"PK\x03\x04 this is not a zip"), "cannot read"),
    Hostile("npz-truncated", lambda r: _bytes_file("d.npz", _npz()(r / "src").read_bytes()[:300])(r),
            "cannot read"),
    Hostile("npz-object-array-pickle", _pickle_npz, "dtype object"),
    Hostile("npz-structured-dtype", _npz(x_train=np.zeros(20, [("a", "f4"), ("b", "f4")])), "dtype"),
    Hostile("npz-complex", _npz(x_train=np.zeros((20, 4), np.complex64)), "dtype complex64"),
    Hostile("npz-header-lies-about-size", _npz_raw("x_train", npy_bytes(
        {"descr": "<f4", "fortran_order": False, "shape": (10**7, 10**6)}, b"\0" * 64)), "declares shape"),
    Hostile("npz-over-memory-limit", _npz(), "over the data memory limit", env={"EDGEKD_DATA_MAX_BYTES": "256"}),
    Hostile("npz-missing-member", _npz(y_test=None), "lacks the arrays"),
    Hostile("npz-sample-shapes-differ", _npz(x_test=np.zeros((6, 5), np.float32)), "sample shape"),
    Hostile("npz-label-count", _npz(y_train=np.zeros(19)), "one label per sample"),
    Hostile("npz-nan", _npz(x_train=np.full((20, 4), np.nan, np.float32)), "NaN"),
    # labels: range and density
    Hostile("labels-fractional", _npz(y_train=np.linspace(0, 1, 20)), "whole numbers"),
    Hostile("labels-negative", _npz(y_train=-np.ones(20)), "negative"),
    Hostile("labels-one-hot", _npz(y_train=np.eye(3)[np.arange(20) % 3]), "one-hot"),
    Hostile("labels-over-class-cap", _npz(y_train=np.arange(20) % 6, y_test=np.arange(6)), "over the cap of 5",
            env={"EDGEKD_DATA_MAX_CLASSES": "5"}),
    Hostile("labels-an-id-column", _npz(y_train=np.arange(20) * 7), "distinct labels"),
    Hostile("labels-control-characters", _npz(y_train=np.array(["a\x1b[31m", "b"] * 10)), "control characters"),
    Hostile("labels-single-class", _npz(y_train=np.zeros(20)), "single class"),
    # ImageFolder: header sizes before decoding; one decoder per suffix
    Hostile("image-pixel-bomb", _folder(lambda f: (f / "train" / "cat" / "bomb.png").write_bytes(
        _png_claiming(60000, 60000))), "over the pixel cap"),
    Hostile("image-truncated-jpeg", _folder(_truncated_jpeg), "broken.jpg"),
    Hostile("image-not-an-image", _folder(lambda f: (f / "test" / "dog" / "x.png").write_text("hello")),
            "cannot read image .*x.png"),
    Hostile("image-eps-named-png", _folder(lambda f: (f / "train" / "dog" / "e.png").write_bytes(
        b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n(touch PWNED) run\n")), "cannot read image .*e.png"),
    Hostile("image-too-many-files", _folder(lambda f: None), "more than 3 files", env={"EDGEKD_DATA_MAX_FILES": "3"}),
    Hostile("image-unknown-test-class", _folder(lambda f: (f / "test" / "bird").mkdir()), "classes that train lacks"),
    Hostile("image-mixed-sizes", _folder(lambda f: Image.new("RGB", (9, 9)).save(f / "train" / "cat" / "big.png")),
            "resize all images"),
    # archives: nothing leaves the directory, no links, devices or bombs
    Hostile("tar-path-traversal", _tar((tar_info("../evil.txt"), b"x")), "outside the archive"),
    Hostile("tar-absolute-path", _tar((tar_info("/tmp/edgekd-evil.txt"), b"x")), "absolute"),
    Hostile("tar-symlink", _tar((tar_info("train", tarfile.SYMTYPE, "/etc"), None)), "is a link"),
    Hostile("tar-hardlink", _tar((tar_info("a.txt"), b"x"), (tar_info("b", tarfile.LNKTYPE, "a.txt"), None)),
            "is a link"),
    Hostile("tar-fifo", _tar((tar_info("pipe", tarfile.FIFOTYPE), None)), "device or FIFO"),
    Hostile("tar-device", _tar((tar_info("disk", tarfile.BLKTYPE), None)), "device or FIFO"),
    Hostile("tar-over-extract-cap", _tar((tar_info("big.bin"), b"\0" * 4096)), "unpacks to more than",
            env={"EDGEKD_DATA_MAX_EXTRACT_BYTES": "1K"}),
    Hostile("tar-repeated-member", _tar((tar_info("a.txt"), b"x"), (tar_info("./a.txt"), b"y")), "repeats an earlier"),
    Hostile("tar-corrupt", _bytes_file("data.tar.gz", gzip.compress(b"\x00" * 10) + b"garbage"), "cannot unpack"),
    Hostile("zip-path-traversal", _zip({"../../evil.txt": b"x"}), "outside the archive"),
    Hostile("zip-symlink", _zip({"a.txt": b"x"}, symlink="train"), "not a regular file"),
    Hostile("archive-no-known-layout", _tar((tar_info("readme.txt"), b"hello")), "none of the known layouts"),
    # tables
    Hostile("csv-text-column", _csv(["y", "city", "v"], [[0, "Paris", 1.0], [1, "Rome", 2.0]] * 15), "'city'"),
    Hostile("csv-missing-value", _csv(["y", "a", "v"], [[0, "", 1.0]] + ROWS), "missing values in feature"),
    Hostile("csv-ragged-row", _csv(["y", "a", "v"], ROWS + [[1, 2]]), "has 2 fields"),
    Hostile("csv-no-label-column-given", _csv(["y", "a", "v"], ROWS), "which column", kwargs={"label_column": None}),
    Hostile("csv-unknown-label-column", _csv(["y", "a", "v"], ROWS), "no column 'target'",
            kwargs={"label_column": "target"}),
    Hostile("csv-regression-target", _csv(["y", "a"], [[0.37 * i, i] for i in range(30)]), "whole numbers"),
    Hostile("csv-not-utf8", _bytes_file("t.csv", b"y,a\n0,\xff\xfe\n1,2\n"), "cannot read"),
    Hostile("csv-infinite", _csv(["y", "a"], [[i % 2, "inf" if i == 3 else i] for i in range(30)]),
            "infinite values in columns \\['a'\\]"),
    Hostile("parquet-garbage", _bytes_file("t.parquet", b"PAR1 not really PAR1"), "cannot read"),
    Hostile("parquet-text-feature", _parquet({"y": [0, 1] * 10, "city": ["a"] * 20}), "non-numeric type"),
    Hostile("parquet-nulls", _parquet({"y": [0, 1] * 10, "a": [1.0, None] * 10}), "missing values"),
    Hostile("parquet-no-rows", _empty_parquet, "has columns but no rows"),  # issue 27, class 4
    Hostile("csv-no-rows", _csv(["y", "a"], []), "has a header but no rows"),
    # options and environment
    Hostile("env-limit-not-a-size", _npz(), "is not a positive size", env={"EDGEKD_DATA_MAX_BYTES": "lots"}),
    Hostile("image-size-negative", _npz(), "not a size", kwargs={"image_size": -3}),
    Hostile("image-size-on-a-table", _csv(["y", "a"], ROWS), "image_size", kwargs={"image_size": 32}),
    Hostile("normalization-wrong-channels", _idx(lambda f: None), "3 means", kwargs={"normalization": "imagenet"}),
    Hostile("normalization-zero-std", _npz(), "> 0", kwargs={"normalization": {"mean": [0], "std": [0]}}),
    Hostile("normalization-unknown-name", _npz(), "unknown normalization", kwargs={"normalization": "imagenett"}),
]


@pytest.mark.parametrize("case", DATA_CASES, ids=lambda c: c.id)
def test_data_input_is_refused(case: Hostile, tmp_path, monkeypatch):
    user, cache = tmp_path / "user", tmp_path / "cache"
    monkeypatch.setenv("EDGEKD_CACHE", str(cache))
    for name, value in case.env.items():
        monkeypatch.setenv(name, value)
    spec = case.make(user)
    kwargs = {"label_column": "y", **case.kwargs}
    assert_refused(lambda: load_dataset(str(spec), **kwargs), case.match, user, cache)
    assert not (tmp_path / "PWNED").exists() and not (user / "PWNED").exists(), "the payload ran"
    assert not list(tmp_path.rglob("evil.txt")) and not Path("/tmp/edgekd-evil.txt").exists()
    assert not [p for p in cache.rglob("*") if ".staging-" in p.name], "staging directories are removed"


def test_gzip_bomb_behind_a_small_header_is_not_inflated(tmp_path, monkeypatch):
    """A gzip IDX whose header says 40x6x6 but which inflates to 32 MiB: refused after reading 1,441 bytes."""
    folder = idx_dir(tmp_path / "idx")
    _gz_images(gzip.compress(idx_bytes(SMALL) + b"\0" * (32 << 20), 1))(folder)
    read = []
    real_open = gzip.open

    def counting_open(*args, **kwargs):  # GzipFile.readinto goes through read: count there
        fh = real_open(*args, **kwargs)
        original = fh.read
        fh.read = lambda n=-1: read.append(len(data := original(n))) or data
        return fh

    monkeypatch.setattr(gzip, "open", counting_open)
    assert_refused(lambda: load_dataset(str(folder)), "continues past the declared shape", tmp_path)
    assert sum(read) <= 4 + 12 + SMALL.size + 1


# ------------------------------------------------------------------------------------------------ data via the CLI
CLI_DATA_CASES = [  # (command, case): the data reaches the CLI's load before anything is trained or written
    ("calibrate", Hostile("pickled-npz", _pickle_npz, "dtype object")),
    ("build", Hostile("idx-bomb", _idx(_set(IMAGES, idx_bytes(SMALL[:0], dims=(60000, 60000, 60000)))),
                      "over the data memory limit")),
    ("build", Hostile("tar-traversal", _tar((tar_info("../evil.txt"), b"x")), "outside the archive")),
    ("calibrate", Hostile("csv-without-label-column", _csv(["y", "a"], ROWS), "which column")),
]


@pytest.mark.parametrize(("command", "case"), CLI_DATA_CASES, ids=lambda c: c if isinstance(c, str) else c.id)
def test_cli_refuses_hostile_data(command: str, case: Hostile, tmp_path, monkeypatch, capsys):
    from edgekd.cli import main

    user, out = tmp_path / "user", tmp_path / "out"
    monkeypatch.setenv("EDGEKD_CACHE", str(tmp_path / "cache"))
    spec = str(case.make(user))
    before = snapshot(user)
    extra = ["--no-progress", "--cache-dir", str(tmp_path / "cache")] if command == "build" else []
    code = main([command, "--target", "x86-cpu", "--data", spec, "--out", str(out), *extra])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("edgekd: error: ") and lines[1].startswith("  fix: "), err
    assert "Traceback" not in err and case.match in err
    assert not out.exists() and snapshot(user) == before
    assert not (tmp_path / "PWNED").exists() and not list(tmp_path.rglob("evil.txt"))


def test_a_valid_imbalanced_table_is_not_refused(tmp_path):
    """The control: a clean table of the same shape as the hostile ones loads."""
    spec = write_csv(tmp_path / "t.csv", ["y", "a", "b", "c"], [[y, *x] for x, y in zip(X, Y, strict=True)])
    assert load_dataset(str(spec), label_column="y").input_shape == (3,)


# --------------------------------------------------------------------------------------- caches (issue 27, class 7)
# Every cache is opened through edgekd.data.cache.cache_entry, which checks the root, each folder down to the entry
# and the entry before a byte is read: a root or entry other users can write is refused, never read.
def _shared(path: Path) -> None:
    path.chmod(0o777 if path.is_dir() else 0o666)


def _decoded_images(root: Path, tmp_path: Path) -> Callable[[], object]:
    folder = image_folder(tmp_path / "photos")
    load_dataset(str(folder), cache_dir=root)  # a first build fills root/datasets/decoded/<key>/
    return lambda: load_dataset(str(folder), cache_dir=root)


def _teacher(root: Path, tmp_path: Path) -> Callable[[], object]:
    from edgekd.stages.teacher import cached_teacher_path

    path = cached_teacher_path(root, "key")
    path.write_bytes(b"planted")
    return lambda: cached_teacher_path(root, "key")


def _latency(root: Path, tmp_path: Path) -> Callable[[], object]:
    from edgekd.selection.candidates import Candidate
    from edgekd.selection.timing import Timer
    from edgekd.targets import load_target

    timer = Timer(load_target("x86-cpu"), (1, 8, 8), 3, np.zeros((4, 1, 8, 8), np.float32), root)
    candidate = Candidate("mlp", {"hidden": [8]}, 100, 100)
    path = timer._path(candidate)
    path.write_text('{"p50": 0.001, "p90": 0.001, "p95": 0.001, "p99": 0.001, "noise_pct": 0, '
                    '"runtime_version": "planted"}')
    assert timer.cached(candidate).runtime_version == "planted"  # a private cache is read
    return lambda: timer.cached(candidate)


def _scheme_memo(root: Path, tmp_path: Path) -> Callable[[], object]:
    pytest.importorskip("onnxruntime")
    from edgekd.backends import Calibration
    from edgekd.backends.onnx import SchemeMemo

    (tmp_path / "m.onnx").write_bytes(b"fp32 model bytes")
    calibration = Calibration(np.zeros((4, 3), np.float32), {})
    memo = SchemeMemo(root, tmp_path / "m.onnx", calibration, 1, ["u8s8", "s8s8"])
    memo.keep("s8s8", {"u8s8": 1.0, "s8s8": 0.5}, {"u8s8": 0.0, "s8s8": 0.0})
    assert memo.recall()["scheme"] == "s8s8"
    return memo.recall


CACHES = {"decoded-images": (_decoded_images, ("datasets", "decoded")), "teacher": (_teacher, ("teachers",)),
          "latency": (_latency, ("latency",)), "onnx-scheme-memo": (_scheme_memo, ("onnx_int8_scheme",))}


@pytest.mark.parametrize("cache", list(CACHES))
@pytest.mark.parametrize("shared", ["root", "folder", "entry"])
def test_a_cache_others_can_write_is_refused_before_it_is_read(cache, shared, tmp_path):
    root = tmp_path / "cache"
    make, folders = CACHES[cache]
    read_again = make(root, tmp_path)
    folder = root.joinpath(*folders)
    [entry] = [p for p in folder.iterdir() if not p.name.startswith(".")]
    _shared({"root": root, "folder": folder, "entry": entry}[shared])
    assert_refused(read_again, "can be written by other users", root)
