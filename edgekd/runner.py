#!/usr/bin/env python3
"""edgekd standalone benchmark runner.

Copy this one file to a device and run it there: it imports only the standard library, numpy (1.21+, 1.x
included) and the runtime of the artifact's format (onnxruntime, openvino, ai_edge_litert or tflite_runtime).
Never torch. Python 3.9+.

    python3 runner.py ARTIFACT --inputs EVAL.npz [--runs N] [--warmup N] [--threads N] [--json OUT]
    python3 runner.py TEXT_ARTIFACT --text "a raw sentence" [--text-file FILE] [--json OUT]

EVAL.npz holds ``x`` (normalised float32, NCHW or N x F), ``y`` (labels) and optionally ``teacher_logits`` and
``reference_logits`` (the PyTorch model's outputs, for parity). The artifact's sha256 is checked against the
``manifest.json`` beside it before anything runs.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import importlib
import io
import json
import os
import platform
import re
import subprocess
import sys
import time
import traceback
import unicodedata
import zipfile

if sys.version_info < (3, 9):  # pragma: no cover - only on old devices
    sys.stderr.write("runner error: runner.py needs Python 3.9 or newer, this is %s\n" % platform.python_version())
    sys.exit(2)

try:
    import numpy as np
    from numpy.lib import format as npy_format
except ImportError as _numpy_missing:  # pragma: no cover - only on a bare device
    sys.stderr.write("runner error: numpy is not installed (%s): pip install 'numpy>=1.21'\n" % _numpy_missing)
    sys.exit(2)

RUNNER_VERSION = "5"

# Timing defaults: enough timed runs for a p99 with several samples above it, and at least MIN_TIME_S of timed
# work so that sub-millisecond models aren't judged on a few milliseconds of clock; never more than MAX_RUNS.
DEFAULT_RUNS = 200
DEFAULT_WARMUP = 20
DEFAULT_BLOCKS = 5
MIN_TIME_S = 0.5
WARMUP_MIN_S = 0.1
MAX_RUNS = 2000
# What a manifest or an inputs file may make the runner read or allocate: checked before reading or allocating.
MAX_MANIFEST_BYTES = 16 << 20
MAX_MANIFEST_DEPTH = 100  # edgekd's manifests nest 4 levels
MAX_FILES_PER_ARTIFACT = 16
MAX_INPUT_BYTES = int(os.environ.get("EDGEKD_RUNNER_MAX_INPUT_BYTES", str(8 << 30)))
MAX_INPUT_MEMBERS = 64
MAX_COUNTS = {"--runs": 100000, "--warmup": 10000, "--threads": 1024, "--blocks": 1000, "--max-runs": 1000000,
              "--processes": 64}


class RunnerError(Exception):
    """A problem with the artifact, the inputs or the device setup, with the fix in the message."""


def missing_runtime(session_cls, module, exc):
    """Say which package to install: 'not installed' when absent, the import error when installed but broken."""
    fmt, hint = session_cls.format, session_cls.install_hint
    if isinstance(exc, ModuleNotFoundError) and (exc.name or "").split(".")[0] == module.split(".")[0]:
        return RunnerError("%s is not installed (format '%s'): %s" % (module, fmt, hint))
    return RunnerError("%s is installed but cannot be imported (%s); reinstall it: %s"
                       % (module, _first_line(exc), hint))


# ----------------------------------------------------------------------------------------------- sessions
SESSIONS = {}  # format name -> Session subclass: the runner's one table of formats


def register_session(cls):
    """Class decorator: the runner runs artifacts whose suffix is in ``cls.suffixes`` with ``cls``."""
    SESSIONS[cls.format] = cls
    return cls


class Session:
    """One loaded artifact. ``run`` takes a float32 batch in the canonical layout and returns float logits.

    A subclass declares its ``format``, the file ``suffixes`` it loads, its ``runtime`` and the ``install_hint``
    for a device that lacks it, and is registered with ``@register_session``.
    """

    format = ""
    suffixes = ()
    runtime = ""
    install_hint = ""
    runtime_version = ""
    static_batch = False
    inference_precision = "as stored"

    runtime_module = ""  # the Python module of the runtime, imported by ``import_runtime``
    companions = ()  # suffixes of files the artifact needs beside it (OpenVINO's .bin): hashed like the artifact
    loads_bytes = False  # True: __init__ takes ``contents`` (file name -> the verified bytes) and never re-opens

    @classmethod
    def import_runtime(cls):
        """Import the runtime's module (no model loaded) and return it; a clear RunnerError when it is missing."""
        if not cls.runtime_module:
            return None
        try:
            return importlib.import_module(cls.runtime_module)
        except ImportError as exc:
            raise missing_runtime(cls, cls.runtime_module, exc) from None

    def run(self, x):  # pragma: no cover - interface
        raise NotImplementedError

    def run_batched(self, x, batch_size=256):
        step = 1 if self.static_batch else batch_size
        return np.concatenate([self.run(x[i : i + step]) for i in range(0, len(x), step)])


ONNX_INPUT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int32)": np.int32,
                    "tensor(int64)": np.int64}


@register_session
class OnnxSession(Session):
    format = "onnx"
    suffixes = (".onnx",)
    runtime = "onnxruntime"
    install_hint = "pip install onnxruntime"
    runtime_module = "onnxruntime"
    loads_bytes = True

    def __init__(self, path, threads, precision=None, contents=None):
        ort = self.import_runtime()
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            source = contents[os.path.basename(path)] if contents else path
            self.sess = ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - the runtime's own error, made readable
            raise RunnerError("onnxruntime cannot load %s: %s" % (path, _first_line(exc))) from None
        inp = self.sess.get_inputs()[0]
        self.input_name = inp.name
        if inp.type not in ONNX_INPUT_TYPES:
            raise RunnerError("%s takes %s input '%s'; the runner feeds normalised float32 or int32 token ids "
                              "(re-export the model with such an input)" % (os.path.basename(path), inp.type, inp.name))
        self.input_dtype = ONNX_INPUT_TYPES[inp.type]
        self.input_shape = list(inp.shape)
        self.static_batch = isinstance(inp.shape[0], int)
        self.runtime_version = ort.__version__

    def run(self, x):
        return self.sess.run(None, {self.input_name: x.astype(self.input_dtype, copy=False)})[0].astype(np.float32)


@register_session
class OpenVinoSession(Session):
    format = "openvino"
    suffixes = (".xml",)
    runtime = "openvino"
    install_hint = "pip install openvino"
    runtime_module = "openvino"
    companions = (".bin",)
    loads_bytes = True

    def __init__(self, path, threads, precision=None, contents=None):
        ov = self.import_runtime()
        core = ov.Core()
        try:
            if contents:
                name = os.path.basename(path)
                model = core.read_model(contents[name], contents[os.path.splitext(name)[0] + ".bin"])
            else:
                model = core.read_model(path)
            config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}
            # The CPU plugin runs fp32 models in bf16 on CPUs that have it: pin the precision the artifact declares.
            capabilities = core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
            if precision == "fp32" or (precision == "fp16" and "FP16" not in capabilities):
                config["INFERENCE_PRECISION_HINT"] = "f32"
            elif precision == "fp16":
                config["INFERENCE_PRECISION_HINT"] = "f16"
            self.compiled = core.compile_model(model, "CPU", config)
        except Exception as exc:  # noqa: BLE001
            raise RunnerError("openvino cannot load %s: %s" % (path, _first_line(exc))) from None
        self.request = self.compiled.create_infer_request()
        element = model.inputs[0].get_element_type()
        if not (element.is_real() or element.get_type_name() in ("i32", "i64")):
            raise RunnerError("%s takes %s input; the runner feeds normalised float32 or int32 token ids (re-export "
                              "the model with such an input)" % (os.path.basename(path), element.get_type_name()))
        self.input_dtype = np.float32 if element.is_real() else np.dtype(element.to_dtype())
        shape = model.inputs[0].get_partial_shape()
        self.input_shape = [d.get_length() if d.is_static else -1 for d in shape]
        self.static_batch = shape[0].is_static
        self.runtime_version = ov.get_version()
        hint = self.compiled.get_property("INFERENCE_PRECISION_HINT")
        self.inference_precision = hint.get_type_name() if hasattr(hint, "get_type_name") else str(hint)

    def run(self, x):
        # Write the sample into the request's own input tensor and infer: what a C++ app (and benchmark_app) does.
        # infer({0: x}) would bind a new tensor on every call, which costs the CPU plugin a rebinding each time
        # (measured: ~15-25 % on a 116 M-MAC CNN) and would make the runner slower than the runtime.
        tensor = self.request.get_input_tensor(0)
        if tuple(tensor.shape) == x.shape:
            np.copyto(tensor.data, x, casting="same_kind")
            self.request.infer()
        else:  # first call, or a new batch size on a dynamic-batch model
            self.request.infer({0: np.ascontiguousarray(x, dtype=self.input_dtype)})
        return np.array(self.request.get_output_tensor(0).data, dtype=np.float32)


@register_session
class TfliteSession(Session):
    format = "tflite"
    suffixes = (".tflite",)
    runtime = "ai_edge_litert"
    install_hint = "pip install ai-edge-litert   (or, on older boards: pip install tflite-runtime 'numpy<2')"
    static_batch = True
    loads_bytes = True

    @classmethod
    def import_runtime(cls):
        return _tflite_interpreter()

    def __init__(self, path, threads, precision=None, contents=None):
        interpreter_cls, self.runtime, self.runtime_version = self.import_runtime()
        try:
            if contents:
                self.interp = interpreter_cls(model_content=contents[os.path.basename(path)], num_threads=threads)
            else:
                self.interp = interpreter_cls(model_path=path, num_threads=threads)
            self.interp.allocate_tensors()
        except Exception as exc:  # noqa: BLE001
            raise RunnerError("the TFLite interpreter cannot load %s: %s" % (path, _first_line(exc))) from None
        self.inp = self.interp.get_input_details()[0]
        self.out = self.interp.get_output_details()[0]
        self.input_shape = [int(d) for d in self.inp["shape"]]

    def _to_model_layout(self, x):
        if x.ndim == 4 and list(x.shape[1:]) != self.input_shape[1:]:
            nhwc = x.transpose(0, 2, 3, 1)
            if list(nhwc.shape[1:]) == self.input_shape[1:]:
                return nhwc
        return x

    def run(self, x):
        x = self._to_model_layout(x)
        if list(x.shape) != self.input_shape:
            raise RunnerError("input shape %s does not match the model's %s" % (list(x.shape), self.input_shape))
        dtype = self.inp["dtype"]
        if np.issubdtype(dtype, np.integer) and np.issubdtype(x.dtype, np.floating):  # token ids go in as they are
            scale, zero = self.inp["quantization"]
            info = np.iinfo(dtype)
            q = x / scale  # TFLite's QUANTIZE rounds half away from zero (np.round would round half to even)
            x = np.clip(np.sign(q) * np.floor(np.abs(q) + 0.5) + zero, info.min, info.max).astype(dtype)
        else:
            x = x.astype(dtype)
        self.interp.set_tensor(self.inp["index"], x)
        self.interp.invoke()
        y = self.interp.get_tensor(self.out["index"])
        if np.issubdtype(y.dtype, np.integer):
            scale, zero = self.out["quantization"]
            y = (y.astype(np.float32) - zero) * scale
        return y.astype(np.float32)


def _tflite_interpreter():
    try:
        import ai_edge_litert  # lazy: optional [tflite] runtime, absent on most devices
        from ai_edge_litert import interpreter as litert  # lazy: as above

        return litert.Interpreter, "ai_edge_litert", getattr(ai_edge_litert, "__version__", "unknown")
    except ImportError:
        pass
    try:
        import tflite_runtime  # lazy: the older TFLite runtime, the fallback when ai_edge_litert is absent
        from tflite_runtime import interpreter as tfl  # lazy: as above

        return tfl.Interpreter, "tflite_runtime", getattr(tflite_runtime, "__version__", "unknown")
    except ImportError:
        pass
    raise RunnerError("no TFLite interpreter is installed: " + TfliteSession.install_hint)


def session_for_format(fmt):
    if fmt not in SESSIONS:
        raise RunnerError("no session for format '%s' (known: %s; a plugin format needs --session-plugin FILE)"
                          % (fmt, ", ".join(sorted(SESSIONS))))
    return SESSIONS[fmt]


def artifact_format(path):
    suffix = os.path.splitext(path)[1].lower()
    by_suffix = {sfx: fmt for fmt, cls in SESSIONS.items() for sfx in cls.suffixes}
    if suffix not in by_suffix:
        raise RunnerError("unknown artifact type '%s': expected one of %s (other formats need --session-plugin)"
                          % (suffix, sorted(by_suffix)))
    return by_suffix[suffix]


PLUGIN_OF_FORMAT = {}  # format -> the plugin file that registered its session here (passed on to a memory probe)


def plugin_args(fmt):
    """The --session-plugin arguments a child process needs for ``fmt``: its own plugin only, never every plugin
    this process happened to import (a stale one from an earlier build must not be re-imported unverified)."""
    path = PLUGIN_OF_FORMAT.get(fmt)
    return ["--session-plugin", path] if path and fmt in SESSIONS else []


def import_verified(path, expected_sha256, what):
    """Import a Python file shipped beside the artifacts from the exact bytes whose sha256 was checked."""
    try:
        with open(path, "rb") as fh:
            source = fh.read()
    except OSError as exc:
        raise RunnerError("cannot read %s %s: %s" % (what, path, _first_line(exc))) from None
    actual = hashlib.sha256(source).hexdigest()
    if expected_sha256 is not None and actual != expected_sha256:
        raise RunnerError("sha256 mismatch for %s %s: manifest says %s..., file is %s...; refusing to import it"
                          % (what, os.path.basename(path), expected_sha256[:12], actual[:12]))
    name = "edgekd_shipped_" + os.path.splitext(os.path.basename(path))[0].replace("-", "_")
    module = type(sys)(name)
    module.__file__ = os.path.abspath(path)
    try:
        exec(compile(source, module.__file__, "exec"), module.__dict__)  # noqa: S102 - verified bytes
    except Exception as exc:  # noqa: BLE001
        raise RunnerError("%s %s failed to import: %s" % (what, path, _first_line(exc))) from None
    return module


def import_plugin(path, expected_sha256=None):
    """Import a session plugin file (a format beyond the built-in three) from the exact bytes that were verified."""
    # A plugin imports this module as ``edgekd_runner`` wherever it runs: ``edgekd.runner`` in the build,
    # ``__main__`` on a device.
    this = sys.modules.get(__name__)
    if this is None:  # loaded by a loader that did not register it: a view of the same globals
        this = type(sys)(__name__)
        this.__dict__.update(globals())
    sys.modules.setdefault("edgekd_runner", this)
    before = dict(SESSIONS)
    module = import_verified(path, expected_sha256, "session plugin")
    for fmt, cls in SESSIONS.items():
        if before.get(fmt) is not cls:
            PLUGIN_OF_FORMAT[fmt] = os.path.abspath(path)
    return module


def load_session(path, threads=1, precision=None, contents=None):
    """Load an artifact in its real runtime; ``precision`` defaults to what its manifest entry declares.

    ``contents`` (from ``verify_artifact``): the exact bytes that were hashed; a session that can load from memory
    does, so a file swapped between the check and the load is never run.
    """
    if not os.path.isfile(path):
        raise RunnerError("artifact not found: %s" % path)
    if precision is None:
        precision = (find_manifest_entry(path)[1] or {}).get("precision")
    cls = session_for_format(artifact_format(path))
    if contents is not None and cls.loads_bytes:
        return cls(path, threads, precision, contents=contents)
    return cls(path, threads, precision)


# ----------------------------------------------------------------------------------------------- manifest
def sha256_file(path, chunk=1 << 20):
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_capped(path, limit, what):
    """A file's bytes, refused before reading when it is larger than ``limit``."""
    try:
        size = os.path.getsize(path)
        if size > limit:
            raise RunnerError("%s %s is %d bytes, more than the %d this runner reads" % (what, path, size, limit))
        with open(path, "rb") as fh:
            return fh.read(limit + 1)
    except OSError as exc:
        raise RunnerError("cannot read %s %s: %s" % (what, path, _first_line(exc))) from None


_JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def _load_manifest(manifest_path):
    """manifest.json decoded, within MAX_MANIFEST_BYTES and MAX_MANIFEST_DEPTH levels of nesting: ``json`` recurses
    once per level, so a file of ten thousand '[' would be a RecursionError instead of a message (edgekd's own
    reader, ``edgekd.io.loads_json``, has the same limits; this file may not import edgekd)."""
    text = _read_capped(manifest_path, MAX_MANIFEST_BYTES, "manifest").decode("utf-8")
    depth = 0
    for token in _JSON_TOKEN.finditer(text):  # strings are matched whole, so brackets inside them don't count
        depth += {"[": 1, "{": 1, "]": -1, "}": -1}.get(token.group(), 0)
        if depth > MAX_MANIFEST_DEPTH:
            raise RunnerError("%s nests more than %d levels deep: not an edgekd manifest"
                              % (manifest_path, MAX_MANIFEST_DEPTH))
    return json.loads(text)


def find_manifest_entry(artifact):
    """The manifest entry of ``artifact`` from manifest.json beside it, or None when there is none."""
    manifest_path = os.path.join(os.path.dirname(os.path.abspath(artifact)), "manifest.json")
    if not os.path.isfile(manifest_path):
        return None, None
    try:
        manifest = _load_manifest(manifest_path)
    except (ValueError, RecursionError) as exc:
        raise RunnerError("cannot read %s: %s" % (manifest_path, _first_line(exc))) from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("artifacts", []), list):
        raise RunnerError("%s is not an edgekd manifest (expected a JSON object with an 'artifacts' list)"
                          % manifest_path)
    name = os.path.basename(artifact)
    for entry in manifest.get("artifacts", []):
        if isinstance(entry, dict) and entry.get("path") == name:
            return manifest, entry
    return manifest, None


def _is_sha256(value):
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def _hashed_files(entry, artifact):
    """The (name, sha256) pairs an entry lists, which must include the artifact and its companion files."""
    name = os.path.basename(artifact)
    files = entry.get("files")
    if not isinstance(files, list) or not 1 <= len(files) <= MAX_FILES_PER_ARTIFACT:
        raise RunnerError("manifest entry for %s has no valid 'files' list (1..%d files with their sha256)"
                          % (name, MAX_FILES_PER_ARTIFACT))
    pairs = []
    for item in files:
        if not isinstance(item, dict) or not isinstance(item.get("path"), str) or not _is_sha256(item.get("sha256")):
            raise RunnerError("manifest entry for %s lists a file without a path and a sha256" % name)
        if os.path.basename(item["path"]) != item["path"] or item["path"] in ("", ".", ".."):
            raise RunnerError("manifest entry for %s names '%s', which is not a file beside it" % (name, item["path"]))
        pairs.append((item["path"], item["sha256"]))
    hashed = dict(pairs)
    cls = SESSIONS.get(artifact_format(artifact))
    needed = [name] + [os.path.splitext(name)[0] + sfx for sfx in getattr(cls, "companions", ())]
    unhashed = [n for n in needed if n not in hashed]
    if unhashed:
        raise RunnerError("manifest.json beside %s does not hash %s: refusing to run files it cannot verify "
                          "(rebuild the run, or use --no-verify to skip)" % (name, ", ".join(unhashed)))
    if entry.get("sha256") != hashed[name]:
        raise RunnerError("manifest entry for %s gives two different sha256 values for it" % name)
    return pairs


def load_plugin(plugin, artifact, verify=True):
    """Import a session plugin; with ``verify``, only one the manifest beside ``artifact`` lists with its sha256."""
    expected = None
    if verify:
        manifest, _ = find_manifest_entry(artifact)
        listed = {p.get("path"): p.get("sha256") for p in (manifest or {}).get("session_plugins", [])
                  if isinstance(p, dict)}
        expected = listed.get(os.path.basename(plugin))
        if expected is None:
            raise RunnerError("session plugin %s is not listed in the manifest beside %s: refusing to import "
                              "unverified code (use --no-verify to skip)" % (plugin, artifact))
    return import_plugin(plugin, expected)


def verify_artifact(artifact):
    """Refuse to run an artifact whose files don't match the sha256 recorded in its manifest.

    Returns (entry, contents): ``contents`` maps each listed file name to the exact bytes that were hashed, which
    the session then loads (never re-opening the files after the check).
    """
    manifest, entry = find_manifest_entry(artifact)
    if manifest is None:
        raise RunnerError("no manifest.json beside %s: cannot verify its sha256 (use --no-verify to skip)" % artifact)
    if entry is None:
        raise RunnerError("manifest.json beside %s does not list it (use --no-verify to skip)" % artifact)
    base = os.path.dirname(os.path.abspath(artifact))
    contents = {}
    for name, expected in _hashed_files(entry, artifact):
        path = os.path.join(base, name)
        if not os.path.isfile(path):
            raise RunnerError("%s is missing: the manifest lists it as part of %s (copy it beside the artifact)"
                              % (name, os.path.basename(artifact)))
        content = _read_capped(path, MAX_INPUT_BYTES, "artifact file")
        actual = hashlib.sha256(content).hexdigest()
        if actual != expected:
            raise RunnerError(
                "sha256 mismatch for %s: manifest says %s..., file is %s...; the file was changed or corrupted, "
                "refusing to run it" % (name, expected[:12], actual[:12])
            )
        contents[name] = content
    return entry, contents


def verify_inputs(inputs, artifact, sha256):
    """True when ``inputs`` are the manifest's eval inputs (beside it, same name) and match its sha256.

    Other inputs (``--inputs`` of the user's own) run but are reported unverified; the manifest's own file with
    other bytes is refused: its labels decide the accuracy the gate reads.
    """
    manifest, _ = find_manifest_entry(artifact)
    recorded = (manifest or {}).get("eval_inputs") or {}
    beside = os.path.dirname(os.path.abspath(inputs)) == os.path.dirname(os.path.abspath(artifact))
    if not isinstance(recorded, dict) or not beside or os.path.basename(inputs) != recorded.get("path"):
        return False
    if recorded.get("sha256") != sha256:
        raise RunnerError("sha256 mismatch for %s: manifest says %s..., file is %s...; the evaluation inputs were "
                          "changed, refusing to score on them" % (os.path.basename(inputs),
                                                                  str(recorded.get("sha256"))[:12], sha256[:12]))
    return True


# ----------------------------------------------------------------------------------------------- text
# A text artifact takes int32 token ids. The encoder below repeats edgekd's training-side tokenizer
# (edgekd/data/tokenizer.py: Hugging Face tokenizers' BertNormalizer + BertPreTokenizer + WordPiece) in pure Python
# over the bundled vocab.txt, so a board needs neither `tokenizers` nor torch; tests/text checks both give the same
# ids. The manifest's `tokenizer` names the two files and their sha256, checked before they are read.
MAX_TEXT_BYTES = 64 << 20
MAX_TEXTS = 100000
TOKENIZER_FORMAT = "edgekd-wordpiece-1"
CJK_RANGES = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F), (0x2B740, 0x2B81F),
              (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))


def _is_bert_punctuation(ch):
    return (ch.isascii() and not ch.isalnum() and 33 <= ord(ch) <= 126) or unicodedata.category(ch).startswith("P")


def _bert_normalize(text, settings):
    """BertNormalizer: drop NUL/U+FFFD/control characters, whitespace to ' ', space out CJK ideographs, strip
    accents (NFD, drop non-spacing marks), lower-case: in the order `tokenizers` applies them."""
    out = []
    for ch in text:
        if ch in ("\x00", "\ufffd") or (ch not in "\t\n\r" and unicodedata.category(ch).startswith("C")):
            continue
        if ch in "\t\n\r" or ch.isspace():
            out.append(" ")
        elif any(lo <= ord(ch) <= hi for lo, hi in CJK_RANGES):
            out.append(" %s " % ch)
        else:
            out.append(ch)
    text = "".join(out)
    if settings.get("strip_accents", True):
        text = "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")
    return text.lower() if settings.get("lowercase", True) else text


def _bert_words(text):
    """BertPreTokenizer: split on whitespace, and every punctuation character is a word of its own."""
    words = []
    for chunk in text.split():
        start = 0
        for i, ch in enumerate(chunk):
            if _is_bert_punctuation(ch):
                if i > start:
                    words.append(chunk[start:i])
                words.append(ch)
                start = i + 1
        if start < len(chunk):
            words.append(chunk[start:])
    return words


class WordPieceEncoder:
    """Greedy longest-match WordPiece over a vocab.txt: text -> int32 ids [1, max_len], padded with [PAD] (0)."""

    def __init__(self, vocab, settings):
        self.vocab = {token: i for i, token in enumerate(vocab)}
        self.settings = settings
        self.max_len = int(settings["max_len"])
        self.prefix = settings.get("continuing_prefix", "##")
        self.max_chars = int(settings.get("max_input_chars_per_word", 100))
        self.unk = self.vocab[settings.get("unk_token", "[UNK]")]
        # A BERT teacher's vocabulary: [CLS] ... [SEP] around every text, [SEP] kept last when a text is cut.
        self.first = [self.vocab[settings["cls_token"]]] if settings.get("cls_token") else []
        self.last = [self.vocab[settings["sep_token"]]] if settings.get("sep_token") else []

    def _word_ids(self, word):
        if len(word) > self.max_chars:
            return [self.unk]
        ids, start = [], 0
        while start < len(word):
            end = len(word)
            while end > start:
                piece = word[start:end] if start == 0 else self.prefix + word[start:end]
                if piece in self.vocab:
                    ids.append(self.vocab[piece])
                    break
                end -= 1
            if end == start:
                return [self.unk]
            start = end
        return ids

    def ids(self, text):
        """Every token id of ``text``, untruncated."""
        out = list(self.first)
        for word in _bert_words(_bert_normalize(text, self.settings)):
            out.extend(self._word_ids(word))
        return out + self.last

    def encode(self, text):
        ids = self.ids(text)
        if len(ids) > self.max_len:
            ids = ids[: self.max_len - len(self.last)] + self.last
        x = np.zeros((1, self.max_len), np.int32)
        x[0, : len(ids)] = ids
        return x


def load_text_encoder(artifact, verify=True):
    """The WordPiece encoder the manifest beside ``artifact`` names, its files checked by sha256 first."""
    manifest, _ = find_manifest_entry(artifact)
    spec = (manifest or {}).get("tokenizer")
    if not isinstance(spec, dict):
        raise RunnerError("%s was not built for text: the manifest beside it names no tokenizer (--text and "
                          "--text-file need a text artifact)" % os.path.basename(artifact))
    base, contents = os.path.dirname(os.path.abspath(artifact)), {}
    for key in ("vocab_file", "settings_file"):
        name, expected = spec.get(key), spec.get(key.replace("_file", "_sha256"))
        if not isinstance(name, str) or os.path.basename(name) != name or not _is_sha256(expected):
            raise RunnerError("the manifest's tokenizer lists %s without a file name beside it and its sha256" % key)
        content = _read_capped(os.path.join(base, name), MAX_TEXT_BYTES, "tokenizer file")
        if verify and hashlib.sha256(content).hexdigest() != expected:
            raise RunnerError("sha256 mismatch for %s: the tokenizer file was changed or corrupted, refusing to use "
                              "it" % name)
        contents[key] = content.decode("utf-8")
    settings = json.loads(contents["settings_file"])
    if not isinstance(settings, dict) or settings.get("format") != TOKENIZER_FORMAT:
        raise RunnerError("the tokenizer settings are not %s (a newer edgekd? copy its runner.py)" % TOKENIZER_FORMAT)
    vocab = contents["vocab_file"].split("\n")[:-1]
    return WordPieceEncoder(vocab, settings), manifest


def read_texts(text, text_file):
    """The strings to classify: ``--text`` ones, then one per non-empty line of ``--text-file`` (UTF-8)."""
    texts = list(text or [])
    if text_file:
        content = _read_capped(text_file, MAX_TEXT_BYTES, "text file")
        try:
            texts += [line for line in content.decode("utf-8-sig").splitlines() if line.strip()]
        except UnicodeDecodeError as exc:
            raise RunnerError("%s is not UTF-8 text: %s" % (text_file, _first_line(exc))) from None
    if not texts or len(texts) > MAX_TEXTS:
        raise RunnerError("give 1..%d texts to classify (--text TEXT or --text-file FILE), got %d"
                          % (MAX_TEXTS, len(texts)))
    return texts


def classify_texts(artifact, texts, threads=1, verify=True):
    """Tokenize each raw string here, run the artifact on it, and time both per text (batch 1)."""
    encoder, manifest = load_text_encoder(artifact, verify)
    entry, contents = verify_artifact(artifact) if verify else (None, None)
    session = load_session(artifact, threads, (entry or {}).get("precision"), contents)
    classes = manifest.get("classes") or []
    session.run(encoder.encode(texts[0]))  # warm-up: the first inference allocates
    rows, tokenize_ms, inference_ms = [], [], []
    for text in texts:
        t0 = time.perf_counter_ns()
        x = encoder.encode(text)
        t1 = time.perf_counter_ns()
        logits = np.asarray(session.run(x), np.float64)[0]
        t2 = time.perf_counter_ns()
        tokenize_ms.append((t1 - t0) / 1e6)
        inference_ms.append((t2 - t1) / 1e6)
        p = np.exp(logits - logits.max())
        k = int(p.argmax())
        rows.append({"text": text[:200], "class": classes[k] if k < len(classes) else str(k), "index": k,
                     "probability": float(p[k] / p.sum()), "tokens": int((x != 0).sum()),
                     "truncated": len(encoder.ids(text)) > encoder.max_len})
    keep = ("p50", "p95", "mean")
    return {"runner_version": RUNNER_VERSION, "artifact": os.path.basename(artifact),
            "sha256_verified": entry is not None, "threads": threads, "texts": len(texts),
            "tokenizer": {"vocab_size": len(encoder.vocab), "max_len": encoder.max_len},
            "tokenize_ms": {k: percentiles(tokenize_ms)[k] for k in keep},
            "inference_ms": {k: percentiles(inference_ms)[k] for k in keep},
            "predictions": rows, "torch_imported": sys.modules.get("torch") is not None}


# ----------------------------------------------------------------------------------------------- measuring
# ARM "CPU part" ids (implementer 0x41) of the cores edge boards use: /proc/cpuinfo on arm64 names no model.
ARM_CORES = {"0xd03": "Cortex-A53", "0xd04": "Cortex-A35", "0xd05": "Cortex-A55", "0xd07": "Cortex-A57",
             "0xd08": "Cortex-A72", "0xd09": "Cortex-A73", "0xd0a": "Cortex-A75", "0xd0b": "Cortex-A76",
             "0xd0c": "Neoverse-N1", "0xd0d": "Cortex-A77", "0xd40": "Neoverse-V1", "0xd41": "Cortex-A78",
             "0xd42": "Cortex-A78AE", "0xd44": "Cortex-X1", "0xd46": "Cortex-A510", "0xd47": "Cortex-A710",
             "0xd48": "Cortex-X2", "0xd49": "Neoverse-N2", "0xd4b": "Cortex-A78C", "0xd4f": "Neoverse-V2"}
# The x86 feature flags that decide which int8 kernels a runtime can use (reported, and matched by targets).
X86_FLAGS = ("avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8")


def _read_text(path):
    try:
        with open(path, "rb") as fh:
            return fh.read().decode("utf-8", "replace").replace("\x00", "").strip() or None
    except OSError:
        return None


def _cpuinfo():
    """(cpu model, ARM core names, x86 flags of interest) from /proc/cpuinfo; empty where the OS has none."""
    first, parts = {}, []
    for line in (_read_text("/proc/cpuinfo") or "").splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip().lower(), value.strip()
        if key == "cpu part" and value.lower() not in parts:
            parts.append(value.lower())
        elif value and not (key == "model" and value.isdigit()):  # x86's "model" is a number
            first.setdefault(key, value)
    cpu = next((first[k] for k in ("model name", "model", "hardware", "cpu model") if k in first), "")
    flags = None
    if "flags" in first:
        have = set(first["flags"].split())
        flags = [f for f in X86_FLAGS if f in have]
    return cpu, [ARM_CORES.get(p, "arm-part-" + p) for p in parts], flags


def describe_machine():
    """Where the numbers came from: enough to tell a Raspberry Pi from a CI runner, and a busy one from an idle one.

    ``board`` is the device-tree model of ARM boards ("Raspberry Pi 4 Model B Rev 1.4"), ``cpu_cores`` the ARM
    core names, ``cpu_flags`` the x86 features of interest: what target files recognise their device by.
    """
    cpu, arm_cores, flags = _cpuinfo()
    cpu = cpu or platform.processor() or ""
    memory_mb = None
    for line in (_read_text("/proc/meminfo") or "").splitlines():
        if line.startswith("MemTotal:"):
            try:
                memory_mb = int(line.split()[1]) // 1024
            except (ValueError, IndexError):
                pass
            break
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    return {
        "arch": platform.machine(),
        "cpu": cpu,
        "board": _read_text("/proc/device-tree/model") or _read_text("/sys/firmware/devicetree/base/model"),
        "cpu_cores": arm_cores or None,
        "cpu_flags": flags,
        "cores": os.cpu_count(),
        "cores_usable": usable,
        "memory_mb": memory_mb,
        "os": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "hostname": platform.node(),
        "load_average": _load_average(),
    }


def _load_average():
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def percentiles(samples_ms):
    a = np.asarray(samples_ms, dtype=np.float64)
    return {
        "p50": float(np.percentile(a, 50)),
        "p90": float(np.percentile(a, 90)),
        "p95": float(np.percentile(a, 95)),
        "p99": float(np.percentile(a, 99)),
        "mean": float(a.mean()),
        "std": float(a.std()),
        "min": float(a.min()),
        "max": float(a.max()),
    }


def measure_latency(session, x, runs=DEFAULT_RUNS, warmup=DEFAULT_WARMUP, blocks=DEFAULT_BLOCKS,
                    min_time_s=MIN_TIME_S, max_runs=MAX_RUNS):
    """Latency of batch-1 inference, measured so that the numbers can be trusted.

    * Warm-up: at least ``warmup`` runs and at least WARMUP_MIN_S of them (caches, lazy kernels, CPU clocks).
    * Enough runs: at least ``runs``, raised (up to ``max_runs``) until the timed work lasts ``min_time_s``, so a
      0.05 ms model isn't judged on 10 ms of clock.
    * Noise: the runs are split into ``blocks`` blocks; the spread of the block medians relative to their median
      is ``noise_pct``. A busy machine shows up there instead of silently in p50.
    * Each sample times ``session.run`` alone (perf_counter_ns, the garbage collector paused), on inputs that were
      sliced beforehand.
    """
    blocks = max(1, int(blocks))
    samples = _batch1_samples(x)
    warm_done, t_start, warm_ms = 0, time.perf_counter(), []
    while warm_done < warmup or (warmup and time.perf_counter() - t_start < WARMUP_MIN_S and warm_done < warmup * 50):
        t0 = time.perf_counter_ns()
        session.run(samples[warm_done % len(samples)])
        warm_ms.append((time.perf_counter_ns() - t0) / 1e6)
        warm_done += 1
    # Size the blocks from the warm-up's steady state (median of its second half: robust to a slow first few).
    per_run_s = max(float(np.median(warm_ms[len(warm_ms) // 2:])) / 1000 if warm_ms else 0.0, 1e-7)
    wanted = max(int(runs), int(min(max_runs, min_time_s / per_run_s))) if warm_ms else int(runs)
    per_block = max(1, -(-wanted // blocks))  # ceil
    all_ms, block_medians = [], []
    load_before = _load_average()
    with _gc_paused():
        for b in range(blocks):
            block = _timed_block(session, samples, b * per_block, per_block)
            block_medians.append(float(np.median(block)))
            all_ms.extend(block)
    stats = percentiles(all_ms)
    med = float(np.median(block_medians))
    stats.update(
        {
            "runs": len(all_ms),
            "runs_requested": int(runs),
            "min_time_s": min_time_s,
            "warmup": warm_done,
            "blocks": blocks,
            "block_medians": block_medians,
            "samples_ms": [round(v, 6) for v in all_ms],
            "noise_pct": float(100.0 * (max(block_medians) - min(block_medians)) / med) if med > 0 else 0.0,
            "timer": "time.perf_counter_ns, resolution %g s" % time.get_clock_info("perf_counter").resolution,
            "load_average_before": load_before,
            "load_average_after": _load_average(),
        }
    )
    return stats, all_ms


DEFAULT_PAIRS = 20


def _batch1_samples(x):
    """Up to 64 batch-1 inputs, sliced and made contiguous before any timing starts."""
    return [np.ascontiguousarray(x[i % len(x)][None]) for i in range(min(len(x), 64))]


class _gc_paused:
    """The garbage collector off while timing (a collection inside a sample is not the model's time)."""

    def __enter__(self):
        self.was_enabled = gc.isenabled()
        gc.disable()

    def __exit__(self, *exc):
        if self.was_enabled:
            gc.enable()


def _timed_block(session, samples, start, count):
    """Milliseconds of ``count`` consecutive ``session.run`` calls, cycling through ``samples`` from ``start``."""
    out = []
    for i in range(count):
        sample = samples[(start + i) % len(samples)]
        t0 = time.perf_counter_ns()
        session.run(sample)
        out.append((time.perf_counter_ns() - t0) / 1e6)
    return out


def compare_latency(session, versus, x, pairs=DEFAULT_PAIRS, runs=DEFAULT_RUNS, min_time_s=MIN_TIME_S,
                    max_runs=MAX_RUNS, versus_first=False, keep_samples=False):
    """The latency ratio ``session / versus``, timed interleaved in this one process.

    Two runs minutes apart see different machines: on a shared or throttled host the block medians of one run
    already move by 2x, so a ratio of two separate runs' p50 can land either side of 1 by chance. Here the two
    models alternate in short blocks (A B, B A, A B, ...: a drift inside a pair hits both the same), each pair
    gives one ratio of block medians, and ``ratio`` is the median of those ``pairs`` ratios.
    ``versus_first``: the first pair starts with ``versus`` (B A, A B, ...). ``keep_samples``: the result also holds
    both models' samples (``samples_ms``, ``versus_samples_ms``), for statistics over several processes.
    """
    pairs = max(1, int(pairs))
    samples = _batch1_samples(x)
    warm = [_timed_block(s, samples, 0, 20)[10:] for s in ((versus, session) if versus_first else (session, versus))]
    per_pair_s = sum(float(np.median(w)) for w in warm) / 1000
    per_block = max(-(-int(runs) // pairs), int(min_time_s / max(per_pair_s * pairs, 1e-9)), 1)
    per_block = min(per_block, max(1, int(max_runs) // pairs))
    mine, theirs, ratios = [], [], []
    with _gc_paused():
        for p in range(pairs):
            order = (session, versus) if (p + bool(versus_first)) % 2 == 0 else (versus, session)
            blocks = {id(s): _timed_block(s, samples, p * per_block, per_block) for s in order}
            a, b = blocks[id(session)], blocks[id(versus)]
            ratios.append(float(np.median(a) / np.median(b)))
            mine.extend(a)
            theirs.extend(b)
    result = {"ratio": float(np.median(ratios)), "ratios": ratios, "pairs": pairs, "runs_per_block": per_block,
              "p50_ms": float(np.median(mine)), "versus_p50_ms": float(np.median(theirs)),
              "how": "interleaved in one process: %d pairs of %d-run blocks, order alternating" % (pairs, per_block)}
    if keep_samples:
        result.update({"samples_ms": [round(v, 6) for v in mine], "versus_samples_ms": [round(v, 6) for v in theirs]})
    return result


def _verified_session(artifact, threads, verify):
    """(manifest entry or None, loaded session) of ``artifact``, its sha256 checked first when ``verify``."""
    entry, contents = verify_artifact(artifact) if verify else (None, None)
    return entry, load_session(artifact, threads, (entry or {}).get("precision"), contents)


def measure_versus(session, versus_artifact, x, threads, verify, min_time_s, max_runs):
    """Verify and load ``versus_artifact`` (the teacher) and time ``session`` against it (compare_latency)."""
    entry, other = _verified_session(versus_artifact, threads, verify)
    _check_shape(other, x)
    result = compare_latency(session, other, x, min_time_s=min_time_s, max_runs=max_runs)
    result.update({"artifact": os.path.basename(versus_artifact), "format": other.format,
                   "sha256": (entry or {}).get("sha256"), "sha256_verified": entry is not None})
    return result


# ----------------------------------------------------------------------------------------------- processes
# One process is one draw of the machine's state for it (memory layout, frequency, caches): two runs in separate
# processes differ by more than the blocks of one run do. --processes N repeats the timing in fresh processes, one
# after another, so that the spread between processes is measured instead of assumed away.
PROCESS_QUANTILES = (5.0, 50.0, 95.0)


def process_quantiles(samples_ms):
    """The quantiles a gate compares between runs (p5, p50, p95) of one process's samples."""
    a = np.asarray(samples_ms, dtype=np.float64)
    return dict({"p%g" % q: float(np.percentile(a, q)) for q in PROCESS_QUANTILES}, runs=int(len(a)))


def _probe_command(artifact, inputs, threads, timing, first, versus, verify, preprocess):
    """A child runner's arguments for one --processes timing (its own plugins only, like a memory probe)."""
    cmd = [sys.executable, os.path.abspath(__file__), artifact, "--inputs", inputs, "--threads", str(threads),
           "--timing-probe", first, *[str(a) for a in timing], *([] if verify else ["--no-verify"]),
           *([] if preprocess else ["--no-preprocess"]), *plugin_args(artifact_format(artifact))]
    if versus:
        cmd += ["--versus", versus]
        if artifact_format(versus) != artifact_format(artifact):
            cmd += plugin_args(artifact_format(versus))
    return cmd


def timing_processes(artifact, inputs, threads, count, versus=None, verify=True, preprocess=True, runs=DEFAULT_RUNS,
                     warmup=DEFAULT_WARMUP, blocks=DEFAULT_BLOCKS, min_time_s=MIN_TIME_S, max_runs=MAX_RUNS):
    """The timing of ``count`` fresh child processes, one after another; with ``versus``, each interleaves the two
    artifacts (compare_latency) and the order alternates between processes (which is loaded and timed first)."""
    timing = ["--runs", runs, "--warmup", warmup, "--blocks", blocks, "--min-time", min_time_s, "--max-runs", max_runs]
    out = []
    for k in range(int(count)):
        first = "versus" if versus and k % 2 else "artifact"
        cmd = _probe_command(artifact, inputs, threads, timing, first, versus, verify, preprocess)
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        except subprocess.TimeoutExpired:
            raise RunnerError("timing process %d of %s took more than 600 s" % (k + 1, os.path.basename(artifact))) \
                from None
        if proc.returncode != 0:
            raise RunnerError("timing process %d failed: %s" % (k + 1, (proc.stderr.strip().splitlines() or ["?"])[-1]))
        out.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return out


def _timing_probe(artifact, inputs, threads, first, versus, verify, preprocess, timing):
    """Print one fresh process's timing: the artifact's quantiles, or (``versus``) both interleaved with samples."""
    data, _ = _read_inputs(inputs)
    if preprocess:
        x, _ = preprocess_inputs(data, artifact, verify)
        if x is not None:
            data["x"] = x
    roles = ["artifact"] if not versus else (["versus", "artifact"] if first == "versus" else ["artifact", "versus"])
    # loaded in the process's order, one session each even when both name the same file
    loaded = {role: _verified_session(artifact if role == "artifact" else versus, threads, verify)[1]
              for role in roles}
    for session in loaded.values():
        _check_shape(session, data["x"])
    session = loaded["artifact"]
    if not versus:
        _, samples = measure_latency(session, data["x"], **timing)
        print(json.dumps(process_quantiles(samples)))
        return
    result = compare_latency(session, loaded["versus"], data["x"], runs=timing["runs"],
                             min_time_s=timing["min_time_s"], max_runs=timing["max_runs"],
                             versus_first=first == "versus", keep_samples=True)
    print(json.dumps(dict(result, first=first)))


def versus_over_processes(children, versus_artifact, verify):
    """One --versus record from fresh processes: every pair's ratio pooled, each process kept (``processes``)."""
    entry = find_manifest_entry(versus_artifact)[1] if verify else None
    ratios = [r for c in children for r in c["ratios"]]
    return {"artifact": os.path.basename(versus_artifact), "format": artifact_format(versus_artifact),
            "ratio": float(np.median(ratios)), "ratios": ratios, "pairs": len(ratios),
            "runs_per_block": children[0]["runs_per_block"],
            "p50_ms": float(np.median([c["p50_ms"] for c in children])),
            "versus_p50_ms": float(np.median([c["versus_p50_ms"] for c in children])),
            "how": "interleaved in %d fresh processes (which goes first alternating), each %s"
                   % (len(children), children[0]["how"].split(": ", 1)[-1]),
            "sha256": (entry or {}).get("sha256"), "sha256_verified": entry is not None, "processes": children}


def peak_rss_mb():
    try:
        import resource  # lazy: POSIX only (absent on Windows devices)
    except ImportError:  # pragma: no cover - Windows
        return None
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024.0 * 1024.0) if sys.platform == "darwin" else rss / 1024.0


# What the memory budget judges: what loading and running the model adds to a process that already imported its
# runtime. The interpreter and the runtime's own libraries are there whatever the model (and differ between a
# Python runner and a C++ app); the evaluation set is not part of the model at all.
MEMORY_JUDGED = ("model_peak_over_baseline_mb: peak RSS while running the timed inputs minus the RSS of the same "
                 "process with the runtime imported and nothing loaded")
MEMORY_PROBE_SAMPLES = 64  # the inputs measure_latency cycles through: the probe reads these, never the whole set


def measure_memory(artifact, inputs, threads, runs=20, verify=False):
    """Memory of a fresh process (earlier work can't count): runtime baseline, model loaded, peak while running.

    ``verify``: the child checks the artifact's sha256 again and loads the bytes it checked, like the parent."""
    cmd = [sys.executable, os.path.abspath(__file__), artifact, "--inputs", inputs, "--threads", str(threads),
           "--memory-probe", str(runs), *([] if verify else ["--no-verify"]),
           *plugin_args(artifact_format(artifact))]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        raise RunnerError("memory probe of %s took more than 600 s" % os.path.basename(artifact)) from None
    if proc.returncode != 0:
        raise RunnerError("memory probe failed: %s" % (proc.stderr.strip().splitlines() or ["?"])[-1])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _npy_header(fh, key):
    """(shape, dtype) of a plain C-ordered .npy stream, read from its header alone (nothing allocated)."""
    version = npy_format.read_magic(fh)
    read_header = npy_format.read_array_header_1_0 if version == (1, 0) else npy_format.read_array_header_2_0
    shape, fortran_order, dtype = read_header(fh)
    if fortran_order or dtype.hasobject:
        raise ValueError("array '%s' is not a plain C-ordered array" % key)
    return shape, dtype


def _check_npz(content, path):
    """Every member's declared shape must fit in its declared size, and the sizes in MAX_INPUT_BYTES, before numpy
    allocates anything (a 30-byte header can otherwise ask for terabytes)."""
    try:
        with zipfile.ZipFile(io.BytesIO(content)) as archive:
            infos = archive.infolist()
            if len(infos) > MAX_INPUT_MEMBERS or sum(i.file_size for i in infos) > MAX_INPUT_BYTES:
                raise RunnerError("inputs %s declare %d arrays / %d bytes, more than the %d / %d this runner reads"
                                  % (path, len(infos), sum(i.file_size for i in infos), MAX_INPUT_MEMBERS,
                                     MAX_INPUT_BYTES))
            for info in infos:
                with archive.open(info) as fh:
                    shape, dtype = _npy_header(fh, info.filename)
                need = int(np.prod(np.asarray(shape, dtype=object))) * dtype.itemsize if shape else dtype.itemsize
                if need > info.file_size:
                    raise RunnerError("array '%s' in inputs %s declares shape %s (%d bytes) but holds %d bytes"
                                      % (info.filename, path, list(shape), need, info.file_size))
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise RunnerError("cannot read inputs %s: %s" % (path, _first_line(exc))) from None


def read_first_samples(path, count, key="x"):
    """The first ``count`` rows of array ``key`` of an .npz, decompressing only those bytes (the set can be large)."""
    try:
        with zipfile.ZipFile(path) as archive, archive.open(key + ".npy") as fh:
            shape, dtype = _npy_header(fh, key)
            if not shape:
                raise ValueError("array '%s' is not a batch" % key)
            rows = min(int(count), int(shape[0]))
            per_row = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
            data = fh.read(rows * per_row)
    except KeyError:
        raise RunnerError("inputs %s lack the array '%s'" % (path, key)) from None
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise RunnerError("cannot read inputs %s: %s" % (path, _first_line(exc))) from None
    if len(data) != rows * per_row:
        raise RunnerError("inputs %s are truncated (array '%s')" % (path, key))
    return np.frombuffer(data, dtype=dtype).reshape((rows,) + tuple(shape[1:]))


def _import_runtime(fmt):
    """Import the artifact's runtime without loading anything: the memory baseline includes its libraries."""
    return session_for_format(fmt).import_runtime()


def _proc_status_mb():
    """(VmRSS, VmHWM) of this process in MB from /proc/self/status (Linux), or None."""
    values = {}
    for line in (_read_text("/proc/self/status") or "").splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM") and rest.split():
            values[key] = int(rest.split()[0]) / 1024.0
    return (values["VmRSS"], values["VmHWM"]) if len(values) == 2 else None


def _reset_peak_rss():
    """Reset the process's peak RSS to its current RSS (Linux >= 4.0: /proc/self/clear_refs "5"); False if not."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        return False
    return _proc_status_mb() is not None


def _memory_probe(artifact, inputs, threads, runs, verify=False):
    """Print the runtime baseline, the model loaded and the peak while running the timed inputs (RSS, MB).

    On Linux the peak is reset to the current RSS once the runtime is imported, so transient allocations of the
    imports don't hide the model's; elsewhere ru_maxrss (peak since the process started) is the fallback.
    """
    _import_runtime(artifact_format(artifact))
    x = read_first_samples(inputs, MEMORY_PROBE_SAMPLES)
    if x.dtype not in (np.float32, np.int32) or x.ndim < 2 or len(x) == 0:
        raise RunnerError("inputs 'x' must be a non-empty float32 (or int32 token id) batch, got %s %s"
                          % (x.dtype, list(x.shape)))
    gc.collect()
    precise = _reset_peak_rss()
    baseline = _proc_status_mb()[0] if precise else peak_rss_mb()
    entry, contents = verify_artifact(artifact) if verify else (None, None)
    session = load_session(artifact, threads, (entry or {}).get("precision"), contents)
    loaded = _proc_status_mb()[0] if precise else peak_rss_mb()
    for i in range(runs):
        session.run(x[i % len(x)][None])
    peak = _proc_status_mb()[1] if precise else peak_rss_mb()
    over = None if peak is None or baseline is None else max(0.0, peak - baseline)
    print(json.dumps({"runtime_baseline_mb": baseline, "model_loaded_mb": loaded, "peak_mb": peak,
                      "model_peak_over_baseline_mb": over, "samples_read": int(len(x)), "runs": int(runs),
                      "method": "VmRSS/VmHWM after resetting the peak (Linux clear_refs)" if precise
                      else "ru_maxrss (peak since the process started)", "judged": MEMORY_JUDGED}))


def _read_inputs(path):
    """(arrays, sha256) of EVAL.npz, read once: the bytes hashed are the bytes scored."""
    if not os.path.isfile(path):
        raise RunnerError("inputs file not found: %s" % path)
    content = _read_capped(path, MAX_INPUT_BYTES, "inputs")
    _check_npz(content, path)
    try:
        with np.load(io.BytesIO(content), allow_pickle=False) as npz:
            data = {k: npz[k] for k in npz.files}
    except Exception as exc:  # noqa: BLE001
        raise RunnerError("cannot read inputs %s: %s" % (path, _first_line(exc))) from None
    return _check_inputs(data, path), hashlib.sha256(content).hexdigest()


def _check_inputs(data, path):
    """The arrays must be what the runner scores: float32 x, integer labels, logits lined up with x."""
    if "x" not in data:
        raise RunnerError("inputs %s lack the array 'x' (they hold %s)" % (path, sorted(data) or "nothing"))
    x = data["x"]
    if x.dtype not in (np.float32, np.int32):
        hint = ("normalise them the way the manifest's 'normalization' says, then x.astype(np.float32)"
                if not np.issubdtype(x.dtype, np.floating) else "save them as x.astype(np.float32)")
        raise RunnerError("inputs 'x' must be float32 (normalised as the manifest says) or int32 token ids, got %s: "
                          "%s" % (x.dtype, hint))
    if x.ndim < 2:
        raise RunnerError("inputs 'x' must be a batch (N, ...) of samples, got shape %s" % (list(x.shape),))
    if len(x) == 0:
        raise RunnerError("inputs %s hold no samples" % path)
    if not np.isfinite(x).all():
        raise RunnerError("inputs 'x' contain NaN or infinite values")
    if "y" in data:
        y = data["y"]
        if y.shape != (len(x),) or not np.issubdtype(y.dtype, np.integer):
            raise RunnerError("labels 'y' must be %d integers (one per sample of x), got %s %s"
                              % (len(x), y.dtype, list(y.shape)))
    for key in ("raw", "source"):
        if key in data and (len(data[key]) != len(x) or data[key].dtype.kind not in "uif"):
            raise RunnerError("'%s' must hold %d numeric samples like x, got %s %s"
                              % (key, len(x), data[key].dtype, list(data[key].shape)))
    if "text" in data and (data["text"].shape != (len(x),) or data["text"].dtype.kind != "U"):
        raise RunnerError("'text' must hold %d strings (one per sample of x), got %s %s"
                          % (len(x), data["text"].dtype, list(data["text"].shape)))
    if "source_data" in data:
        data["source"] = _ragged(data.pop("source_data"), data.pop("source_shapes", None), len(x))
    for key in ("teacher_logits", "reference_logits"):
        if key in data and (data[key].ndim != 2 or len(data[key]) != len(x)):
            raise RunnerError("'%s' must be (N, classes) with N = %d like x, got %s"
                              % (key, len(x), list(data[key].shape)))
    return data


def _ragged(flat, shapes, n):
    """Samples of different shapes stored as one flat buffer plus each sample's shape (no pickles)."""
    if shapes is None or shapes.ndim != 2 or len(shapes) > n or flat.ndim != 1 or flat.dtype.kind not in "uif" \
            or (shapes < 1).any():
        raise RunnerError("'source_data'/'source_shapes' in the inputs are inconsistent")
    sizes = np.prod(shapes, axis=1)
    if int(sizes.sum()) != len(flat):
        raise RunnerError("'source_data' holds %d values but 'source_shapes' describe %d" % (len(flat), sizes.sum()))
    ends = np.cumsum(sizes)
    return [flat[end - size:end].reshape(tuple(shape)) for end, size, shape in zip(ends, sizes, shapes)]


def _check_shape(session, x):
    want = [d for d in session.input_shape]
    got = [1] + list(x.shape[1:])
    fits = len(want) == len(got) and all(w in (-1, g) or not isinstance(w, int) for w, g in zip(want, got))
    if not fits and isinstance(session, TfliteSession) and x.ndim == 4:
        fits = [1] + list(x.transpose(0, 2, 3, 1).shape[1:]) == want
    if not fits:
        raise RunnerError("inputs have sample shape %s but the model expects %s (were they made for another "
                          "model or layout?)" % (list(x.shape[1:]), want[1:]))


def _check_outputs(logits, data):
    """The model's outputs must line up with the labels and the teacher's recorded outputs."""
    if logits.ndim != 2:
        raise RunnerError("the model returns shape %s; the runner expects logits (1, classes)" % (list(logits.shape),))
    classes = logits.shape[1]
    for key in ("teacher_logits", "reference_logits"):
        if key in data and data[key].shape[1] != classes:
            raise RunnerError("the model has %d outputs but '%s' in the inputs has %d classes (inputs of another "
                              "model?)" % (classes, key, data[key].shape[1]))
    if "y" in data and len(data["y"]) and (data["y"].min() < 0 or data["y"].max() >= classes):
        raise RunnerError("labels 'y' range over %d..%d but the model has %d classes"
                          % (data["y"].min(), data["y"].max(), classes))


def evaluate(session, data):
    """Accuracy (overall and per class), agreement with the teacher and parity with the reference."""
    x = data["x"]
    logits = session.run_batched(x)
    pred = logits.argmax(1)
    out = {"samples": int(len(x))}
    if "y" in data:
        y = data["y"]
        out["accuracy"] = float((pred == y).mean())
        out["per_class_accuracy"] = {
            str(int(c)): float((pred[y == c] == c).mean()) for c in np.unique(y)
        }
    if "teacher_logits" in data:
        out["agreement_with_teacher"] = float((pred == data["teacher_logits"].argmax(1)).mean())
    if "reference_logits" in data:
        ref = data["reference_logits"]
        out["parity"] = {
            "max_abs_diff": float(np.abs(logits - ref).max()),
            "top1_agreement": float((pred == ref.argmax(1)).mean()),
        }
    out["predictions"] = pred.astype(int).tolist()
    return out


def preprocess_inputs(data, artifact, verify=True):
    """Re-do edgekd's pre-processing from the raw test inputs, as the app on a device would, timing each sample.

    The manifest's ``preprocessing`` names the transform (normalisation; resize + centre crop when the build resized
    the source images) and the shipped module that applies it (verified by sha256 before it is imported). Returns
    the model inputs and what was measured, or (None, None) when the inputs carry no raw samples.
    """
    manifest, _ = find_manifest_entry(artifact)
    if "text" in data and (manifest or {}).get("tokenizer"):
        return tokenize_inputs(data, artifact, verify)
    spec = (manifest or {}).get("preprocessing") or {}
    raw, module_entry = data.get("raw"), spec.get("module") or {}
    source = data.get("source") if spec.get("applies_to") == "source" else None
    if (raw is None and source is None) or not module_entry.get("path"):
        return None, None
    name = module_entry["path"]
    if os.path.basename(name) != name:
        raise RunnerError("manifest names the pre-processing module '%s', which is not a file beside it" % name)
    module = import_verified(os.path.join(os.path.dirname(os.path.abspath(artifact)), name),
                             module_entry.get("sha256") if verify else None, "pre-processing module")
    n_source = len(source) if source is not None else 0
    if raw is None and n_source < len(data["x"]):
        return None, None
    # The first samples from their source size (the whole device pipeline: resize, crop, normalise), the rest, if
    # the build kept fewer sources, from the model-size raw samples (normalise only).
    normalize_only = {k: v for k, v in spec.items() if k not in ("image_size", "crop_fraction")}
    times, rows = [], []
    for i in range(len(data["x"])):
        t0 = time.perf_counter_ns()
        rows.append(module.preprocess_sample(source[i], spec) if i < n_source
                    else module.preprocess_sample(raw[i], normalize_only))
        if i < n_source or not n_source:
            times.append((time.perf_counter_ns() - t0) / 1e6)
    x = np.ascontiguousarray(np.stack(rows), dtype=np.float32)
    if x.shape != data["x"].shape:
        raise RunnerError("pre-processing the raw inputs gives shape %s, the model inputs are %s"
                          % (list(x.shape), list(data["x"].shape)))
    stats = percentiles(times)
    return x, {"applies_to": "source" if n_source else "raw", "samples": len(x), "samples_from_source": n_source,
               "ms": {k: stats[k] for k in ("p50", "p95", "mean")},
               "max_abs_diff_vs_build": float(np.abs(x - data["x"]).max())}


def tokenize_inputs(data, artifact, verify=True):
    """Text: the raw test strings tokenized here by the bundled vocabulary, each timed, as the app would."""
    encoder, _ = load_text_encoder(artifact, verify)
    times, rows = [], []
    for text in data["text"]:
        t0 = time.perf_counter_ns()
        rows.append(encoder.encode(str(text))[0])
        times.append((time.perf_counter_ns() - t0) / 1e6)
    x = np.stack(rows)
    if x.shape != data["x"].shape:
        raise RunnerError("tokenizing the raw texts gives shape %s, the model inputs are %s"
                          % (list(x.shape), list(data["x"].shape)))
    stats = percentiles(times)
    return x, {"applies_to": "text", "samples": len(x), "ms": {k: stats[k] for k in ("p50", "p95", "mean")},
               "ids_equal_build": bool(np.array_equal(x, data["x"])),
               "max_abs_diff_vs_build": float(np.abs(x.astype(np.int64) - data["x"]).max())}


def _check_counts(runs, warmup, threads, blocks, min_time_s, max_runs, processes=1):
    if min(runs, threads, blocks, max_runs, processes) < 1 or warmup < 0 or min_time_s < 0:
        raise RunnerError("--runs, --threads, --blocks, --max-runs and --processes must be >= 1, --warmup and "
                          "--min-time >= 0")
    given = {"--runs": runs, "--warmup": warmup, "--threads": threads, "--blocks": blocks, "--max-runs": max_runs,
             "--processes": processes}
    for flag, value in given.items():
        if value > MAX_COUNTS[flag]:
            raise RunnerError("%s %d is more than the %d this runner accepts" % (flag, value, MAX_COUNTS[flag]))
    if min_time_s > 3600:
        raise RunnerError("--min-time %s is more than the 3600 s this runner accepts" % min_time_s)


def benchmark(artifact, inputs, runs=DEFAULT_RUNS, warmup=DEFAULT_WARMUP, threads=1, verify=True, memory=True,
              blocks=DEFAULT_BLOCKS, min_time_s=MIN_TIME_S, max_runs=MAX_RUNS, preprocess=True, versus=None,
              processes=1):
    """Everything the device reports about one artifact, as a JSON-ready dict.

    ``versus``: another artifact (the teacher, or a baseline) to time this one against, interleaved
    (compare_latency). ``processes`` > 1: that interleaved timing runs in as many fresh processes (and each one's
    quantiles of the artifact are ``latency_ms.processes``); without ``versus``, the latency is also measured in
    processes - 1 fresh ones (``latency_ms.processes``)."""
    _check_counts(runs, warmup, threads, blocks, min_time_s, max_runs, processes)
    entry, contents = verify_artifact(artifact) if verify else (None, None)
    if versus and verify:
        verify_artifact(versus)  # refused before anything is timed (its sessions load the bytes they verify again)
    data, inputs_sha256 = _read_inputs(inputs)
    inputs_verified = verify_inputs(inputs, artifact, inputs_sha256) if verify else False
    pre = None
    if preprocess:
        x, pre = preprocess_inputs(data, artifact, verify)
        if x is not None:
            data["x"] = x  # scored on what the device's own pre-processing gives
    t0 = time.perf_counter()
    session = load_session(artifact, threads, (entry or {}).get("precision"), contents)
    load_ms = (time.perf_counter() - t0) * 1000
    _check_shape(session, data["x"])
    t0 = time.perf_counter()
    try:
        first = session.run(data["x"][:1])
    except RunnerError:
        raise
    except Exception as exc:  # noqa: BLE001 - the runtime's own error, made readable
        raise RunnerError("%s failed on the first input: %s" % (session.runtime, _first_line(exc))) from None
    first_ms = (time.perf_counter() - t0) * 1000
    _check_outputs(np.asarray(first), data)
    timing = {"runs": runs, "warmup": warmup, "blocks": blocks, "min_time_s": min_time_s, "max_runs": max_runs}
    latency, samples = measure_latency(session, data["x"], **timing)
    if processes > 1 and not versus:
        latency["processes"] = [process_quantiles(samples)] + timing_processes(
            artifact, inputs, threads, processes - 1, verify=verify, preprocess=preprocess, **timing)
    result = {
        "runner_version": RUNNER_VERSION,
        "artifact": os.path.basename(artifact),
        "format": session.format,
        "precision": (entry or {}).get("precision"),
        "sha256": (entry or {}).get("sha256"),
        "runtime": {"name": session.runtime, "version": session.runtime_version,
                    "inference_precision": session.inference_precision},
        "sha256_verified": entry is not None,
        "inputs_sha256": inputs_sha256,
        "inputs_verified": inputs_verified,
        "machine": describe_machine(),
        "threads": threads,
        "batch": 1,
        "load_ms": load_ms,
        "first_inference_ms": first_ms,
        "latency_ms": latency,
        "throughput_per_s": 1000.0 / latency["mean"] if latency["mean"] > 0 else None,
    }
    if versus and processes > 1:
        children = timing_processes(artifact, inputs, threads, processes, versus, verify, preprocess, **timing)
        result["versus"] = versus_over_processes(children, versus, verify)
        # the artifact's own samples in each of those processes: what a stored-number baseline compares later
        latency["processes"] = [process_quantiles(c["samples_ms"]) for c in children]
    elif versus:
        result["versus"] = measure_versus(session, versus, data["x"], threads, verify, min_time_s, max_runs)
    result.update(evaluate(session, data))
    if pre is not None:
        result["preprocess"] = pre
    if memory:
        mem = measure_memory(artifact, inputs, threads, verify=verify)
        result["peak_memory_mb"] = mem["model_peak_over_baseline_mb"]  # the judged value (see MEMORY_JUDGED)
        result["memory"] = mem
    result["torch_imported"] = "torch" in sys.modules
    return result


def _first_line(exc):
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


def _write_json(path, obj):
    """Write atomically: a device that loses power mid-write leaves the old file or none, never half of one."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise RunnerError("cannot write %s: directory %s does not exist" % (path, directory))
    tmp = "%s.tmp-%d" % (path, os.getpid())
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(obj, fh, indent=2)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _summary_line(result, threads):
    lat = result["latency_ms"]
    return "%s [%s %s, %d thread(s)] p50 %.4f ms  p90 %.4f ms  p99 %.4f ms  noise %.1f %%  accuracy %s  peak %s MB" % (
        result["artifact"], result["runtime"]["name"], result["runtime"]["version"], threads,
        lat["p50"], lat["p90"], lat["p99"], lat["noise_pct"],
        "%.4f" % result["accuracy"] if "accuracy" in result else "n/a",
        "%.1f" % result["peak_memory_mb"] if result.get("peak_memory_mb") is not None else "n/a")


def _parser():
    """The runner's command line (one place, so main stays the order of work)."""
    parser = argparse.ArgumentParser(
        description="edgekd standalone benchmark runner (numpy + runtime only). With several artifacts the JSON is "
                    "{'results': [...]} and an artifact that fails gets {'artifact', 'error'} there.")
    parser.add_argument("artifact", nargs="+", help="artifact(s): .onnx, .xml (OpenVINO IR) or .tflite")
    parser.add_argument("--inputs", help="EVAL.npz with x, y[, teacher_logits, reference_logits]")
    parser.add_argument("--text", action="append", metavar="TEXT",
                        help="a text artifact: classify this raw string (repeatable), tokenized here by the bundled "
                             "vocab.txt; reports tokenize and inference time per text")
    parser.add_argument("--text-file", metavar="FILE", help="like --text, one text per line of a UTF-8 file")
    parser.add_argument("--runs", type=int, default=DEFAULT_RUNS, help="minimum timed runs (default %(default)s)")
    parser.add_argument("--warmup", type=int, default=DEFAULT_WARMUP, help="minimum warm-up runs")
    parser.add_argument("--blocks", type=int, default=DEFAULT_BLOCKS, help="measurement blocks (noise = spread)")
    parser.add_argument("--min-time", type=float, default=MIN_TIME_S,
                        help="raise the runs until the timed work lasts this many seconds (default %(default)s)")
    parser.add_argument("--max-runs", type=int, default=MAX_RUNS, help="cap on the raised runs")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--versus", metavar="ARTIFACT",
                        help="also time the artifact(s) against this one (the teacher, or a baseline build's "
                             "artifact), interleaved in one process: the ratio the gate's "
                             "max_latency_ratio_to_teacher and `edgekd gate --baseline-run` judge")
    parser.add_argument("--processes", type=int, default=1,
                        help="repeat the timing in this many fresh processes (with --versus: the interleaved "
                             "timing, which goes first alternating), so the spread between processes is measured")
    parser.add_argument("--json", help="write the result here")
    parser.add_argument("--no-verify", action="store_true", help="skip the sha256 check (not recommended)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory child process")
    parser.add_argument("--no-preprocess", action="store_true",
                        help="feed the build's pre-processed inputs instead of pre-processing the raw ones here")
    parser.add_argument("--session-plugin", action="append", default=[], metavar="FILE",
                        help="a format beyond onnx/openvino/tflite: its session file (verified against the "
                             "manifest's session_plugins before it is imported)")
    parser.add_argument("--memory-probe", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--timing-probe", choices=("artifact", "versus"), help=argparse.SUPPRESS)
    return parser


def _measure_all(args):
    """(JSON to write, number of artifacts that failed): each artifact benchmarked; with several, one that fails
    is an {'artifact', 'error'} entry and the others still run."""
    results, failed = [], 0
    for artifact in args.artifact:
        try:
            result = benchmark(artifact, args.inputs, args.runs, args.warmup, args.threads,
                               verify=not args.no_verify, memory=not args.no_memory, blocks=args.blocks,
                               min_time_s=args.min_time, max_runs=args.max_runs,
                               preprocess=not args.no_preprocess, versus=args.versus,
                               processes=args.processes)
        except RunnerError as exc:
            if len(args.artifact) == 1:
                raise
            print("runner error: %s: %s" % (os.path.basename(artifact), exc), file=sys.stderr)
            results.append({"artifact": os.path.basename(artifact), "error": str(exc)})
            failed += 1
            continue
        print(_summary_line(result, args.threads), file=sys.stderr)
        results.append(result)
    out = results[0] if len(args.artifact) == 1 else {"runner_version": RUNNER_VERSION, "results": results}
    return out, failed


def _run(args):
    """The work ``args`` ask for; the exit status (RunnerError propagates to main)."""
    for plugin in args.session_plugin:
        load_plugin(plugin, args.artifact[0], verify=not args.no_verify)
    if args.inputs is None:
        out, failed = classify_texts(args.artifact[0], read_texts(args.text, args.text_file), args.threads,
                                     verify=not args.no_verify), 0
    elif args.memory_probe is not None:
        _memory_probe(args.artifact[0], args.inputs, args.threads, args.memory_probe, not args.no_verify)
        return 0
    elif args.timing_probe is not None:
        _timing_probe(args.artifact[0], args.inputs, args.threads, args.timing_probe, args.versus,
                      not args.no_verify, not args.no_preprocess,
                      {"runs": args.runs, "warmup": args.warmup, "blocks": args.blocks,
                       "min_time_s": args.min_time, "max_runs": args.max_runs})
        return 0
    else:
        out, failed = _measure_all(args)
    if args.json:
        _write_json(args.json, out)
    else:
        print(json.dumps(out, indent=2))
    return 2 if failed else 0


def main(argv=None):
    """Exit 0 when every artifact was measured, 2 on any error (one line each on stderr; the JSON still says which)."""
    parser = _parser()
    args = parser.parse_args(argv)
    if (args.inputs is None) == (args.text is None and args.text_file is None):
        parser.error("give --inputs EVAL.npz, or --text/--text-file for a text artifact")
    try:
        return _run(args)
    except RunnerError as exc:
        print("runner error: %s" % exc, file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - a bug or a runtime crash: show it, and still exit 2
        traceback.print_exc()
        print("runner error: unexpected %s: %s (please report this with the traceback above)"
              % (type(exc).__name__, _first_line(exc)), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
