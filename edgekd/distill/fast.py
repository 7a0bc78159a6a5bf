"""The CPU training fast path: what to turn on is measured on this machine, for this model, before training.

Why measured rather than fixed: on the CPU these were written on (Xeon with AMX), ``channels_last`` made the
MobileNetV2 student's training step ~1.5x faster while bf16 autocast made it *slower* (its depthwise convolutions
get no AMX help and pay for the casts), and the dense teacher CNN ran ~5x faster under bf16. A different CPU
(no AVX-512 BF16/AMX, or an ARM board) ranks them differently. So ``choose_plan`` times a few real training
steps of each candidate on a copy of the model (the real model, optimizer and RNG streams are untouched) and
keeps the simplest one within ``min_gain`` of the fastest: a plan must beat plain eager by ``min_gain``, and a
near-tie goes to fewer changes.
``torch.compile`` is not a candidate: ``benchmarks/train_throughput.py`` measured it slower than eager on this
2-core machine once its compile time is counted (see ``benchmarks/results/train_throughput.json``).
"""

from __future__ import annotations

import copy
import math
import platform
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache

import torch
import torch.nn.functional as F
from torch import nn

CANDIDATES = ("eager", "channels_last", "channels_last+bf16", "bf16")


@cache
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags the kernel reports (Linux); empty elsewhere."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """torch's intra-op thread count is process-wide: set it for a block, restore it after (None: leave it)."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def cpu_bf16() -> bool:
    """bf16 matmul/conv in hardware (AVX-512 BF16 or AMX) and oneDNN to use it.

    ``torch.backends.cpu.get_cpu_capability()`` says only "AVX512" on AMX machines, so the flags decide.
    """
    flags = cpu_flags()
    return torch.backends.mkldnn.is_available() and bool({"avx512_bf16", "amx_bf16"} & flags)


@dataclass(frozen=True)
class FastPlan:
    """How to run training: the input/weight memory format and the autocast dtype (None: fp32)."""

    name: str = "eager"
    channels_last: bool = False
    amp: torch.dtype | None = None
    samples_per_s: dict[str, float] = field(default_factory=dict)

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    @property
    def optimisations(self) -> list[str]:
        return [] if self.name == "eager" else self.name.split("+")

    def apply(self, *models: nn.Module) -> None:
        for m in models:
            m.to(memory_format=self.memory_format)

    def to_state(self) -> dict:
        return {"name": self.name, "samples_per_s": dict(self.samples_per_s)}

    @classmethod
    def from_state(cls, state: dict) -> FastPlan:
        return plan_for(state["name"], state.get("samples_per_s", {}))


def plan_for(name: str, samples_per_s: dict[str, float] | None = None) -> FastPlan:
    parts = set(name.split("+"))
    return FastPlan(name, "channels_last" in parts, torch.bfloat16 if "bf16" in parts else None,
                    dict(samples_per_s or {}))


def candidates(x: torch.Tensor, device: torch.device) -> list[str]:
    """What can apply: channels_last needs 4-D images; bf16 needs the CPU to have it."""
    if device.type != "cpu":
        return ["eager"]
    names = ["eager"]
    if x.ndim == 4:
        names.append("channels_last")
    if cpu_bf16():
        names.append("channels_last+bf16" if x.ndim == 4 else "bf16")
    return names


def step_fn(model: nn.Module, plan: FastPlan, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    """One training step (forward, cross-entropy, backward, AdamW) of ``model`` under ``plan``."""
    plan.apply(model)
    xb = x.contiguous(memory_format=plan.memory_format) if x.ndim == 4 else x
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()

    def step() -> None:
        with torch.autocast("cpu", dtype=plan.amp, enabled=plan.amp is not None):
            loss = F.cross_entropy(model(xb).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def time_steps(step: Callable[[], None], steps: int) -> float:
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - t0) / steps


def choose_plan(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device, seconds: float = 0.4,
                rounds: int = 3, min_gain: float = 1.1) -> FastPlan:
    """Time training steps of each candidate on copies of ``model``, interleaved over ``rounds``.

    Each timed block runs enough steps to fill ~``seconds``. Interleaving (eager, cl, cl+bf16, eager, ...) makes
    a burst of load from another process hit every candidate alike, and the best block of each counts (load
    only ever slows a block down). RNG state is restored afterwards.
    """
    names = candidates(x, device)
    if len(names) == 1:
        return plan_for("eager")
    with torch.random.fork_rng(devices=[]):
        fns = {n: step_fn(copy.deepcopy(model), plan_for(n), x, y) for n in names}
        steps = {}
        for n, fn in fns.items():
            fn()  # warm-up: oneDNN primitive creation, allocator
            steps[n] = max(2, math.ceil(seconds / max(time_steps(fn, 1), 1e-4)))
        best = dict.fromkeys(names, float("inf"))
        for _ in range(rounds):
            for n in names:
                best[n] = min(best[n], time_steps(fns[n], steps[n]))
    rate = {n: round(len(y) / t, 1) for n, t in best.items()}
    return plan_for(simplest_within(rate, names, min_gain), rate)


def simplest_within(rate: dict[str, float], simplest_first: list[str], min_gain: float) -> str:
    """The first candidate (fewest changes) whose rate is within ``min_gain`` of the fastest one's.

    Why not the fastest: short timing blocks rank near-ties by noise, and a change that only ties costs something
    (bf16 rounds every activation; it also measured slower over longer blocks than in ``choose_plan``'s: 256 vs 345
    samples/s for the x86-cpu CIFAR-10 student, where channels_last alone held 369). Eager is the simplest, so a
    plan must beat it by ``min_gain`` as before."""
    fastest = max(rate.values())
    return next(n for n in simplest_first if rate[n] * min_gain >= fastest)
