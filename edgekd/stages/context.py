"""What every build stage shares: the user's options, the target, the data, where to log and what each stage took."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekd.data import Dataset
from edgekd.rundir import home_of
from edgekd.targets import TargetProfile

DEFAULT_CACHE = Path(os.environ.get("EDGEKD_CACHE", Path.home() / ".cache" / "edgekd"))


@dataclass
class BuildOptions:
    """Everything ``edgekd build`` takes; the CLI fills it from flags, a Python caller directly."""

    target: str
    data: str = "digits"
    label_column: str | None = None  # the class column of a CSV/Parquet table
    text_column: str | None = None  # text data: the column of raw strings (edgekd.text), tokenized into int32 ids
    image_size: int | tuple[int, int] | None = None  # photos resized (shorter side) + centre-cropped to this
    crop_fraction: float = 1.0
    normalization: Any = None  # None/"fit": train statistics; "imagenet"/"inception"; or explicit mean/std
    teacher: str | None = None
    extra_teachers: list[str] = field(default_factory=list)  # more teachers for multi-teacher KD
    distill: dict[str, Any] = field(default_factory=dict)  # extra TrainConfig fields (YAML --distill-config)
    resume: bool = True  # checkpoint each epoch beside the run dir; the same command resumes after a kill
    teacher_arch: str | None = None
    teacher_config: dict[str, Any] = field(default_factory=dict)
    trust_pickle: bool = False
    out: Path | None = None
    epochs: int | None = None  # student; None = sized to the data
    teacher_epochs: int | None = None
    # The default teacher's augmentation (--teacher-augment crop); None = DEFAULT_TEACHER_AUGMENT
    teacher_augment: tuple[str, ...] | None = None
    seed: int = 0
    baseline: bool = False
    max_train: int | None = None
    loss_weights: dict[str, float] = field(default_factory=lambda: {"kd": 0.7, "ce": 0.3})
    temperature: float = 4.0
    prune: float = 0.0  # share of MACs to remove by structured pruning after distillation (0 = off)
    prune_steps: int = 2
    prune_importance: str = "magnitude"  # torch-pruning importance criterion, by name (compress.prune.IMPORTANCES)
    max_float_fraction: float = 0.5  # accuracy-aware int8 gives up beyond this share of layers in float
    qat_epochs: int = 0  # > 0: QAT with the teacher when accuracy-aware PTQ can't meet the contract (ONNX)
    calibration: str | None = None  # a calibration .npz from `edgekd calibrate` (default: drawn from the data)
    runs: int = 200
    warmup: int = 20
    strict: bool = False  # the gate fails budgets it could not verify (device budgets measured off the device)
    as_target: bool = False  # the user declares this host to be the target device (recorded in the report)
    # Student choice: "mac" (largest inside the MAC budget), "latency" (measured on the runtime, edgekd.selection)
    # or "auto" (latency when the target states student_budget.latency_ms and the timing means something here).
    selection: str = "auto"
    device: str | None = None  # USER@HOST[:PORT]: time selection candidates on the device over SSH
    progress: bool = True
    fast_train: bool = True  # CPU fast path (channels_last / bf16 where measured faster); --no-fast-train: off
    side_by_side: bool = True  # --baseline: KD and alone runs at once, half the cores each; --no-side-by-side: off
    teacher_cache: Path | None = DEFAULT_CACHE
    log: Any = None  # callable(str) for progress lines; None = print to stderr


@dataclass
class BuildContext:
    """Carried through the stages: the inputs every stage reads, and the wall time each one took."""

    options: BuildOptions
    target: TargetProfile
    data: Dataset
    out: Path
    stage_times_s: dict[str, float] = field(default_factory=dict)
    loaded_teachers: dict[str, Any] = field(default_factory=dict)  # path -> Teacher, see load_user_teacher

    def say(self, message: str) -> None:
        log: Callable[[str], None] = self.options.log or (lambda m: print(m, file=sys.stderr, flush=True))
        log(message)

    @contextlib.contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        """Add the wall time of the block to ``stage_times_s[stage]`` (report.json records them)."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.stage_times_s[stage] = round(self.stage_times_s.get(stage, 0.0) + time.perf_counter() - t0, 3)

    @property
    def checkpoint_dir(self) -> Path | None:
        """Where training checkpoints each epoch so the same command resumes a killed build: the run's hidden
        working folder (``edgekd.rundir``), beside the lock and the staging directory; None with ``--no-resume``."""
        return home_of(self.out) / "checkpoints" if self.options.resume else None

    @property
    def threads(self) -> int:
        return self.target.runtime.usable_threads
