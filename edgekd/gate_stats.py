"""The statistics behind the gate's regression rows: latency quantiles with their minimum detectable regression,
and the exact McNemar test for accuracy on the same inputs.

Latency, same job (``edgekd gate --baseline-run``, the normal path). The baseline artifact is re-measured now,
interleaved with the candidate in one runner process (``runner.py --versus BASELINE --processes N``), in N fresh
processes one after another, which one goes first alternating. Inside a process both models see the same machine
(frequency, load, drift), so it cancels in the ratio; what a process does not cancel (memory layout, which model
warmed the caches) differs from process to process, and the N per-process ratios of a quantile measure exactly
that. The processes are independent replicates of one comparison, so the mean of their log ratios has a Student-t
95 % interval (``scipy.stats.ttest_1samp``); its half-width is the MDR, and the verdict below reads the ratio
against it (``InterleavedComparison``).

Latency, stored number (``--baseline report.json``): like with like. For each quantile q (p5 "floor", p50, p95)
the current run's q is compared with the baseline's q, as the ratio ``current / baseline``. How far that ratio can
move with no change to the model is estimated from the two runs at hand: the runner times its samples in blocks,
and the block-to-block spread of ``log(quantile)`` inside a run is how much the machine moves that quantile from
one stretch of time to the next. A whole run is treated as *one* such draw (its spread is the block spread, not
the block spread / sqrt(blocks)): the machine's state between two runs, minutes or days apart, differs at least
as much as between two blocks of one run, and shrinking the spread by the number of blocks is what made
same-artifact runs look "significantly" slower on a busy runner. Two runs in separate processes differ by more
than two blocks of one run do (a quiet 2-core Xeon: the same artifact 16-25 % apart where the blocks gave an MDR
of 5-11 %), so when the runner measured a run in several processes (``--processes``:
``latency_ms_detail.processes``) its spread is the larger of the block spread and the spread of its per-process
quantiles, still one draw per run (the between-job variance is at least that). Without per-process numbers a row
can pass or say "unverifiable", never fail (``between_processes``). With ``s_b``, ``s_c`` the spreads of the two
runs and ``t`` the 97.5 % Student-t quantile
(Welch-Satterthwaite degrees of freedom),

    MDR = exp(t * sqrt(s_b^2 + s_c^2)) - 1

is the **minimum detectable regression**: the smallest slowdown of this quantile these two runs can tell from noise.
A row then reads, with ``r`` the allowed regression (``--max-regression``):

* fail: the ratio exceeds both ``1 + r`` and ``1 + MDR`` (slower than allowed, and beyond the noise), and every
  timing block of the current run is more than r slower than every block of the baseline (each block's quantile:
  the current run's lower bound against the baseline's upper bound). With 5 blocks a run, blocks that only differ
  by chance end up so ordered with probability 1/252; and a run whose machine changed speed halfway (a busy
  neighbour, a throttled core: seen on shared runners) does not pass it;
* unverifiable at this noise: it did not fail, and MDR > r (a regression between r and MDR would pass unseen) or
  the change beyond the MDR was not in every block: the row says so instead of passing (``--strict`` fails it);
* pass: MDR <= r and the ratio is within ``1 + r``: any regression beyond r would have shown.

Interference only adds time, to a share of the samples: a sample over INTERRUPTED_FACTOR x the run's p10 was
interrupted (a batch-1 inference of a fixed graph does the same work every time). Once that share reaches half
of the samples above a quantile (2.5 % for p95, 25 % for p50), the quantile lies among the interruptions and
measures the machine, not the model: the row is "unverifiable at this noise" whatever the ratio. So the floor (p5)
catches a uniformly slower model even on a busy machine; p95 catches a tail-only regression (some inferences
slower, up to 3x) where the machine is quiet enough to see one, and says "unverifiable" where it is not; a tail
of >3x samples is indistinguishable from preemption and is reported as such.

Accuracy, paired. Both reports scored the same test inputs (same ``eval_inputs.sha256``), so per sample there are
four outcomes; only the discordant ones carry information: ``b`` = right in the baseline and wrong now, ``c`` = wrong
in the baseline and right now. With no change, each discordant sample goes either way with probability 1/2, so the
exact one-sided McNemar p-value is ``P(X >= b)`` for ``X ~ Binomial(b + c, 1/2)``. An accuracy row fails when the
drop exceeds ``--max-accuracy-drop`` and p < 2.5 % (the one-sided half of the 95 % used for latency).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

CONFIDENCE = 0.95
ALPHA_ONE_SIDED = (1.0 - CONFIDENCE) / 2.0
MIN_BLOCKS = 3  # fewer blocks cannot estimate a spread (2 gives one degree of freedom)
MIN_PROCESSES = 3  # likewise for the processes of an interleaved same-job comparison
INTERRUPTED_FACTOR = 3.0
FLOOR_QUANTILE = 5.0
LATENCY_QUANTILES = (FLOOR_QUANTILE, 50.0, 95.0)


# ============================================================================================ latency
@dataclass(frozen=True)
class LatencyRatio:
    """One latency quantile, current / baseline: the ratio, its 95 % interval and the minimum detectable regression."""

    quantile: float
    baseline: float
    current: float
    ratio: float
    ratio_interval: tuple[float, float]
    mdr_pct: float
    interrupted: tuple[float, float]  # share of interrupted samples (baseline, current)

    @property
    def change_pct(self) -> float:
        return 100.0 * (self.ratio - 1.0)

    @property
    def among_interruptions(self) -> bool:
        """The quantile lies among the interrupted samples of either run: it measures the machine."""
        return max(self.interrupted) >= (1.0 - self.quantile / 100.0) / 2.0

    def consistent(self, max_regression_pct: float) -> bool:
        """Whether a change beyond the MDR holds throughout the measurement (where it has parts to check)."""
        return True

    def verdict(self, max_regression_pct: float) -> str:
        """'fail', 'unverifiable' or 'pass' by the rule in the module docstring."""
        if self.among_interruptions:
            return "unverifiable"
        if self.change_pct > max(max_regression_pct, self.mdr_pct):
            return "fail" if self.consistent(max_regression_pct) else "unverifiable"
        if self.mdr_pct > max_regression_pct:
            return "unverifiable"
        return "pass"


@dataclass(frozen=True)
class QuantileComparison(LatencyRatio):
    """Two runs measured apart (a stored baseline): the MDR from each run's block (and process) spread.

    ``verdict`` is the rule on these numbers; the gate caps a 'fail' without ``between_processes`` at
    'unverifiable'."""

    spread_pct: tuple[float, float] = (0.0, 0.0)  # spread of the quantile (baseline, current), in %
    block_range: tuple[tuple[float, float], tuple[float, float]] = ((0.0, 0.0), (0.0, 0.0))  # (min, max) per run
    between_processes: bool = False  # both runs' spread includes the spread between processes

    def every_block_slower(self, max_regression_pct: float) -> bool:
        """The fastest block of the current run is slower than the slowest baseline block by more than allowed."""
        return self.block_range[1][0] > self.block_range[0][1] * (1.0 + max_regression_pct / 100.0)

    def consistent(self, max_regression_pct: float) -> bool:
        return self.every_block_slower(max_regression_pct)


def split_blocks(samples: np.ndarray, blocks: int) -> np.ndarray:
    """The samples as a (blocks, per_block) grid in the order they were timed (a short tail is dropped)."""
    per_block = len(samples) // blocks
    return np.asarray(samples[: blocks * per_block], dtype=np.float64).reshape(blocks, per_block)


def interrupted_share(samples: np.ndarray) -> float:
    """Share of samples over INTERRUPTED_FACTOR x the run's p10: how much the machine interfered."""
    return float(np.mean(samples > INTERRUPTED_FACTOR * np.percentile(samples, 10)))


def block_log_quantiles(samples: np.ndarray, blocks: int, quantile: float) -> np.ndarray:
    return np.log(np.percentile(split_blocks(samples, blocks), quantile, axis=1))


def _t_quantile(p: float, dof: float) -> float:
    # lazy: scipy.stats takes ~0.9 s to import and only the gate's statistics use it
    from scipy.stats import t as student_t

    return float(student_t.ppf(p, dof))


def _run_spread(log_blocks: np.ndarray, per_process: Sequence[float] | None) -> tuple[float, int, bool]:
    """(spread of log(quantile), its degrees of freedom, whether it includes the spread between processes)."""
    spread, dof = float(np.std(log_blocks, ddof=1)), len(log_blocks) - 1
    if per_process is None or len(per_process) < 2:
        return spread, dof, False
    between = float(np.std(np.log(np.asarray(per_process, dtype=np.float64)), ddof=1))
    return (between, len(per_process) - 1, True) if between > spread else (spread, dof, True)


def compare_quantile(baseline: np.ndarray, baseline_blocks: int, current: np.ndarray, current_blocks: int,
                     quantile: float, processes: tuple[Sequence[float] | None, Sequence[float] | None] = (None, None),
                     ) -> QuantileComparison:
    """Compare one quantile of two runs' timings (each with >= MIN_BLOCKS blocks; see the module docstring).

    ``processes``: this quantile in each process the runner measured the (baseline, current) run in, if it did."""
    if min(baseline_blocks, current_blocks) < MIN_BLOCKS:
        raise ValueError(f"need at least {MIN_BLOCKS} timing blocks per run")
    base_point = float(np.percentile(baseline, quantile))
    cur_point = float(np.percentile(current, quantile))
    log_ratio = math.log(cur_point / base_point)
    log_b = block_log_quantiles(baseline, baseline_blocks, quantile)
    log_c = block_log_quantiles(current, current_blocks, quantile)
    (s_b, dof_b, proc_b), (s_c, dof_c, proc_c) = _run_spread(log_b, processes[0]), _run_spread(log_c, processes[1])
    var = s_b**2 + s_c**2
    if var > 0:
        dof = var**2 / (s_b**4 / dof_b + s_c**4 / dof_c)
        half = _t_quantile(1.0 - ALPHA_ONE_SIDED, dof) * math.sqrt(var)
    else:
        half = 0.0
    return QuantileComparison(
        quantile=quantile, baseline=base_point, current=cur_point, ratio=math.exp(log_ratio),
        ratio_interval=(math.exp(log_ratio - half), math.exp(log_ratio + half)),
        mdr_pct=100.0 * math.expm1(half), spread_pct=(100.0 * math.expm1(s_b), 100.0 * math.expm1(s_c)),
        interrupted=(interrupted_share(baseline), interrupted_share(current)),
        block_range=((math.exp(log_b.min()), math.exp(log_b.max())), (math.exp(log_c.min()), math.exp(log_c.max()))),
        between_processes=proc_b and proc_c)


@dataclass(frozen=True)
class InterleavedComparison(LatencyRatio):
    """The candidate against the baseline artifact timed interleaved in the same job: ``ratio`` is the geometric
    mean of the per-process ratios, its interval Student-t over the processes; baseline and current are the
    quantile over every process's samples (ms)."""

    process_ratios: tuple[float, ...] = ()


def compare_interleaved(processes: Sequence[tuple[np.ndarray, np.ndarray]], quantile: float) -> InterleavedComparison:
    """``processes``: per fresh process, the (baseline, current) samples timed interleaved in it (>= MIN_PROCESSES)."""
    # lazy: scipy.stats takes ~0.9 s to import and only the gate's statistics use it
    from scipy.stats import ttest_1samp

    if len(processes) < MIN_PROCESSES:
        raise ValueError(f"need at least {MIN_PROCESSES} processes")
    logs = np.log([np.percentile(c, quantile) / np.percentile(b, quantile) for b, c in processes])
    mean = float(logs.mean())
    low = high = mean
    if np.ptp(logs) > 0:
        interval = ttest_1samp(logs, 0.0).confidence_interval(CONFIDENCE)
        low, high = float(interval.low), float(interval.high)
    base_all = np.concatenate([np.asarray(b, dtype=np.float64) for b, _ in processes])
    cur_all = np.concatenate([np.asarray(c, dtype=np.float64) for _, c in processes])
    return InterleavedComparison(
        quantile=quantile, baseline=float(np.percentile(base_all, quantile)),
        current=float(np.percentile(cur_all, quantile)), ratio=math.exp(mean),
        ratio_interval=(math.exp(low), math.exp(high)), mdr_pct=100.0 * math.expm1((high - low) / 2.0),
        process_ratios=tuple(float(v) for v in np.exp(logs)),
        interrupted=(interrupted_share(base_all), interrupted_share(cur_all)))


# ============================================================================================ accuracy
@dataclass(frozen=True)
class PairedAccuracy:
    """Exact McNemar on per-sample correctness of the same inputs."""

    n: int  # paired samples
    b: int  # right in the baseline, wrong now
    c: int  # wrong in the baseline, right now
    p_value: float  # one-sided: P(X >= b), X ~ Binomial(b + c, 1/2)
    baseline_accuracy: float
    current_accuracy: float

    @property
    def drop(self) -> float:
        return (self.b - self.c) / self.n if self.n else 0.0


def binomial_tail(successes: int, trials: int) -> float:
    """P(X >= successes) for X ~ Binomial(trials, 1/2), exactly (integer arithmetic, then one division)."""
    if successes <= 0:
        return 1.0
    if successes > trials:
        return 0.0
    return sum(math.comb(trials, k) for k in range(successes, trials + 1)) / 2**trials


def median_interval(values: list[float], confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Distribution-free interval for the median: the sign test's binomial interval (``scipy.stats.quantile_test``);
    the whole range when there are too few values for one (fewer than 6 at 95 %)."""
    # lazy: scipy.stats takes ~0.9 s to import and only the gate's statistics use it
    from scipy.stats import quantile_test

    x = np.asarray(values, dtype=np.float64)
    interval = quantile_test(x, q=float(np.median(x)), p=0.5).confidence_interval(confidence)
    if math.isnan(interval.low) or math.isnan(interval.high):
        return float(x.min()), float(x.max())
    return float(interval.low), float(interval.high)


def mcnemar_exact(labels: np.ndarray, baseline_pred: np.ndarray, current_pred: np.ndarray) -> PairedAccuracy:
    """Paired comparison of two models' predictions on the same labelled inputs."""
    labels, baseline_pred, current_pred = (np.asarray(a).ravel() for a in (labels, baseline_pred, current_pred))
    if not len(labels) == len(baseline_pred) == len(current_pred):
        raise ValueError("labels and both prediction lists must have one entry per sample")
    was_right, is_right = baseline_pred == labels, current_pred == labels
    b = int(np.sum(was_right & ~is_right))
    c = int(np.sum(~was_right & is_right))
    n = int(len(labels))
    return PairedAccuracy(n, b, c, binomial_tail(b, b + c), float(was_right.mean()) if n else 0.0,
                          float(is_right.mean()) if n else 0.0)


def unpaired_drop_noise(before: float, after: float, n: int) -> float:
    """95 % half-width of the difference of two independent proportions on n samples each (the unpaired fallback)."""
    return 1.96 * math.sqrt((before * (1 - before) + after * (1 - after)) / n)
