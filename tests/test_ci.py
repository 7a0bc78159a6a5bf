"""CI's two steps: README's `make test` (the fast suite) first, so a red one fails early, then `make test-slow`; and
``--cpu-durations``, which ranks tests by CPU seconds where a shared host makes wall time noise."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
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


BURN = """
import subprocess, sys

def test_burns_a_second_in_a_subprocess():
    code = "import time\\nt = time.process_time()\\nwhile time.process_time() - t < 1.0: pass"
    subprocess.run([sys.executable, "-c", code], check=True)

def test_idles():
    pass
"""


def test_cpu_durations_charges_a_test_the_subprocesses_it_waited_for(tmp_path):
    (tmp_path / "test_burn.py").write_text(BURN)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "conftest",
                           "--rootdir", str(tmp_path), "test_burn.py", "--cpu-durations", "2"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "tests")})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    ranked = [line.split() for line in proc.stdout.split("most CPU seconds")[1].splitlines()[1:3]]
    assert [row[2].split("::")[1] for row in ranked] == ["test_burns_a_second_in_a_subprocess", "test_idles"]
    assert float(ranked[0][0][:-1]) >= 1.0 > float(ranked[1][0][:-1])
