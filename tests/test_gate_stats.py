"""The gate's statistics on hand-made numbers: exact McNemar, the MDR of two runs, interruption shares."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgekd.gate_stats import (
    FLOOR_QUANTILE,
    binomial_tail,
    compare_quantile,
    interrupted_share,
    mcnemar_exact,
    unpaired_drop_noise,
)


def test_binomial_tail_exact_values():
    assert binomial_tail(0, 5) == 1.0 and binomial_tail(6, 5) == 0.0
    assert binomial_tail(5, 5) == 1 / 32
    assert binomial_tail(4, 5) == 6 / 32  # C(5,4) + C(5,5)
    assert binomial_tail(8, 10) == 56 / 1024  # 45 + 10 + 1
    assert binomial_tail(600, 1000) < 1e-9  # big n stays exact and finite


def test_mcnemar_counts_and_p_value_on_a_hand_made_case():
    labels = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    before = np.array([0, 1, 2, 3, 4, 5, 6, 0, 0, 9])  # wrong on 7 and 8
    after = np.array([0, 0, 0, 0, 4, 5, 6, 7, 0, 0])  # wrong on 1, 2, 3, 8, 9; right on 7 now
    test = mcnemar_exact(labels, before, after)
    # b: right before, wrong now = samples 1, 2, 3, 9; c: wrong before, right now = sample 7; 8 wrong in both
    assert (test.n, test.b, test.c) == (10, 4, 1)
    assert test.p_value == pytest.approx(binomial_tail(4, 5)) == pytest.approx(6 / 32)
    assert test.baseline_accuracy == 0.8 and test.current_accuracy == 0.5
    assert test.drop == pytest.approx(0.3)
    with pytest.raises(ValueError, match="one entry per sample"):
        mcnemar_exact(labels, before[:9], after)


def test_unpaired_noise_is_the_two_proportion_half_width():
    assert unpaired_drop_noise(0.9, 0.9, 100) == pytest.approx(1.96 * math.sqrt(0.18 / 100))


def _blocks(medians: list[float], per_block: int = 400, seed: int = 0, sigma: float = 0.03) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([m * rng.lognormal(0.0, sigma, per_block) for m in medians])


def test_mdr_follows_the_block_spread_of_both_runs():
    steady = _blocks([1.0] * 5, seed=1)
    drifting = _blocks([1.0, 1.2, 0.9, 1.1, 0.85], seed=2)
    quiet = compare_quantile(steady, 5, _blocks([1.0] * 5, seed=3), 5, 50.0)
    noisy = compare_quantile(steady, 5, drifting, 5, 50.0)
    assert quiet.mdr_pct < 2.0 < 15.0 < noisy.mdr_pct
    assert quiet.ratio_interval[0] < 1.0 < quiet.ratio_interval[1] and quiet.verdict(10) == "pass"
    assert noisy.verdict(10) == "unverifiable"
    slower = compare_quantile(steady, 5, _blocks([1.3] * 5, seed=4), 5, FLOOR_QUANTILE)
    assert slower.ratio == pytest.approx(1.3, rel=0.02) and slower.verdict(10) == "fail"
    assert slower.verdict(40) == "pass"  # within a generous allowance


def test_mdr_is_symmetric_in_log_space_and_needs_blocks():
    a, b = _blocks([1.0, 1.05, 0.97, 1.02, 0.99], seed=5), _blocks([1.0] * 5, seed=6)
    one, two = compare_quantile(a, 5, b, 5, 50.0), compare_quantile(b, 5, a, 5, 50.0)
    assert one.mdr_pct == pytest.approx(two.mdr_pct)
    assert one.ratio == pytest.approx(1 / two.ratio)
    lo, hi = one.ratio_interval
    assert math.log(hi / one.ratio) == pytest.approx(math.log(one.ratio / lo))
    assert math.log(hi / one.ratio) == pytest.approx(math.log1p(one.mdr_pct / 100))
    with pytest.raises(ValueError, match="at least 3"):
        compare_quantile(a, 2, b, 5, 50.0)


def test_interrupted_share_and_quantiles_among_interruptions():
    body = _blocks([1.0] * 5, seed=7)
    spiked = body.copy()
    spiked[::10] += 20.0  # every tenth sample preempted
    assert interrupted_share(body) == 0.0
    assert interrupted_share(spiked) == pytest.approx(0.1)
    cmp = compare_quantile(body, 5, spiked, 5, 95.0)
    assert cmp.among_interruptions and cmp.verdict(10) == "unverifiable"
    assert not compare_quantile(body, 5, spiked, 5, 50.0).among_interruptions


def test_a_change_beyond_the_mdr_fails_only_when_every_block_is_slower():
    """A run whose machine changed speed halfway overlaps the baseline in some block: unverifiable, not a fail."""
    from edgekd.gate_stats import QuantileComparison

    def comparison(current_blocks: tuple[float, float]) -> QuantileComparison:
        return QuantileComparison(quantile=5.0, baseline=1.0, current=1.65, ratio=1.65, ratio_interval=(1.1, 2.5),
                                  mdr_pct=50.0, spread_pct=(1.0, 40.0), interrupted=(0.0, 0.0),
                                  block_range=((0.98, 1.02), current_blocks))

    assert comparison((1.0, 2.0)).verdict(10) == "unverifiable"  # one block ran as fast as the baseline
    assert comparison((1.13, 2.0)).verdict(10) == "fail"  # the fastest block is > 10 % over the slowest before
    assert not comparison((1.12, 2.0)).every_block_slower(10)


def _process(factor: float, slowdown: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(baseline, current) samples of one process whose machine runs ``factor`` x as slow as usual."""
    return (factor * _blocks([1.0] * 5, per_block=100, seed=seed),
            factor * slowdown * _blocks([1.0] * 5, per_block=100, seed=seed + 1000))


def test_interleaved_comparison_cancels_the_machine_and_uses_a_t_interval_over_processes():
    from scipy.stats import ttest_1samp

    from edgekd.gate_stats import compare_interleaved

    factors = np.random.default_rng(0).uniform(0.6, 1.6, 6)  # each process on a differently fast machine
    same = compare_interleaved([_process(f, 1.0, i) for i, f in enumerate(factors)], 50.0)
    assert same.ratio == pytest.approx(1.0, abs=0.01) and same.mdr_pct < 2.0 and same.verdict(10) == "pass"
    logs = np.log(same.process_ratios)
    interval = ttest_1samp(logs, 0.0).confidence_interval(0.95)
    assert same.ratio_interval == pytest.approx((math.exp(interval.low), math.exp(interval.high)))
    assert same.mdr_pct == pytest.approx(100 * math.expm1((interval.high - interval.low) / 2))
    slower = compare_interleaved([_process(f, 1.5, i) for i, f in enumerate(factors)], FLOOR_QUANTILE)
    assert slower.ratio == pytest.approx(1.5, rel=0.02) and slower.verdict(10) == "fail"
    with pytest.raises(ValueError, match="at least 3"):
        compare_interleaved([_process(1.0, 1.0, 0)] * 2, 50.0)


def test_a_stored_run_measured_in_several_processes_carries_their_spread():
    base, current = _blocks([1.0] * 5, seed=8), _blocks([1.0] * 5, seed=9) * 1.3
    within = compare_quantile(base, 5, current, 5, 50.0)
    assert within.verdict(10) == "fail" and not within.between_processes  # the gate caps this at unverifiable
    spread = ([1.0, 1.25, 0.85, 1.1], [1.3, 1.0, 1.45, 1.2])  # the p50 of each process of each run
    across = compare_quantile(base, 5, current, 5, 50.0, spread)
    assert across.between_processes and across.mdr_pct > 30 > within.mdr_pct
    assert across.verdict(10) == "unverifiable"  # 1.3x is within what two processes differ by


def test_median_interval_is_the_sign_test_interval():
    from scipy.stats import quantile_test

    from edgekd.gate_stats import median_interval

    values = list(np.random.default_rng(1).normal(1.0, 0.1, 20))
    interval = quantile_test(values, q=float(np.median(values))).confidence_interval(0.95)
    assert median_interval(values) == (interval.low, interval.high)
    assert sorted(values).index(interval.low) == 5 and median_interval([3.0, 1.0, 2.0]) == (1.0, 3.0)
