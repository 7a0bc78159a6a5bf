"""Is this machine the target device? The rule behind every "verified on the device" in a report.

A latency or memory budget means something only on the hardware it was written for. Same CPU architecture is not
enough (any aarch64 cloud VM would "be" a Raspberry Pi), so a run counts as measured on the target when:

* ``declared``: the user named the device explicitly (``edgekd bench --as-target``); recorded in the result;
* ``identity``: the machine matches what the target file states: architecture, the ``cpu_pattern`` regex over the
  runner's ``machine.cpu`` / ``machine.board`` (device-tree model) / ``machine.cpu_cores``, the ``cpu_flags``, the
  core count, and the memory within ``memory_tolerance_pct``;
* ``generic profile``: the target says it stands for a class of machines (``generic: true``, e.g. "any x86-64 with
  AVX2"): architecture, flags and pattern are checked, cores and memory are not.

Never, whatever the machine or a declaration: a target whose runtime runs on an accelerator (TensorRT on a
Jetson's GPU, an NNAPI delegate on a phone's NPU) measured by a CPU run, which is what the runner does; nor a run
under emulation (``where: emulated``, ``edgekd bench --emulate``), whose kernels are the core's but whose timing
is QEMU's.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from edgekd.targets import TargetProfile

# Delegates that run the model off the CPU: a CPU measurement says nothing about their latency or memory.
ACCELERATOR_DELEGATES = {"tensorrt": "TensorRT on the GPU", "nnapi": "the NNAPI driver (NPU/DSP)",
                         "gpu": "LiteRT's GPU delegate on the phone's GPU"}
_ARCH_ALIASES = {"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64", "armv8": "aarch64", "armv8l": "aarch64"}

DECLARED, IDENTITY, GENERIC, ACCELERATOR, MISMATCH = "declared", "identity", "generic profile", "accelerator", \
    "mismatch"
EMULATED = "emulated"


@dataclass(frozen=True)
class IdentityMatch:
    """Whether a run counts as measured on the target, by which rule, and the facts behind it."""

    is_target: bool
    rule: str  # declared | identity | generic profile | accelerator | mismatch | emulated
    reasons: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"is_target_device": self.is_target, "rule": self.rule, "reasons": list(self.reasons)}

    def summary(self) -> str:
        verdict = "the target device" if self.is_target else "not the target device"
        return f"{verdict} ({self.rule}: {'; '.join(self.reasons)})"


def normalize_arch(arch: str | None) -> str | None:
    if not arch:
        return None
    arch = arch.strip().lower()
    return _ARCH_ALIASES.get(arch, arch)


def _texts(machine: dict[str, Any]) -> list[str]:
    """What a cpu_pattern is matched against: the CPU model, the board's device-tree model, ARM core names."""
    cores = machine.get("cpu_cores")
    cores = ", ".join(cores) if isinstance(cores, list) else cores
    return [str(t) for t in (machine.get("cpu"), machine.get("board"), cores) if t]


def _pattern_facts(pattern: str | None, machine: dict[str, Any]) -> tuple[list[str], list[str]]:
    if pattern is None:
        return [], []
    texts = _texts(machine)
    hit = next((t for t in texts if re.search(pattern, t, re.IGNORECASE)), None)
    if hit is not None:
        return [f"'{hit}' matches /{pattern}/"], []
    seen = " / ".join(f"'{t}'" for t in texts) or "nothing (no cpu model or board reported)"
    return [], [f"cpu/board {seen} does not match /{pattern}/"]


def _flag_facts(wanted: Iterable[str], machine: dict[str, Any]) -> tuple[list[str], list[str]]:
    wanted = [f.lower() for f in wanted]
    if not wanted:
        return [], []
    have = machine.get("cpu_flags")
    if have is None:
        return [], [f"the run does not say whether the CPU has {', '.join(wanted)} (older runner)"]
    missing = [f for f in wanted if f not in {h.lower() for h in have}]
    if missing:
        return [], [f"the CPU lacks {', '.join(missing)}"]
    return [f"CPU has {', '.join(wanted)}"], []


def _size_facts(target: TargetProfile, machine: dict[str, Any]) -> tuple[list[str], list[str]]:
    d = target.device
    ok, bad = [], []
    cores = machine.get("cores")
    (ok if cores == d.cores else bad).append(f"{cores} cores (target {d.cores})")
    memory = machine.get("memory_mb")
    tolerance = d.memory_tolerance_pct / 100 * d.memory_mb
    if memory is None:
        bad.append("memory not reported")
    else:
        text = f"{memory} MB memory (target {d.memory_mb} MB +-{d.memory_tolerance_pct:g} %)"
        (ok if abs(memory - d.memory_mb) <= tolerance else bad).append(text)
    return ok, bad


def compare_machine(target: TargetProfile, machine: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(what matches, what does not) between the target's device section and a runner's ``machine``."""
    d = target.device
    arch = normalize_arch(machine.get("arch"))
    ok, bad = ([f"arch {arch}"], []) if arch == d.arch else ([], [f"arch {arch} (target {d.arch})"])
    for facts in (_pattern_facts(d.cpu_pattern, machine), _flag_facts(d.cpu_flags, machine)):
        ok += facts[0]
        bad += facts[1]
    if not d.generic:
        if d.cpu_pattern is None:
            bad.append(f"target '{target.name}' has no device.cpu_pattern to recognise its device by (set it, "
                       "or generic: true)")
        size_ok, size_bad = _size_facts(target, machine)
        ok += size_ok
        bad += size_bad
    return ok, bad


def match(target: TargetProfile, machine: dict[str, Any], declared: bool = False,
          accelerated: bool = False) -> IdentityMatch:
    """Does a run on ``machine`` (the runner's ``machine`` dict) count as measured on ``target``'s device?

    ``declared``: the user named this machine the target (recorded with the result). ``accelerated``: the run
    used the target's accelerator delegate; edgekd's runner measures on the CPU, so callers leave it False.
    """
    if machine.get("where") == EMULATED:  # before a declaration: nothing makes QEMU's timing the device's
        return IdentityMatch(False, EMULATED, (
            "measured under QEMU user-mode emulation: the target core's kernels ran, but no timing or memory "
            "under emulation is the device's",))
    ok, bad = compare_machine(target, machine)
    delegate = target.runtime.delegate
    if delegate in ACCELERATOR_DELEGATES and not accelerated:
        machine_note = "the machine itself matches" if not bad else "the machine differs too: " + "; ".join(bad)
        return IdentityMatch(False, ACCELERATOR, (
            f"target '{target.name}' runs on {ACCELERATOR_DELEGATES[delegate]} (runtime.delegate {delegate}, "
            f"accelerator {target.device.accelerator}); a CPU run never verifies its latency or memory",
            machine_note))
    if declared:
        note = ("the machine also matches the profile" if not bad
                else "the machine differs from the profile: " + "; ".join(bad))
        return IdentityMatch(True, DECLARED, ("declared the target device by the user (--as-target)", note))
    if bad:
        return IdentityMatch(False, MISMATCH, tuple(bad))
    if target.device.generic:
        return IdentityMatch(True, GENERIC, (
            f"any {target.device.arch} machine"
            + (f" with {', '.join(target.device.cpu_flags)}" if target.device.cpu_flags else "")
            + (f" matching /{target.device.cpu_pattern}/" if target.device.cpu_pattern else "")
            + f" counts as '{target.name}'", *ok))
    return IdentityMatch(True, IDENTITY, tuple(ok))


def measured_on_fields(target: TargetProfile, machine: dict[str, Any], declared: bool = False) -> dict[str, Any]:
    """What a report's ``measured_on`` (or a ``device_results[].measured_on``) records about the target device."""
    found = match(target, machine, declared)
    return {"is_target_device": found.is_target, "declared_target": declared,
            "identity": {"rule": found.rule, "reasons": list(found.reasons)}}


def from_measured_on(target: TargetProfile, measured_on: dict[str, Any]) -> IdentityMatch:
    """Judge a recorded ``measured_on`` again with ``target`` (the declaration it records is honoured)."""
    return match(target, measured_on, declared=bool(measured_on.get("declared_target")),
                 accelerated=measured_on.get("delegate") == target.runtime.delegate)
