"""benchmarks/runner_vs_benchmark_app.py: benchmark_app's console median read in either of the units it prints (its
--quick run against the real tool is in test_benchmarks_quick.py)."""

from __future__ import annotations

import pytest
from test_benchmarks_quick import load_script


@pytest.fixture(scope="module")
def bench():
    return load_script("runner_vs_benchmark_app")


def console(median: str) -> str:
    """The tail of benchmark_app's report, in the layout OpenVINO 2026's Python benchmark_app prints."""
    return ("[ INFO ] Count:            998 iterations\n[ INFO ] Latency:\n"
            f"[ INFO ]    Median:        {median}\n[ INFO ]    Average:       988.27 us\n")


@pytest.mark.parametrize(("median", "ms"), [("967.45 us", 0.96745), ("12.50 ms", 12.5), ("1.00 ms", 1.0)])
def test_median_is_read_in_ms_whatever_unit_the_tool_printed(bench, median, ms):
    assert bench.parse_median_ms(console(median)) == pytest.approx(ms)


def test_a_report_without_a_median_reads_as_none(bench):
    assert bench.parse_median_ms("[ INFO ] Count: 3 iterations\n") is None
    assert bench.parse_median_ms("[ INFO ]    Median:        967.45 ns\n") is None
