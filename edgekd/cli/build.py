"""``edgekd build`` and ``edgekd calibrate``: the main job, and the calibration set it can reuse."""

from __future__ import annotations

import argparse
from pathlib import Path

from edgekd.bench import parse_remote
from edgekd.compress.calibration import build_calibration_set, save_calibration_set
from edgekd.counts import check_counts
from edgekd.data import load_dataset
from edgekd.distributed import is_main
from edgekd.errors import EdgekdError
from edgekd.gate import BudgetCheck, GateResult, format_table
from edgekd.io import load_yaml, loads_json, read_file_capped
from edgekd.stages import context as stage_context  # read at call time: tests point the cache elsewhere
from edgekd.targets import load_target


def _kv_floats(text: str) -> dict[str, float]:
    try:
        pairs = [p.split("=", 1) for p in text.split(",") if p]
        return {k.strip(): float(v) for k, v in pairs}
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected NAME=WEIGHT[,NAME=WEIGHT...], got '{text}'") from None


def _json_obj(text: str) -> dict:
    try:
        value = loads_json(text, "the value", "")
    except EdgekdError as exc:
        raise argparse.ArgumentTypeError(exc.problem) from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object")
    return value


def _distill_yaml(path: str | None) -> dict:
    if not path:
        return {}
    what, fix = f"distillation config {path}", "pass a readable YAML file of TrainConfig fields, e.g. patience: 5"
    try:
        text = read_file_capped(path, "distillation config", fix).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise EdgekdError(f"{what} is not UTF-8 text ({exc.reason} at byte {exc.start})", fix) from None
    value = load_yaml(text, what, fix) or {}
    if not isinstance(value, dict):
        raise EdgekdError(f"distillation config {path} must be a mapping of settings", "e.g. patience: 5")
    return value


def _names(text: str) -> list[str]:
    return [n.strip() for n in text.split(",") if n.strip()]


def _distill_settings(args: argparse.Namespace) -> dict:
    """The --distill-config YAML, with --augment / --teaching (when given) taking precedence."""
    settings = _distill_yaml(args.distill_config)
    if args.augment is not None:
        settings["augment"] = args.augment
    if args.teaching is not None:
        settings["teaching"] = args.teaching
    return settings


def cmd_build(args: argparse.Namespace) -> int:
    from edgekd.api import BuildOptions, build  # lazy: loads torch, which no other command needs
    options = BuildOptions(
        target=args.target, data=args.data, label_column=args.label_column, text_column=args.text_column,
        image_size=args.image_size, crop_fraction=args.crop_fraction, normalization=args.normalization,
        teacher=(args.teacher or [None])[0], teacher_arch=args.teacher_arch,
        extra_teachers=(args.teacher or [])[1:], distill=_distill_settings(args),
        resume=not args.no_resume,
        teacher_config=args.teacher_config or {}, trust_pickle=args.trust_pickle,
        out=Path(args.out) if args.out else None, epochs=args.epochs, teacher_epochs=args.teacher_epochs,
        teacher_augment=None if args.teacher_augment is None else tuple(args.teacher_augment),
        seed=args.seed, baseline=args.baseline, max_train=args.max_train,
        loss_weights=args.losses or {"kd": 0.7, "ce": 0.3}, temperature=args.temperature,
        prune=args.prune, prune_steps=args.prune_steps, prune_importance=args.prune_importance,
        qat_epochs=args.qat_epochs, calibration=args.calibration,
        runs=args.runs, warmup=args.warmup, progress=not args.no_progress, strict=args.strict,
        as_target=args.as_target, selection=args.selection, device=args.device,
        fast_train=not args.no_fast_train,
        side_by_side=not args.no_side_by_side,
        teacher_cache=None if args.no_cache else Path(args.cache_dir) if args.cache_dir else None,
    )
    if options.teacher_cache is None and not args.no_cache:
        options.teacher_cache = stage_context.DEFAULT_CACHE
    result = build(options)
    gate = result.report["gate"]
    if is_main():  # under torchrun every rank has the report; rank 0 shows it
        print((result.out_dir / "report.md").read_text())
        print(format_table(_gate_from_dict(gate)) if gate["checks"] else "")
    return 0 if gate["passed"] else 1


def _gate_from_dict(gate: dict):
    checks = [BudgetCheck(**{k: v for k, v in c.items() if k != "margin"}) for c in gate["checks"]]
    return GateResult(checks, gate.get("strict", False))


def cmd_calibrate(args: argparse.Namespace) -> int:
    check_counts({"--samples": args.samples})
    target = load_target(args.target)
    data = load_dataset(args.data, seed=args.seed, label_column=args.label_column, image_size=args.image_size,
                        crop_fraction=args.crop_fraction, normalization=args.normalization,
                        text_column=args.text_column)
    samples = args.samples or target.calibration.samples
    out = Path(args.out or f"calibration/{data.name}-{target.name}.npz")
    manifest = save_calibration_set(build_calibration_set(data, samples, args.seed), out)
    print(f"wrote {out} ({manifest['samples']} samples, per class {manifest['per_class']}, "
          f"sha256 {manifest['sha256'][:16]}...) and {out.with_suffix('.manifest.json')}")
    return 0


def _image_size(text: str) -> int | tuple[int, int]:
    try:
        if "x" in text.lower():
            height, width = (int(v) for v in text.lower().split("x", 1))
            return (height, width)
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or HxW, got '{text}'") from None


def _remote(text: str) -> str:
    try:
        return parse_remote(text).spec
    except EdgekdError as exc:
        raise argparse.ArgumentTypeError(exc.problem) from None


def add_data_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="digits",
                   help="'digits' (built in) or a path: IDX dir, ImageFolder dir, .npz, CSV/TSV, Parquet, or an "
                        ".tar.gz/.zip of one (unpacked safely into the cache); see docs/data.md")
    p.add_argument("--label-column", help="the class column of a CSV/Parquet table")
    p.add_argument("--text-column", help="text data: the column of raw strings in a CSV/Parquet table (or a folder "
                                          "of train.csv + test.csv), tokenized by a WordPiece vocabulary trained "
                                          "on the training split; see docs/data.md")
    p.add_argument("--image-size", type=_image_size, metavar="N|HxW",
                   help="resize photos (shorter side) and centre-crop to this size, e.g. the teacher's 224")
    p.add_argument("--crop-fraction", type=float, default=1.0,
                   help="crop this fraction of the resized image (0.875: resize 256, crop 224)")
    p.add_argument("--normalization", help="fit (train statistics, default), imagenet or inception (build: a "
                                           "torchvision:/timm: --teacher-arch defaults to the statistics it expects)")


def register(sub) -> None:
    p = sub.add_parser("build", help="teacher -> distilled student -> artifacts -> benchmark -> report",
                       description="Exit codes: 0 built and the gate passed, 1 built but the gate failed (the run "
                                   "directory is still written), 2 bad input (nothing written).")
    p.add_argument("--target", required=True, help="target name (edgekd targets list) or YAML path")
    add_data_flags(p)
    p.add_argument("--teacher", action="append",
                   help="torch.export .pt2, state_dict .pt/.safetensors (+ --teacher-arch), .onnx (onnxruntime), "
                        ".skops (scikit-learn), or TorchScript (--trust-pickle); repeat for several")
    p.add_argument("--distill-config", help="YAML of distillation settings (loss_options, schedules, patience, "
                                            "teacher_combine, ...): fields of edgekd.distill.trainer.TrainConfig")
    p.add_argument("--augment", type=_names, metavar="NAMES",
                   help="train-time augmentation, e.g. crop,flip or crop,flip,mixup (edgekd/distill/augment.py); "
                        "'' for none; the --baseline student gets the same")
    p.add_argument("--teaching", choices=("cached", "consistent"),
                   help="with --augment: the teacher's outputs cached once on un-augmented inputs (fast), or the "
                        "teacher run on the student's augmented view every batch (consistent; slower)")
    p.add_argument("--no-resume", action="store_true", help="don't checkpoint/resume distillation")
    p.add_argument("--teacher-arch", help="architecture of a state_dict teacher: an edgekd name (teacher_cnn) or "
                                          "torchvision:NAME / timm:NAME (built without downloading weights); "
                                          "without --teacher, the edgekd architecture trained as the default teacher")
    p.add_argument("--teacher-config", type=_json_obj,
                   help='JSON kwargs for --teacher-arch (or the default teacher), e.g. \'{"widths": [48, 96, 192]}\'')
    p.add_argument("--trust-pickle", action="store_true",
                   help="trust the teacher file's author: allow full unpickling and TorchScript, both of which can "
                        "run code from the file (PyTorch's security policy: treat such models as programs)")
    p.add_argument("--out", help="run directory (default runs/<target>)")
    p.add_argument("--epochs", type=int, help="student epochs (default: sized to the data)")
    p.add_argument("--teacher-epochs", type=int, help="epochs for the default teacher")
    p.add_argument("--teacher-augment", type=_names, metavar="NAMES",
                   help="augmentation for the default teacher, e.g. crop (default: none; see "
                        "stages/teacher.py for the measurement)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--baseline", action="store_true", help="also train the student alone and report the KD gain")
    p.add_argument("--max-train", type=int, help="use at most N training samples")
    p.add_argument("--losses", type=_kv_floats, help="loss mix, e.g. kd=0.7,ce=0.3")
    p.add_argument("--temperature", type=float, default=4.0)
    p.add_argument("--prune", type=float, default=0.0, metavar="RATIO",
                   help="remove this share of MACs by structured pruning (kept only if measured faster)")
    p.add_argument("--prune-steps", type=int, default=2)
    p.add_argument("--prune-importance", default="magnitude",
                   help="channel ranking for --prune: magnitude, l1, lamp, fpgm, bn_scale, taylor or random")
    p.add_argument("--calibration", metavar="NPZ",
                   help="int8 calibration set written by `edgekd calibrate` (default: drawn from the training split)")
    p.add_argument("--qat-epochs", type=int, default=0,
                   help="QAT epochs with the teacher when accuracy-aware int8 can't meet the contract (ONNX)")
    p.add_argument("--runs", type=int, default=200, help="timed runs per artifact")
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--cache-dir", help="where default teachers are cached (default ~/.cache/edgekd)")
    p.add_argument("--no-cache", action="store_true", help="always train the default teacher afresh")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--no-fast-train", action="store_true",
                   help="train in plain fp32 eager mode (default: channels_last / bf16 autocast where a few timed "
                        "steps show them faster on this CPU; the report's training.optimisations says which)")
    p.add_argument("--no-side-by-side", action="store_true",
                   help="with --baseline, train the KD and alone students one after the other (default on a CPU: "
                        "at once, half the cores each, since a small student's step does not scale across cores)")
    p.add_argument("--strict", action="store_true",
                   help="fail the gate on budgets that could not be verified (device budgets off the device)")
    p.add_argument("--as-target", action="store_true",
                   help="declare this host to be the target device (recorded in the report; never for accelerator "
                        "targets such as TensorRT or NNAPI, which a CPU run cannot verify)")
    p.add_argument("--selection", choices=("auto", "mac", "latency"), default="auto",
                   help="choose the student by MAC budget or by latency measured on the target's runtime; auto: "
                        "latency when the target sets student_budget.latency_ms, runs on the CPU, and this host is "
                        "the device or --device is given; then, when it fits in 20 %% of the build's expected time, "
                        "the students that fit are ranked by the validation accuracy a short distillation reaches")
    p.add_argument("--device", metavar="USER@HOST[:PORT]", type=_remote,
                   help="time the selection's candidates on this device over SSH (the remote runner of `edgekd "
                        "bench --remote`); without it they are timed on this host, labelled a host proxy")
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("calibrate", help="build a class-balanced calibration set (.npz + manifest)")
    p.add_argument("--target", required=True)
    add_data_flags(p)
    p.add_argument("--samples", type=int, help="default: the target's calibration.samples")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="output .npz (default calibration/<data>-<target>.npz)")
    p.set_defaults(func=cmd_calibrate)
