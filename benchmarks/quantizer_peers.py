#!/usr/bin/env python3
"""edgekd's shipped int8 against the quantizers a user would otherwise run on the same fp32 model (issue 33).

For each student (the digits demo at x86-cpu, a Fashion-MNIST and a CIFAR-10 student at rpi4), built by
``edgekd build`` into ``benchmarks/.cache/quantizer_peers/`` with the target's ``runtime.also`` widened to all three
formats (so every peer has the run's own fp32 artifact), each peer quantizes that SAME fp32 artifact
(``model_fp32.onnx`` / ``.xml`` / ``.tflite``) with the SAME calibration samples (the run's ``calibration.npz``),
at its documented defaults and at its documented recommended settings for a CPU:

* onnxruntime ``quantize_static``            vs edgekd's ONNX int8
* Microsoft Olive ``OnnxStaticQuantization`` vs edgekd's ONNX int8 (run through Olive's own workflow config)
* NNCF ``nncf.quantize`` (OpenVINO)          vs edgekd's OpenVINO int8
* AI Edge Quantizer default int8 recipe      vs edgekd's TFLite int8

Every artifact is listed with its sha256 in a manifest beside it and run by ``edgekd/runner.py`` (which checks it)
on the run's ``eval.npz`` (its test split): accuracy, top-1 agreement with the fp32 artifact, and the latency ratio
to edgekd's artifact timed interleaved in one process (``--versus``), 1 thread, batch 1. The accuracy difference is
a paired exact McNemar test (``scipy.stats.binomtest`` on the discordant samples). A peer that is not installed or
fails is a row with its reason. :func:`summary` says, from the rows, where edgekd is ahead, level or behind.

Olive is heavy and not in any edgekd extra; install it into the venv only where it changes none of torch, onnx,
onnxruntime, openvino, nncf or numpy (``pip install --dry-run olive-ai==0.13.0`` says so):

    .venv/bin/pip install olive-ai==0.13.0

    python benchmarks/quantizer_peers.py                       # writes benchmarks/results/quantizer_peers.json
    python benchmarks/quantizer_peers.py --quick --out /tmp/q.json   # digits, 1 epoch, short timing: checks it runs
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))
sys.path.insert(0, str(ROOT))

from _paths import shared_dataset  # noqa: E402
from _provenance import Recorder, stamped  # noqa: E402

RESULTS = ROOT / "results" / "quantizer_peers.json"
CACHE = ROOT / ".cache" / "quantizer_peers"
TARGETS = ROOT.parent / "edgekd" / "data_files" / "targets"
FORMATS = ("onnx", "openvino", "tflite")
SUFFIX = {"onnx": ".onnx", "openvino": ".xml", "tflite": ".tflite"}
SEED = 0
QUIET_LOAD = 1.5  # 1-minute load average: one timing thread plus half a core of anyone else's, on 2 cores


@dataclass(frozen=True)
class Student:
    """One fp32 student: the data and target it is built for and how it is trained (``edgekd build`` flags)."""

    name: str
    data: str
    target: str
    train: tuple[str, ...] = ()
    quick_train: tuple[str, ...] = ("--max-train", "400", "--epochs", "1", "--teacher-epochs", "1")
    formats: tuple[str, ...] = FORMATS
    why_fewer_formats: str = ""  # recorded in every row of a format left out


# The student is the budget's MAC choice: --selection auto's accuracy search ranks students, which is not what is
# compared here, and would add up to a fifth to every build.
SELECTION = ("--selection", "mac")
SHORT = ("--max-train", "4000", "--epochs", "3", "--teacher-epochs", "1")  # minutes a build, not the 30 of a full one
STUDENTS = (
    Student("digits", "digits", "x86-cpu"),  # the demo: `edgekd build --target x86-cpu` at its defaults
    Student("fashion-mnist", str(shared_dataset("fashion-mnist")), "rpi4", SHORT),
    # With all three formats this short CIFAR-10 build stops at export: edgekd's own OpenVINO int8 (nncf.quantize)
    # agrees with the float student on 97.92 % of top-1 answers, under the build's 98 % parity floor (val accuracy
    # 0.42: int8 flips answers an undertrained student is unsure of), so it ships no OpenVINO artifact to compare.
    Student("cifar10", str(shared_dataset("cifar10") / "cifar10-jpg.tar.gz"), "rpi4", SHORT,
            formats=("onnx", "tflite"),
            why_fewer_formats="edgekd's OpenVINO int8 of this short CIFAR-10 build broke the build's parity floor "
                              "(top-1 agreement 97.92 % < 98 %), so the build stops; built without OpenVINO"),
)


def log(msg: str) -> None:
    print(msg, flush=True)


def private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
    return path


# ------------------------------------------------------------------------------------------------ students
def all_formats_target(name: str, cache: Path, formats: tuple[str, ...] = FORMATS) -> Path:
    """The shipped profile with ``runtime.also`` widened to ``formats``, so each peer has the run's fp32 artifact."""
    import yaml

    profile = yaml.safe_load((TARGETS / f"{name}.yaml").read_text())
    runtime = profile["runtime"]
    runtime["also"] = [f for f in formats if f != runtime["format"]]
    label = "all-formats" if set(formats) == set(FORMATS) else "-".join(formats)
    path = private_dir(cache / "targets") / f"{name}-{label}.yaml"
    path.write_text(yaml.safe_dump(profile, sort_keys=False))
    return path


def build_command(student: Student, quick: bool, cache: Path) -> tuple[list[str], Path]:
    target = all_formats_target(student.target, cache, student.formats)
    flags = student.quick_train if quick else student.train
    out = cache / "runs" / f"{student.name}{'-quick' if quick else ''}"
    cmd = ["edgekd", "build", "--target", str(target), "--data", student.data, "--out", str(out),
           "--seed", str(SEED), "--cache-dir", str(cache / "edgekd-cache"), "--no-progress", *SELECTION, *flags]
    return cmd, out


def build_student(student: Student, quick: bool, cache: Path) -> dict:
    """Build (or reuse) the run; returns how it was trained, from the command and the run's report."""
    cmd, out = build_command(student, quick, cache)
    key = hashlib.sha256(json.dumps([cmd[1:], (TARGETS / f"{student.target}.yaml").read_text()]).encode()
                         ).hexdigest()[:16]
    stamp = out / ".quantizer-peers-key"
    reused = stamp.is_file() and stamp.read_text() == key and (out / "manifest.json").is_file()
    if not reused:
        private_dir(cache / "edgekd-cache")
        t0 = time.perf_counter()
        env = {**os.environ, "EDGEKD_CACHE": str(cache / "edgekd-cache")}
        proc = subprocess.run([sys.executable, "-m", "edgekd", *cmd[1:]], env=env, capture_output=True, text=True)
        (cache / f"build-{out.name}.log").write_text(proc.stdout + proc.stderr)
        if proc.returncode not in (0, 1):  # 1: built, but the gate failed (budgets judged off the device)
            raise RuntimeError(f"edgekd build of {student.name} failed (exit {proc.returncode}): "
                               f"{(proc.stderr.strip().splitlines() or ['?'])[-1]}")
        stamp.write_text(key)
        log(f"{student.name}: built in {time.perf_counter() - t0:.0f}s -> {out}")
    else:
        log(f"{student.name}: reusing the build in {out} (delete it to rebuild)")
    return {"run_dir": str(out.relative_to(ROOT.parent)) if out.is_relative_to(ROOT.parent) else str(out),
            "command": " ".join(cmd), "reused": reused, **trained_how(out)}


def trained_how(run: Path) -> dict:
    """What the run's report says about the student and its training."""
    report = json.loads((run / "report.json").read_text())
    student, teacher = report.get("student", {}), report.get("teacher", {})
    keep = ("family", "config", "params", "macs", "accuracy")
    trained = {k: v for k, v in (student.get("distillation") or {}).items()
               if k in ("epochs", "epochs_run", "best_epoch", "loss_weights", "temperature", "lr", "lr_schedule",
                        "batch_size", "seed", "augment", "train_time_s")}
    return {"target": report.get("target", {}).get("name") if isinstance(report.get("target"), dict)
            else report.get("target"),
            "student": {**{k: student[k] for k in keep if k in student}, "distillation": trained},
            "calibration": {k: v for k, v in (report.get("calibration") or {}).items() if k != "per_class"},
            "build_time_s": report.get("build_time_s"),
            "teacher": {k: teacher[k] for k in ("params", "macs", "accuracy", "arch", "epochs") if k in teacher},
            "data": report.get("data")}


# ------------------------------------------------------------------------------------------------ the run's files
@dataclass(frozen=True)
class RunFiles:
    """One build's manifest, its fp32 and shipped int8 artifact per format, its calibration and eval inputs."""

    dir: Path
    manifest: dict

    @classmethod
    def read(cls, run: Path) -> RunFiles:
        return cls(run, json.loads((run / "manifest.json").read_text()))

    def entry(self, fmt: str, precision: str) -> dict | None:
        return next((a for a in self.manifest.get("artifacts", []) if a.get("format") == fmt
                     and a.get("precision") == precision and Path(a["path"]).name.startswith("model_")), None)

    def calibration_x(self):
        """The run's calibration samples (model inputs, pre-processed), sha256-checked against the manifest."""
        import numpy as np

        from edgekd.io import sha256_file

        path = self.dir / "calibration.npz"
        recorded = (self.manifest.get("calibration") or {}).get("sha256")
        if recorded is not None and sha256_file(path) != recorded:
            raise RuntimeError(f"{path}: sha256 differs from the manifest's; rebuild the run")
        with np.load(path, allow_pickle=False) as npz:
            return np.ascontiguousarray(npz["x"], dtype=np.float32)


def artifact_files(path: Path) -> list[Path]:
    return [path, path.with_suffix(".bin")] if path.suffix == ".xml" else [path]


def add_to_manifest(folder: Path, path: Path, fmt: str, peer: str) -> None:
    """List a peer's artifact with the sha256 of each of its files, so the runner verifies it before it runs."""
    from edgekd.io import sha256_file

    manifest = json.loads((folder / "manifest.json").read_text())
    files = [{"path": f.name, "sha256": sha256_file(f)} for f in artifact_files(path)]
    manifest["artifacts"].append({"path": path.name, "sha256": files[0]["sha256"], "files": files, "format": fmt,
                                  "precision": "int8", "quantizer": peer})
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1))


# ------------------------------------------------------------------------------------------------ the peers
@dataclass(frozen=True)
class Peer:
    """One quantizer at one documented setting: ``quantize(fp32, out, calibration_x) -> settings used``."""

    tool: str
    package: str  # distribution name, for its version
    format: str
    setting: str  # "defaults" or "recommended-cpu"
    quantize: object
    source: str  # where the setting is documented

    @property
    def name(self) -> str:
        return f"{self.tool} ({self.setting})"


class Reader:
    """onnxruntime ``CalibrationDataReader``: the calibration samples one at a time (batch 1, as deployed)."""

    def __init__(self, x, name: str) -> None:
        self.items = iter([{name: x[i : i + 1]} for i in range(len(x))])

    def get_next(self):
        return next(self.items, None)


def _onnx_input(path: Path) -> str:
    import onnx

    return onnx.load(str(path), load_external_data=False).graph.input[0].name


def ort_defaults(fp32: Path, out: Path, x) -> dict:
    """``quantize_static`` with nothing but the model and the data reader (QDQ, s8s8, per tensor, MinMax)."""
    from onnxruntime.quantization import quantize_static

    quantize_static(str(fp32), str(out), Reader(x, _onnx_input(fp32)))
    return {"call": "quantize_static(model, out, reader)", "quant_format": "QDQ", "activations": "QInt8",
            "weights": "QInt8", "per_channel": False, "calibrate_method": "MinMax", "pre_process": False}


def ort_recommended(fp32: Path, out: Path, x) -> dict:
    """The documented CPU recipe: ``quant_pre_process`` first, QDQ, S8S8 ("the first choice" on CPU), per-channel
    weights for Conv; ``reduce_range`` only on x86 without VNNI (the U8S8 saturation note)."""
    import tempfile

    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from edgekd.backends.onnx import VNNI_FLAGS

    reduce_range = not (VNNI_FLAGS & cpu_flags()) and os.uname().machine == "x86_64"
    with tempfile.TemporaryDirectory() as tmp:
        prepped = Path(tmp) / "prep.onnx"
        quant_pre_process(str(fp32), str(prepped))
        quantize_static(str(prepped), str(out), Reader(x, _onnx_input(fp32)), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, per_channel=True,
                        reduce_range=reduce_range)
    return {"call": "quant_pre_process; quantize_static", "quant_format": "QDQ", "activations": "QInt8",
            "weights": "QInt8", "per_channel": True, "reduce_range": reduce_range, "calibrate_method": "MinMax",
            "pre_process": True}


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    return {f for line in text.splitlines() if line.startswith(("flags", "Features")) for f in line.split()}


# ``python -m olive`` with torchvision hidden: Olive imports torchmetrics, which imports torchvision when its metadata
# says it is installed, and the venv's torchvision 0.28.0 wheel is a CUDA build whose _C.so cannot load
# (libc10_cuda.so) on this CPU-only torch. Olive's ONNX quantization never uses torchvision.
OLIVE_LAUNCH = """
import importlib.metadata as md, sys
_version = md.version
def version(name):
    if name.lower() == "torchvision":
        raise md.PackageNotFoundError(name)
    return _version(name)
md.version = version
sys.modules["torchvision"] = None
sys.argv[0] = "olive"
from olive.cli.launcher import main
main(called_as_console_script=False)
"""


def olive(settings: dict):
    """Olive's ``OnnxStaticQuantization`` pass run by ``olive run --config`` (its own workflow), in a subprocess."""

    def run(fp32: Path, out: Path, x) -> dict:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="olive-") as tmp:
            tmp = Path(tmp)
            (tmp / "samples" / "input").mkdir(parents=True)
            for i in range(len(x)):
                x[i].astype("float32").tofile(tmp / "samples" / "input" / f"{i:05d}.raw")
            config = {
                "input_model": {"type": "ONNXModel", "model_path": str(fp32)},
                "systems": {"local": {"type": "LocalSystem", "accelerators": [
                    {"device": "cpu", "execution_providers": ["CPUExecutionProvider"]}]}},
                "data_configs": [{"name": "calibration_data", "type": "RawDataContainer", "load_dataset_config": {
                    "data_dir": str(tmp / "samples"), "input_names": [_onnx_input(fp32)],
                    "input_shapes": [[1, *x.shape[1:]]]}}],  # its dataloader does not batch
                "passes": {"quantization": {"type": "OnnxStaticQuantization", "data_config": "calibration_data",
                                            **settings}},
                "host": "local", "target": "local", "cache_dir": str(tmp / "cache"),
                "output_dir": str(tmp / "out"), "log_severity_level": 3}
            (tmp / "config.json").write_text(json.dumps(config))
            proc = subprocess.run([sys.executable, "-c", OLIVE_LAUNCH, "run", "--config", str(tmp / "config.json")],
                                  capture_output=True, text=True, timeout=1800, cwd=tmp)
            made = sorted((tmp / "out").rglob("*.onnx"))
            if proc.returncode != 0 or not made:
                errors = [ln for ln in (proc.stdout + proc.stderr).splitlines() if "Error" in ln][-2:]
                raise RuntimeError(f"olive run exited {proc.returncode} with no model: {' | '.join(errors)}")
            shutil.copyfile(made[0], out)
        return {"call": "olive run --config (OnnxStaticQuantization)", **settings}

    return run


def nncf_quantize(recommended: bool):
    def run(xml: Path, out: Path, x) -> dict:
        import nncf
        import openvino as ov

        items = [x[i : i + 1] for i in range(len(x))]
        kwargs = ({"target_device": nncf.TargetDevice.CPU, "subset_size": len(items),
                   "fast_bias_correction": False} if recommended else {})
        model = nncf.quantize(ov.Core().read_model(str(xml)), nncf.Dataset(items), **kwargs)
        ov.save_model(model, str(out))
        return {"call": "nncf.quantize(model, dataset" + "".join(f", {k}={v}" for k, v in kwargs.items()) + ")",
                "preset": "PERFORMANCE (default)", "subset_size": kwargs.get("subset_size", 300),
                "target_device": str(kwargs.get("target_device", "ANY")),
                "fast_bias_correction": kwargs.get("fast_bias_correction", True)}

    return run


def aeq_default(fp32: Path, out: Path, x) -> dict:
    """AI Edge Quantizer's documented flow: ``Quantizer(model, recipe.static_wi8_ai8())``, ``calibrate``,
    ``quantize``, ``export_model``; the recipe's own I/O and calibration (moving-average min/max)."""
    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_quantizer import quantizer, recipe

    signatures = Interpreter(model_path=str(fp32)).get_signature_list()
    key = next(iter(signatures))
    name = signatures[key]["inputs"][0]
    qt = quantizer.Quantizer(str(fp32), recipe.static_wi8_ai8())
    calibration = qt.calibrate({key: [{name: x[i : i + 1]} for i in range(len(x))]})
    qt.quantize(calibration).export_model(str(out), overwrite=True)
    return {"call": "Quantizer(model, recipe.static_wi8_ai8()).calibrate -> quantize -> export_model",
            "recipe": "static_wi8_ai8", "io": "as the recipe quantizes it", "calibration": "AEQ default"}


ORT_DOC = "https://onnxruntime.ai/docs/performance/model-optimizations/quantization.html"
PEERS = (
    Peer("onnxruntime quantize_static", "onnxruntime", "onnx", "defaults", ort_defaults, ORT_DOC + " (API defaults)"),
    Peer("onnxruntime quantize_static", "onnxruntime", "onnx", "recommended-cpu", ort_recommended,
         ORT_DOC + ": pre-processing, data type selection (S8S8 QDQ first on CPU), per-channel, reduce_range"),
    Peer("olive OnnxStaticQuantization", "olive-ai", "onnx", "defaults", olive({}),
         "olive/passes/onnx/quantization.py defaults (QDQ, int8/int8, per tensor, quant_preprocess)"),
    Peer("olive OnnxStaticQuantization", "olive-ai", "onnx", "recommended-cpu",
         olive({"per_channel": True, "quant_preprocess": True, "quant_format": "QDQ", "activation_type": "int8",
                "precision": "int8", "calibrate_method": "MinMax"}),
         "Olive's pass docs link onnxruntime's per-channel/reduce_range tips: per-channel on, reduce_range off "
         "on a VNNI host"),
    Peer("nncf.quantize", "nncf", "openvino", "defaults", nncf_quantize(False), "nncf.quantize signature defaults"),
    Peer("nncf.quantize", "nncf", "openvino", "recommended-cpu", nncf_quantize(True),
         "NNCF post-training quantization docs: target_device=CPU, subset_size = the calibration set, "
         "fast_bias_correction=False for accuracy"),
    Peer("ai-edge-quantizer", "ai-edge-quantizer", "tflite", "defaults", aeq_default,
         "ai-edge-quantizer README: static_wi8_ai8 is the int8 recipe for CPU (XNNPACK); it documents no other"),
)


def peer_version(package: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def make_peer(peer: Peer, run: RunFiles, work: Path, x) -> tuple[str | None, dict]:
    """Quantize the run's fp32 artifact with ``peer`` into ``work``: (file name or None, what to record)."""
    from edgekd.runner import verify_artifact

    info = {"peer": peer.tool, "setting": peer.setting, "format": peer.format, "version": peer_version(peer.package),
            "documented_at": peer.source}
    fp32 = run.entry(peer.format, "fp32")
    if info["version"] is None:
        return None, {**info, "status": "not installed", "reason": f"pip install {peer.package}"}
    if fp32 is None:
        return None, {**info, "status": "failed", "reason": f"the run has no fp32 {peer.format} artifact"}
    slug = f"peer_{peer.package.replace('-', '_')}_{peer.setting.replace('-', '_')}{SUFFIX[peer.format]}"
    out = work / slug
    t0 = time.perf_counter()
    try:
        verify_artifact(str(work / fp32["path"]))  # the fp32 file the peer reads is the one the manifest hashes
        settings = peer.quantize(work / fp32["path"], out, x)
    except Exception as exc:  # noqa: BLE001 - a peer that fails is a row with its reason
        for f in artifact_files(out):
            f.unlink(missing_ok=True)
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:400]
        return None, {**info, "status": "failed", "reason": f"{type(exc).__name__}: {first}"}
    add_to_manifest(work, out, peer.format, peer.name)
    return slug, {**info, "status": "ok", "settings": settings, "quantize_s": round(time.perf_counter() - t0, 1),
                  "size_bytes": sum(f.stat().st_size for f in artifact_files(out))}


def run_runner(work: Path, artifacts: list[str], versus: str, threads: int, quick: bool) -> dict[str, dict]:
    """edgekd/runner.py on the run's eval.npz: every artifact sha256-checked, evaluated and timed against
    ``versus`` interleaved in one process. Returns the runner's result per artifact name."""
    out = work / f"runner-{Path(versus).suffix[1:]}.json"
    cmd = [sys.executable, str(ROOT.parent / "edgekd" / "runner.py"), *[str(work / a) for a in artifacts],
           "--versus", str(work / versus), "--inputs", str(work / "eval.npz"), "--threads", str(threads),
           "--no-memory", "--json", str(out)]
    if quick:
        cmd += ["--runs", "50", "--min-time", "0.05"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    if proc.returncode not in (0, 1) or not out.is_file():
        raise RuntimeError(f"runner failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    doc = json.loads(out.read_text())
    results = doc.get("results", [doc])
    return {r["artifact"]: r for r in results}


def mcnemar(y, reference, other) -> dict:
    """Paired exact McNemar: two-sided binomial test on the samples exactly one of the two gets right."""
    import numpy as np
    from scipy.stats import binomtest

    ref_right, right = np.asarray(reference) == y, np.asarray(other) == y
    b, c = int(np.sum(ref_right & ~right)), int(np.sum(~ref_right & right))
    p = 1.0 if b + c == 0 else float(binomtest(c, b + c, 0.5).pvalue)
    return {"edgekd_only_right": b, "peer_only_right": c, "p_value": p}


def row_from(result: dict, info: dict, fp32_pred, edgekd_pred, y) -> dict:
    import numpy as np

    from edgekd.gate_stats import median_interval

    pred = np.asarray(result["predictions"])
    versus = result["versus"]
    return {**info, "artifact": result["artifact"], "sha256": result.get("sha256"),
            "sha256_verified": result.get("sha256_verified"), "accuracy": result["accuracy"],
            "agreement_with_fp32": float(np.mean(pred == fp32_pred)), "p50_ms": result["latency_ms"]["p50"],
            "ratio_to_edgekd": versus["ratio"], "ratio_interval_95": list(median_interval(versus["ratios"])),
            "interleaved_p50_ms": versus["p50_ms"], "edgekd_interleaved_p50_ms": versus["versus_p50_ms"],
            "pairs": versus["pairs"], "mcnemar_vs_edgekd": mcnemar(y, edgekd_pred, pred),
            "runtime": result["runtime"]}


# What the manifest says about how edgekd made its int8 (the ONNX scheme is timed on this host among faithful ones)
EDGEKD_SETTINGS = ("scheme", "scheme_p50_ms", "scheme_choice", "reduce_range", "kernel_deviation", "per_channel",
                   "quant_format", "quantizer")


def measure_student(student: Student, built: dict, peers: tuple[Peer, ...], threads: int, quick: bool,
                    work_root: Path) -> list[dict]:
    """Every peer's artifact from the run's fp32 files, measured by the runner against edgekd's shipped int8."""
    import numpy as np

    run_dir = ROOT.parent / built["run_dir"]
    work = work_root / student.name
    if work.exists():
        shutil.rmtree(work)
    shutil.copytree(run_dir, work, ignore=shutil.ignore_patterns("bundle-*", "*.html", "*.log"))
    run = RunFiles.read(work)
    x = run.calibration_x()
    with np.load(work / "eval.npz", allow_pickle=False) as npz:
        y = np.asarray(npz["y"])
    rows = []
    for fmt in FORMATS:
        if fmt not in student.formats:
            rows += [{"model": student.name, "peer": p.tool, "setting": p.setting, "format": fmt,
                      "version": peer_version(p.package), "status": "not compared",
                      "reason": student.why_fewer_formats} for p in peers if p.format == fmt]
            continue
        made = [(peer, *make_peer(peer, run, work, x)) for peer in peers if peer.format == fmt]
        for peer, _, info in made:
            log(f"{student.name} {peer.name}: {info['status']} {info.get('reason', '')}")
        fp32, mine = run.entry(fmt, "fp32"), run.entry(fmt, "int8")
        ok = [(slug, info) for _, slug, info in made if slug]
        rows += [{"model": student.name, **info} for _, slug, info in made if not slug]
        if not ok:
            continue
        if fp32 is None or mine is None:
            rows += [{"model": student.name, **info, "status": "failed",
                      "reason": f"the run shipped no {fmt} {'int8' if mine is None else 'fp32'} artifact to compare"}
                     for _, info in ok]
            continue
        results = run_runner(work, [fp32["path"], mine["path"], *[s for s, _ in ok]], mine["path"], threads, quick)
        fp32_pred = np.asarray(results[Path(fp32["path"]).name]["predictions"])
        edgekd = results[Path(mine["path"]).name]
        edgekd_pred = np.asarray(edgekd["predictions"])
        base = {"peer": "edgekd", "setting": "shipped", "format": fmt, "version": peer_version("edgekd"),
                "status": "ok", "settings": {k: mine[k] for k in EDGEKD_SETTINGS if k in mine}}
        rows.append({"model": student.name, **row_from(edgekd, base, fp32_pred, edgekd_pred, y)})
        for slug, info in ok:
            rows.append({"model": student.name, **row_from(results[slug], info, fp32_pred, edgekd_pred, y)})
        log(f"{student.name} {fmt}: fp32 {results[Path(fp32['path']).name]['accuracy']:.4f}, edgekd int8 "
            f"{edgekd['accuracy']:.4f}; " + ", ".join(f"{r['peer']} {r['setting']} {r['accuracy']:.4f} "
                                                    f"x{r['ratio_to_edgekd']:.3f}" for r in rows[-len(ok):]))
    return rows


# ------------------------------------------------------------------------------------------------ verdict
ALPHA = 0.05  # McNemar: a peer is more (less) accurate only when p < ALPHA
SPEED_MARGIN = 0.05  # a peer is faster (slower) only when its ratio is >= 5 % off and its 95 % interval excludes 1


def judge(row: dict) -> tuple[str, str]:
    """edgekd against one peer row: ahead, level, behind or trade-off, and why."""
    test = row["mcnemar_vs_edgekd"]
    diff = row["accuracy"] - row["edgekd_accuracy"]
    acc = 0 if test["p_value"] >= ALPHA else (1 if diff > 0 else -1)  # +1: the peer is more accurate
    low, high = row["ratio_interval_95"]
    ratio = row["ratio_to_edgekd"]
    speed = 1 if (high < 1 and ratio <= 1 - SPEED_MARGIN) else -1 if (low > 1 and ratio >= 1 + SPEED_MARGIN) else 0
    why = (f"accuracy {diff * 100:+.2f} pts (McNemar p={test['p_value']:.3g}), latency x{ratio:.3f} "
           f"[{low:.3f}, {high:.3f}]")
    if acc == speed == 0:
        return "level", why
    if acc >= 0 and speed >= 0:
        return "behind", why
    if acc <= 0 and speed <= 0:
        return "ahead", why
    return "trade-off", why


# The benchmarks' shared contract (tests/test_benchmarks_quick.py): the file's verdict recomputes from these rows.
ROWS = "rows"


def verdict(rows: list[dict]) -> dict:
    """The file's verdict: how many peer settings edgekd is ahead of, level with or behind (from ``summary``)."""
    return summary(rows)["counts"]


def summary(rows: list[dict]) -> dict:
    """Where edgekd's shipped int8 is ahead, level or behind each peer, computed from the rows."""
    edgekd = {(r["model"], r["format"]): r for r in rows if r["peer"] == "edgekd" and r["status"] == "ok"}
    judged, failed = [], []
    for r in rows:
        if r["peer"] == "edgekd":
            continue
        if r["status"] != "ok":
            failed.append({"model": r["model"], "peer": r["peer"], "setting": r["setting"], "status": r["status"],
                           "reason": r["reason"]})
            continue
        mine = edgekd[(r["model"], r["format"])]
        verdict, why = judge({**r, "edgekd_accuracy": mine["accuracy"]})
        judged.append({"model": r["model"], "peer": r["peer"], "setting": r["setting"], "format": r["format"],
                       "edgekd": verdict, "why": why})
    counts = {k: sum(j["edgekd"] == k for j in judged) for k in ("ahead", "level", "behind", "trade-off")}
    return {"counts": {**counts, "peer_not_measured": len(failed)}, "rows": judged, "not_measured": failed,
            "behind": [j for j in judged if j["edgekd"] == "behind"],
            "rule": f"a peer is more/less accurate when McNemar p < {ALPHA}; faster/slower when its interleaved "
                    f"latency ratio to edgekd is >= {SPEED_MARGIN:.0%} off and its sign-test 95 % interval "
                    "excludes 1. behind: the peer better on one axis and not worse on the other; ahead: the reverse;"
                    " trade-off: better on one, worse on the other"}


# ------------------------------------------------------------------------------------------------ main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="digits only, 1-epoch build, short timing: checks it runs")
    p.add_argument("--out", default=str(RESULTS))
    p.add_argument("--cache-dir", default=str(CACHE), help="where the students are built and cached")
    p.add_argument("--models", default=",".join(s.name for s in STUDENTS), help="comma-separated subset")
    p.add_argument("--threads", type=int, default=1, help="runtime threads for every artifact")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    recorder = Recorder(quick=args.quick, seeds=[SEED], quiet_load=QUIET_LOAD)
    cache = private_dir(Path(args.cache_dir))
    wanted = ["digits"] if args.quick else args.models.split(",")
    students = [s for s in STUDENTS if s.name in wanted]
    rows, builds = [], {}
    for student in students:
        try:
            builds[student.name] = build_student(student, args.quick, cache)
        except Exception as exc:  # noqa: BLE001 - a student that cannot be built is recorded, the others go on
            builds[student.name] = {"error": str(exc)}
            log(f"{student.name}: {exc}")
            continue
        rows += measure_student(student, builds[student.name], PEERS, args.threads, args.quick,
                                cache / ("work-quick" if args.quick else "work"))
    verdict = summary(rows)
    doc = {"benchmark": "quantizer_peers", "issue": 33,
           "measured_on": f"this host: edgekd/runner.py, {args.threads} thread(s), batch 1, each peer timed against "
                          "edgekd's artifact interleaved in one process (--versus); not device latency",
           "students": builds, "peers": [{"tool": p.tool, "setting": p.setting, "format": p.format,
                                           "version": peer_version(p.package), "documented_at": p.source}
                                          for p in PEERS],
           "rows": rows, "summary": verdict}
    from edgekd.io import write_json

    out = stamped(doc, verdict["counts"], recorder.finish())
    write_json(args.out, out)
    log(f"wrote {args.out} in {out['provenance']['wall_s']:.0f}s: {out['verdict']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
