"""Teacher outputs for the trainer: computed once and cached, or run per batch under inference mode.

When inputs don't change between epochs (no augmentation), the teachers' logits and tapped features are the
same every epoch, so they are computed in one pass and the teacher costs nothing afterwards. Above a size
threshold the cache lives in ``.npy`` files opened with ``mmap_mode`` (the OS pages them in), so a large
feature map cache never has to fit in RAM. Under torchrun each rank computes its contiguous shard of the
cache and every rank gathers the whole, batch by batch (each rank's sampler draws from all samples, and on
several machines there is no file every rank can read). Several teachers' soft targets are combined here too.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgekd import distributed as ranks
from edgekd.distill.batches import to_device
from edgekd.distill.taps import FeatureTaps
from edgekd.errors import EdgekdError

COMBINE_MODES = ("fixed", "confidence")


def combine_teacher_logits(logits: Sequence[torch.Tensor], weights: Sequence[float], mode: str,
                           temperature: float) -> torch.Tensor:
    """One set of "teacher logits" whose softmax at ``temperature`` is the weighted mixture of the teachers'.

    ``fixed``: the same weights for every sample. ``confidence``: per sample, each teacher's fixed weight times
    its confidence (max softmax probability at T=1), renormalised, so a teacher unsure of a sample says less.
    Returned as ``T * log(mixture)``, so every logit loss (KD, DKD) sees exactly the mixed soft targets.
    """
    if len(logits) == 1:
        return logits[0]
    stacked = torch.stack([z.float() for z in logits])  # (K, N, C)
    w = torch.as_tensor(list(weights), dtype=stacked.dtype, device=stacked.device).view(-1, 1)
    w = w.expand(-1, stacked.shape[1])
    if mode == "confidence":
        w = w * torch.softmax(stacked, dim=2).amax(dim=2)
    w = w / w.sum(0, keepdim=True).clamp_min(1e-12)
    mixture = (w.unsqueeze(2) * torch.softmax(stacked / temperature, dim=2)).sum(0)
    return temperature * mixture.clamp_min(1e-12).log()


def check_teacher_weights(n: int, weights: Sequence[float] | None, mode: str) -> list[float]:
    if mode not in COMBINE_MODES:
        raise EdgekdError(f"unknown teacher combination {mode!r}", f"use one of {', '.join(COMBINE_MODES)}")
    if weights is None:
        return [1.0 / n] * n
    weights = [float(w) for w in weights]
    if len(weights) != n:
        raise EdgekdError(f"{len(weights)} teacher weights for {n} teachers", "give one weight per teacher")
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise EdgekdError(f"teacher weights must be >= 0 and sum to > 0, got {weights}", "e.g. 0.5,0.5")
    return weights


def check_feature_teacher(teacher: nn.Module, feature_paths: Sequence[str]) -> None:
    """Feature losses tap modules of a PyTorch teacher; a logits-only one (ONNX, scikit-learn) has none."""
    if feature_paths and getattr(teacher, "logits_only", False):
        raise EdgekdError(
            f"feature losses (hint, at, rkd: teacher features {', '.join(map(repr, feature_paths))}) need a PyTorch "
            "teacher, and this teacher runs outside PyTorch (ONNX / scikit-learn): it gives logits only",
            "use logit losses (--losses kd=0.7,ce=0.3, or dkd), or give the teacher as a state_dict + --teacher-arch "
            "or a .pt2")


class TeacherRunner:
    """Runs the teachers (logits from all, tapped features from the first) under inference mode."""

    def __init__(self, teachers: Sequence[nn.Module], feature_paths: Sequence[str]) -> None:
        self.teachers = list(teachers)
        self.feature_paths = list(feature_paths)
        check_feature_teacher(self.teachers[0], self.feature_paths)
        self.taps = FeatureTaps(self.teachers[0], self.feature_paths, role="teacher") if self.feature_paths else None
        for t in self.teachers:
            t.eval()

    def __call__(self, x: torch.Tensor) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
        with torch.inference_mode():
            logits = [t(x).float() for t in self.teachers]
            feats = self.taps.take() if self.taps else {}
        # Inference tensors can't be saved for backward; a clone outside inference mode is a normal tensor.
        return [z.clone() for z in logits], {k: v.clone() for k, v in feats.items()}

    def close(self) -> None:
        if self.taps:
            self.taps.close()


class TeacherCache:
    """Teacher outputs for every training sample, in RAM or memory-mapped ``.npy`` files."""

    def __init__(self, logits: list[np.ndarray], features: dict[str, np.ndarray], where: str,
                 directory: Path | None) -> None:
        self.logits, self.features, self.where, self._dir = logits, features, where, directory

    @classmethod
    def build(cls, runner: TeacherRunner, x: np.ndarray, device: torch.device, memmap_threshold_mb: float,
              directory: Path | None = None, batch_size: int = 256) -> TeacherCache:
        n = len(x)
        probe_logits, probe_feats = runner(torch.from_numpy(x[:1]).to(device))
        specs = {f"logits{i}": tuple(z.shape[1:]) for i, z in enumerate(probe_logits)}
        specs.update({f"feat:{k}": tuple(v.shape[1:]) for k, v in probe_feats.items()})
        total_mb = n * sum(int(np.prod(s)) for s in specs.values()) * 4 / 2**20
        use_memmap = total_mb > memmap_threshold_mb
        tmp_dir = None
        if use_memmap:
            tmp_dir = Path(tempfile.mkdtemp(prefix="edgekd-teacher-cache-", dir=directory))
        arrays: dict[str, np.ndarray] = {}
        for i, (key, shape) in enumerate(specs.items()):
            if use_memmap:
                arrays[key] = np.lib.format.open_memmap(tmp_dir / f"{i}.npy", mode="w+", dtype=np.float32,
                                                        shape=(n, *shape))
            else:
                arrays[key] = np.empty((n, *shape), np.float32)
        if ranks.world().size > 1:
            _fill_sharded(runner, x, device, specs, arrays, batch_size)
        else:
            for start in range(0, n, batch_size):
                xb = torch.from_numpy(np.ascontiguousarray(x[start : start + batch_size])).to(device)
                _store(arrays, start, *runner(xb))
        if use_memmap:  # flush, then reopen read-only: the OS pages rows in as batches ask for them
            for i, key in enumerate(specs):
                arrays[key].flush()
                arrays[key] = np.load(tmp_dir / f"{i}.npy", mmap_mode="r")
        logits_list = [arrays[f"logits{i}"] for i in range(len(probe_logits))]
        features = {k[len("feat:"):]: v for k, v in arrays.items() if k.startswith("feat:")}
        return cls(logits_list, features, f"memmap ({total_mb:.0f} MB)" if use_memmap else
                   f"memory ({total_mb:.1f} MB)", tmp_dir)

    def batch(self, idx: np.ndarray, device: torch.device) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
        order = np.sort(idx)  # sorted reads are sequential on a memmap; then restore the batch's order
        inverse = np.argsort(np.argsort(idx))
        logits = [to_device(np.asarray(z[order])[inverse], device) for z in self.logits]
        feats = {k: to_device(np.asarray(v[order])[inverse], device) for k, v in self.features.items()}
        return logits, feats

    def close(self) -> None:
        self.logits, self.features = [], {}
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)


def _store(arrays: dict[str, np.ndarray], start: int, logits: list[torch.Tensor],
           feats: dict[str, torch.Tensor]) -> None:
    for i, z in enumerate(logits):
        arrays[f"logits{i}"][start : start + len(z)] = z.float().cpu().numpy()
    for k, v in feats.items():
        arrays[f"feat:{k}"][start : start + len(v)] = v.float().cpu().numpy()


def _fill_sharded(runner: TeacherRunner, x: np.ndarray, device: torch.device, specs: dict[str, tuple],
                  arrays: dict[str, np.ndarray], batch_size: int) -> None:
    """This rank's shard through the teachers, every rank's rows gathered: step s of each rank in one all_gather.

    A rank whose shard is used up sends zeros (the rows no one reads), so every rank joins every step.
    """
    first, stop, per = ranks.shard(len(x))
    sizes = [int(np.prod(shape)) for shape in specs.values()]
    for offset in range(0, per, batch_size):
        mine = np.ascontiguousarray(x[min(first + offset, stop) : min(first + offset + batch_size, stop)])
        flat = torch.zeros(batch_size, sum(sizes))
        if len(mine):
            logits, feats = runner(torch.from_numpy(mine).to(device))
            outputs = [z.float() for z in logits] + [v.float() for v in feats.values()]
            flat[: len(mine)] = torch.cat([o.reshape(len(mine), -1).cpu() for o in outputs], dim=1)
        for rank, rows in enumerate(ranks.all_gather(flat)):
            start = rank * per + offset
            count = max(0, min(batch_size, per - offset, len(x) - start))
            for key, part in zip(specs, torch.split(rows[:count], sizes, dim=1), strict=True):
                arrays[key][start : start + count] = part.reshape(count, *specs[key]).numpy()
