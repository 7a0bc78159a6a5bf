"""``edgekd bundle``: everything a device needs to benchmark the shipped artifacts, and nothing it doesn't.

A bundle is a directory (and the same directory as a ``.tar.gz``) that runs with only Python 3.9+, numpy and the
runtime: the shipped artifacts with all their files, ``manifest.json`` restricted to them (sha256 intact, so the
runner still refuses a corrupted copy), ``runner.py``, ``eval.npz`` (inputs, labels, the teacher's recorded
outputs), ``requirements-device.txt`` and a README with the one command to run. It is written beside the final
location first and swapped in only when complete, so a failure never leaves half a bundle.
"""

from __future__ import annotations

import os
import shlex
import shutil
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekd import __version__
from edgekd.errors import EdgekdError
from edgekd.formats import get_format
from edgekd.io import read_json_object, replace_dir, sha256_file, write_json, write_text
from edgekd.schema import validate
from edgekd.targets import load_target

RUNNER_PATH = Path(__file__).with_name("runner.py")
MARKER = "bundle.json"  # identifies a directory as an edgekd bundle (the only kind --out may replace)
RESULT_NAME = "result.json"


@dataclass
class Bundle:
    """A finished bundle: where it is, what it holds, and the command that runs it on the device."""

    directory: Path
    tarball: Path
    artifacts: list[str]
    threads: int
    files: list[str] = field(default_factory=list)
    plugins: list[str] = field(default_factory=list)  # session plugin files (formats beyond the built-in three)

    def runner_args(self, python: str = "python3", runs: int | None = None, warmup: int | None = None,
                    threads: int | None = None, json_out: str = RESULT_NAME) -> list[str]:
        """The runner's command line inside the bundle directory, as an argument list."""
        args = [python, "runner.py", *self.artifacts, "--inputs", "eval.npz",
                "--threads", str(threads or self.threads), "--json", json_out,
                *[arg for plugin in self.plugins for arg in ("--session-plugin", plugin)]]
        if runs is not None:
            args += ["--runs", str(runs)]
        if warmup is not None:
            args += ["--warmup", str(warmup)]
        return args

    @property
    def command(self) -> str:
        return shlex.join(self.runner_args())


def load_run(run_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """report.json and manifest.json of a run directory, with one clear message when either is unusable."""
    if not run_dir.is_dir():
        raise EdgekdError(f"run directory not found: {run_dir}", "pass the directory `edgekd build` wrote")
    fix = "pass a run directory written by `edgekd build` (this version: rebuild older runs)"
    report = read_json_object(run_dir / "report.json", f"{run_dir.name}/report.json", fix)
    manifest = read_json_object(run_dir / "manifest.json", f"{run_dir.name}/manifest.json", fix)
    validate("report", report, f"{run_dir.name}/report.json", fix)
    validate("manifest", manifest, f"{run_dir.name}/manifest.json", fix)
    pin_sha256(report, manifest, run_dir)
    return report, manifest


def pin_sha256(report: dict[str, Any], manifest: dict[str, Any], run_dir: Path) -> None:
    """report.json's sha256 values are the ones the gate judged: a manifest that names other bytes for the same
    artifact (or eval inputs) means the run was changed after the build, and nothing is measured or bundled."""
    recorded = {e["path"]: e["sha256"] for e in manifest["artifacts"]}
    pairs = [(a["path"], a["sha256"], recorded.get(a["path"])) for a in report["artifacts"]]
    pairs.append(("eval inputs", report["eval_inputs"]["sha256"], manifest["eval_inputs"]["sha256"]))
    for name, judged, listed in pairs:
        if listed is not None and listed != judged:
            raise EdgekdError(f"{run_dir.name}: manifest.json gives {name} sha256 {listed[:12]}..., but report.json "
                              f"judged {judged[:12]}...: the run directory was changed after the build",
                              "rebuild the run with `edgekd build` (or restore its original files)")


def target_threads(report: dict[str, Any]) -> int:
    """The target's thread count (what the device should run with); the build's when the target can't be read."""
    for spec in (report.get("target_path"), report.get("target")):
        if not spec:
            continue
        try:
            return int(load_target(spec).runtime.threads)
        except (EdgekdError, OSError, ValueError):
            continue
    return int((report.get("measured_on") or {}).get("threads") or 1)


def _safe_name(name: str, run_dir: Path) -> str:
    """Manifest file names are plain names beside the manifest: never a path that could reach elsewhere."""
    if not isinstance(name, str) or not name or os.path.basename(name) != name or name in (".", ".."):
        raise EdgekdError(f"manifest in {run_dir} names the file '{name}', which is not a plain file name",
                          "rebuild the run with `edgekd build`")
    return name


def select_entries(report: dict[str, Any], manifest: dict[str, Any], run_dir: Path,
                   with_teacher: bool = False) -> list[dict[str, Any]]:
    """Manifest entries of the shipped artifacts (and, if asked, the teacher reference in the same formats)."""
    shipped = [a["path"] for a in report.get("artifacts", []) if a.get("shipped")]
    if not shipped:
        raise EdgekdError(f"report.json in {run_dir} marks no artifact as shipped",
                          "rebuild the run; `edgekd build` ships the fastest precision that meets the contract")
    by_path = {e.get("path"): e for e in manifest.get("artifacts", [])}
    missing = [p for p in shipped if p not in by_path]
    if missing:
        raise EdgekdError(f"manifest.json in {run_dir} does not list the shipped {', '.join(missing)}",
                          "the run directory is inconsistent: rebuild it with `edgekd build`")
    entries = [by_path[p] for p in shipped]
    if with_teacher:
        formats = {e["format"] for e in entries}
        entries += [e for e in manifest.get("artifacts", [])
                    if e.get("role") == "teacher-reference" and e.get("format") in formats]
    return entries


def _check_out(out: Path, run_dir: Path) -> None:
    resolved, run = out.resolve(), run_dir.resolve()
    if resolved == run or run.is_relative_to(resolved):
        raise EdgekdError(f"--out {out} would replace the run directory itself", "pick a new directory for --out")
    if out.exists() and not (out.is_dir() and (out / MARKER).is_file()):
        raise EdgekdError(f"--out {out} exists and is not an edgekd bundle; refusing to replace it",
                          "pick a new directory, or remove it yourself")


def requirements_text(entries: list[dict[str, Any]], report: dict[str, Any], text: bool = False) -> str:
    versions = {a.get("format"): a.get("runtime_version") for a in report.get("artifacts", [])}
    lines = ["# What runner.py needs on the device besides Python 3.9+: numpy and the runtime of each artifact.",
             "# Install with: pip install -r requirements-device.txt",
             "numpy>=1.21"]
    if text:
        lines.append("# text: runner.py tokenizes raw strings itself (pure Python over vocab.txt): no tokenizers "
                     "package needed")
    for fmt in dict.fromkeys(e["format"] for e in entries):
        spec = get_format(fmt)
        package, note = spec.device_requirement, spec.device_note
        built = versions.get(fmt)
        comment = "; ".join(x for x in (f"benchmarked at build time with {built}" if built else "", note) if x)
        lines.append(package + (f"  # {comment}" if comment else ""))
    return "\n".join(lines) + "\n"


def readme_text(bundle: Bundle, report: dict[str, Any], entries: list[dict[str, Any]], run_dir: Path,
                text: bool = False) -> str:
    rows = "\n".join(f"  {e['path']:<28} {e['format']:<9} {e['precision']:<5} {e.get('role', 'student'):<18} "
                     f"sha256 {e['sha256'][:16]}..." for e in entries)
    return f"""edgekd device bundle for target '{report.get('target')}'
Built by edgekd {__version__} on {time.strftime('%Y-%m-%d %H:%M:%S')} from {run_dir}.

Run it on the device (Python 3.9 or newer; no torch, no edgekd needed):

  pip install -r requirements-device.txt
  {bundle.command}

runner.py checks every artifact's files against the sha256 in manifest.json and refuses to run a changed or
corrupted one. It measures load time, first inference, batch-1 latency (warm-up, then timed blocks whose spread
is reported as noise_pct), peak memory in a fresh child process, accuracy on eval.npz and agreement with the
teacher's recorded outputs, and describes the machine. The result is {RESULT_NAME}; from the build host,
`edgekd bench RUN_DIR --remote USER@HOST` does all of this over SSH and merges it into report.json.

Artifacts:
{rows}

Other files: manifest.json (sha256 of every file, input shape and normalisation), eval.npz (x: normalised
float32 inputs, y: labels, teacher_logits / reference_logits: the PyTorch teacher's and student's outputs),
runner.py, requirements-device.txt, {MARKER} (what this bundle holds).
Exit code of runner.py: 0 all measured, 2 an error (one line on stderr says what to fix).
{_text_usage(entries) if text else ""}"""


def _text_usage(entries: list[dict[str, Any]]) -> str:
    """A text build: how to classify raw strings on the device."""
    return (f"\nText: vocab.txt + tokenizer.json are the tokenizer (sha256 in manifest.json). Classify raw strings:\n"
            f"  python3 runner.py {entries[0]['path']} --text \"a sentence to classify\" [--text-file FILE]\n"
            "It prints each text's class and the tokenize and inference time (ms), measured separately.\n")


def _copy_verified(run_dir: Path, item: dict[str, Any], stage: Path, what: str) -> None:
    """Copy one manifest-listed file into the bundle, refusing it unless its sha256 matches the manifest."""
    name = _safe_name(item["path"], run_dir)
    src = run_dir / name
    if not src.is_file():
        raise EdgekdError(f"{src} is missing ({what})", "rebuild with `edgekd build`")
    shutil.copyfile(src, stage / name)
    if sha256_file(stage / name) != item.get("sha256"):
        raise EdgekdError(f"{src} does not match the sha256 in manifest.json; refusing to bundle it",
                          "the file was changed after the build: rebuild with `edgekd build`")


def make_bundle(run_dir: str | os.PathLike[str], out: str | os.PathLike[str] | None = None,
                with_teacher: bool = False, threads: int | None = None) -> Bundle:
    """Write the bundle directory ``out`` (default ``RUN_DIR/bundle-<target>``) and ``out.tar.gz`` beside it."""
    run_dir = Path(run_dir)
    report, manifest = load_run(run_dir)
    entries = select_entries(report, manifest, run_dir, with_teacher)
    out = Path(out) if out else run_dir / f"bundle-{report.get('target', 'device')}"
    _check_out(out, run_dir)
    eval_name = _safe_name((manifest.get("eval_inputs") or {}).get("path", "eval.npz"), run_dir)
    if not (run_dir / eval_name).is_file():
        raise EdgekdError(f"{run_dir} has no {eval_name} (the evaluation inputs)", "rebuild it with `edgekd build`")
    expected_eval = (manifest.get("eval_inputs") or {}).get("sha256")
    if expected_eval and sha256_file(run_dir / eval_name) != expected_eval:
        raise EdgekdError(f"{run_dir / eval_name} does not match the sha256 in manifest.json",
                          "the run directory was modified: rebuild it with `edgekd build`")

    out.parent.mkdir(parents=True, exist_ok=True)
    stage = out.parent / f".{out.name}.staging-{os.getpid()}"
    tar_path = out.parent / f"{out.name}.tar.gz"
    tar_tmp = out.parent / f".{out.name}.tar.gz.{os.getpid()}.tmp"
    if stage.exists():
        shutil.rmtree(stage)
    stage.mkdir()
    try:
        for entry in entries:
            for item in entry.get("files") or [{"path": entry["path"], "sha256": entry["sha256"]}]:
                _copy_verified(run_dir, item, stage, f"part of {entry['path']}")
        formats = {e["format"] for e in entries}
        plugins = [p for p in manifest.get("session_plugins") or [] if p.get("format") in formats]
        for plugin in plugins:
            _copy_verified(run_dir, plugin, stage, f"the session plugin of format {plugin['format']}")
        module = (manifest.get("preprocessing") or {}).get("module")
        if module:
            _copy_verified(run_dir, module, stage, "the pre-processing module")
        tokenizer = manifest.get("tokenizer")
        for key in ("vocab", "settings") if tokenizer else ():  # text: the runner tokenizes raw strings with these
            _copy_verified(run_dir, {"path": tokenizer[f"{key}_file"], "sha256": tokenizer[f"{key}_sha256"]}, stage,
                           f"the tokenizer's {key} file")
        shutil.copyfile(run_dir / eval_name, stage / "eval.npz")
        shutil.copyfile(RUNNER_PATH, stage / "runner.py")
        bundled_manifest = {**manifest, "artifacts": entries, "session_plugins": plugins,
                            "eval_inputs": {**(manifest.get("eval_inputs") or {}), "path": "eval.npz"}}
        write_json(stage / "manifest.json", bundled_manifest)
        bundle = Bundle(out, tar_path, [e["path"] for e in entries], threads or target_threads(report),
                        plugins=[p["path"] for p in plugins])
        write_text(stage / "requirements-device.txt", requirements_text(entries, report, bool(tokenizer)))
        write_text(stage / "README.txt", readme_text(bundle, report, entries, run_dir, bool(tokenizer)))
        files = sorted(p.name for p in stage.iterdir())
        bundle.files = [*files, MARKER]
        write_json(stage / MARKER, {
            "edgekd_version": __version__, "target": report.get("target"),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "source_run": str(run_dir.resolve()), "artifacts": bundle.artifacts, "threads": bundle.threads,
            "command": bundle.command, "files": {f: sha256_file(stage / f) for f in files},
        })
        with tarfile.open(tar_tmp, "w:gz") as tar:
            for name in bundle.files:
                tar.add(stage / name, arcname=f"{out.name}/{name}")
        replace_dir(stage, out)
        os.replace(tar_tmp, tar_path)
    finally:
        if stage.exists():
            shutil.rmtree(stage)
        if tar_tmp.exists():
            tar_tmp.unlink()
    return bundle
