"""Which machine counts as the target device: identity, generic profiles, declarations, accelerators."""

from __future__ import annotations

import pytest
import yaml

from edgekd.device_identity import (
    ACCELERATOR,
    DECLARED,
    GENERIC,
    IDENTITY,
    MISMATCH,
    from_measured_on,
    match,
    measured_on_fields,
)
from edgekd.targets import load_target

# What runner.describe_machine returns on the machines in question.
PI4 = {"arch": "aarch64", "cpu": "BCM2835", "board": "Raspberry Pi 4 Model B Rev 1.4", "cpu_cores": ["Cortex-A72"],
       "cpu_flags": None, "cores": 4, "memory_mb": 3793}
GRAVITON = {"arch": "aarch64", "cpu": "", "board": None, "cpu_cores": ["Neoverse-N1"], "cpu_flags": None, "cores": 4,
            "memory_mb": 3900}
ORIN = {"arch": "aarch64", "cpu": "", "board": "NVIDIA Orin Nano Developer Kit", "cpu_cores": ["Cortex-A78AE"],
        "cpu_flags": None, "cores": 6, "memory_mb": 7620}
CI_RUNNER = {"arch": "x86_64", "cpu": "AMD EPYC 7763 64-Core Processor", "board": None, "cpu_cores": None,
             "cpu_flags": ["avx2", "fma"], "cores": 4, "memory_mb": 16000}


def test_the_board_it_names_matches_by_identity():
    found = match(load_target("rpi4"), PI4)
    assert found.is_target and found.rule == IDENTITY
    assert "'Raspberry Pi 4 Model B Rev 1.4' matches /Raspberry Pi 4 Model B|BCM2711/" in found.reasons
    assert any("3793 MB memory" in r for r in found.reasons)


@pytest.mark.parametrize(("machine", "why"), [
    (GRAVITON, "does not match /Raspberry Pi 4 Model B|BCM2711/"),  # same arch and cores: a cloud VM is not a Pi
    ({**PI4, "memory_mb": 7800}, "7800 MB memory (target 4096 MB +-15 %)"),  # the 8 GB Pi 4
    ({**PI4, "cores": 2}, "2 cores (target 4)"),
    (CI_RUNNER, "arch x86_64 (target aarch64)"),
])
def test_mismatches_say_why(machine, why):
    found = match(load_target("rpi4"), machine)
    assert not found.is_target and found.rule == MISMATCH
    assert any(why in r for r in found.reasons), found.reasons


def test_an_accelerator_target_is_never_verified_by_a_cpu_run():
    for name, machine in (("jetson-orin-nano", ORIN), ("android-nnapi", {**GRAVITON, "cores": 8})):
        for declared in (False, True):
            found = match(load_target(name), machine, declared=declared)
            assert not found.is_target and found.rule == ACCELERATOR
            assert "a CPU run never verifies" in found.reasons[0]
    assert match(load_target("jetson-orin-nano"), ORIN).reasons[1] == "the machine itself matches"
    assert match(load_target("jetson-orin-nano"), ORIN, accelerated=True).is_target


def test_declared_by_the_user_counts_and_is_recorded():
    found = match(load_target("rpi4"), GRAVITON, declared=True)
    assert found.is_target and found.rule == DECLARED
    assert "differs from the profile" in found.reasons[1]
    fields = measured_on_fields(load_target("rpi4"), GRAVITON, declared=True)
    assert fields == {"is_target_device": True, "declared_target": True,
                      "identity": {"rule": DECLARED, "reasons": list(found.reasons)}}
    assert from_measured_on(load_target("rpi4"), {**GRAVITON, **fields}).rule == DECLARED
    assert from_measured_on(load_target("rpi4"), GRAVITON).rule == MISMATCH


def test_the_generic_x86_profile_says_so():
    target = load_target("x86-cpu")
    found = match(target, CI_RUNNER)
    assert found.is_target and found.rule == GENERIC
    assert found.reasons[0] == "any x86_64 machine with avx2 counts as 'x86-cpu'"
    assert found.summary().startswith("the target device (generic profile: any x86_64 machine with avx2")
    old_cpu = match(target, {**CI_RUNNER, "cpu_flags": ["sse4_2"]})
    assert not old_cpu.is_target and "the CPU lacks avx2" in old_cpu.reasons
    unknown = match(target, {**CI_RUNNER, "cpu_flags": None})
    assert not unknown.is_target and "older runner" in unknown.reasons[0]


def test_a_profile_without_a_pattern_recognises_no_machine(tmp_path):
    raw = yaml.safe_load(open(load_target("rpi4").path, encoding="utf-8"))
    del raw["device"]["cpu_pattern"]
    path = tmp_path / "board.yaml"
    path.write_text(yaml.safe_dump(raw))
    found = match(load_target(path), PI4)
    assert not found.is_target and "has no device.cpu_pattern" in found.reasons[0]


def test_a_bad_pattern_is_a_target_file_error(tmp_path):
    from edgekd.errors import EdgekdError

    raw = yaml.safe_load(open(load_target("rpi4").path, encoding="utf-8"))
    raw["device"]["cpu_pattern"] = "Raspberry (Pi"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(EdgekdError, match="device.cpu_pattern.*not a valid regular expression"):
        load_target(path)
