"""Caps on the counts a user passes (``--runs``, ``--epochs``, ...): a typo like ``--runs 2000000000`` is refused
with the limit named instead of running for days or exhausting memory."""

from __future__ import annotations

from typing import Any

from edgekd.errors import EdgekdError

# flag -> (smallest, largest) accepted value; None on the command line means "the default".
COUNT_LIMITS: dict[str, tuple[int, int]] = {
    "--runs": (1, 100_000),
    "--warmup": (0, 10_000),
    "--threads": (1, 256),
    "--epochs": (1, 10_000),
    "--teacher-epochs": (1, 10_000),
    "--qat-epochs": (0, 1_000),
    "--prune-steps": (1, 100),
    "--samples": (1, 1_000_000),
    "--remote": (1, 64),
    "--connect-timeout": (1, 600),
    "--top": (1, 100_000),
}


def check_counts(values: dict[str, Any]) -> None:
    """Each ``flag -> value`` (None skipped) inside ``COUNT_LIMITS``; the first one outside is one EdgekdError."""
    for flag, value in values.items():
        if value is None:
            continue
        low, high = COUNT_LIMITS[flag]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise EdgekdError(f"{flag} {value!r} is outside the accepted range {low}..{high:,}",
                              f"pass a whole number from {low} to {high:,} for {flag}")


def check_build_counts(options: Any) -> None:
    """The counts of a ``BuildOptions``, before any data is loaded."""
    check_counts({"--runs": options.runs, "--warmup": options.warmup, "--epochs": options.epochs,
                  "--teacher-epochs": options.teacher_epochs, "--qat-epochs": options.qat_epochs,
                  "--prune-steps": options.prune_steps})
