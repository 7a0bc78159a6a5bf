"""CI's two steps: README's `make test` (the fast suite) first, so a red one fails early, then `make test-slow`."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def recipe(target: str) -> list[list[str]]:
    """The Makefile target's commands, split as the shell would."""
    text = (ROOT / "Makefile").read_text()
    match = re.search(rf"^{re.escape(target)}:[^\n]*\n((?:\t[^\n]*\n)+)", text, re.MULTILINE)
    assert match, f"Makefile has no '{target}' target"
    return [shlex.split(line) for line in match.group(1).splitlines()]


def marker_expression(target: str) -> str:
    (command,) = [c for c in recipe(target) if "pytest" in c]
    options = command[command.index("pytest") + 1:]  # after `python -m pytest`
    return options[options.index("-m") + 1]


def test_ci_runs_the_fast_suite_then_the_slow_set_and_stops_at_the_first_red():
    lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert [line for line in lines if line.startswith("make ")] == ["make test", "make test-slow"]
    assert "set -euo pipefail" in lines


def test_make_test_leaves_out_exactly_what_make_test_slow_runs():
    assert marker_expression("test") == "not slow"
    assert marker_expression("test-slow") == "slow"
