"""The gate's budget rows and what judges them: shared by the gate (``edgekd.gate``) and the rows a device's own
tool adds (``edgekd.devices.gate_rules``), so neither imports the other."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edgekd.schema import ArtifactRow, DeviceArtifact

PASS, FAIL, UNVERIFIED = "pass", "fail", "unverified"


@dataclass(frozen=True)
class BudgetCheck:
    """One budget of the target against one measured value (student-wide or per shipped artifact)."""

    name: str
    artifact: str | None
    measured: float | None
    budget: float
    unit: str
    comparison: str  # "<=" or ">="
    status: str
    device_bound: bool
    note: str = ""

    @property
    def margin(self) -> float | None:
        if self.measured is None:
            return None
        return self.budget - self.measured if self.comparison == "<=" else self.measured - self.budget


def budget_check(name: str, artifact: str | None, measured: float | None, budget: float, unit: str, comparison: str,
                 device_bound: bool = False, on_device: bool = True, note: str = "") -> BudgetCheck:
    """One budget row: pass/fail by the comparison; unverified when nothing was measured, or when a device-bound
    value was measured off the device."""
    if measured is None:
        return BudgetCheck(name, artifact, None, budget, unit, comparison, UNVERIFIED, device_bound,
                           note or "not measured in this report")
    ok = measured <= budget if comparison == "<=" else measured >= budget
    status = PASS if ok else FAIL
    if device_bound and not on_device:
        status = UNVERIFIED
    return BudgetCheck(name, artifact, float(measured), float(budget), unit, comparison, status, device_bound, note)


@dataclass(frozen=True)
class DeviceMeasurement:
    """The row whose latency/memory judge an artifact's device budgets, and whether it counts as the device."""

    row: DeviceArtifact | ArtifactRow
    on_device: bool
    where: str  # which identity rule matched, or why not

    @property
    def extra(self) -> dict[str, Any]:
        """The row's fields the schema leaves open: a device tool's records (``devices/gate_rules.py``)."""
        return self.row.model_extra or {}
