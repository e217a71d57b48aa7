"""The statistics of the report beside the paper (experiments/paper.py): whether our mean and a
published one differ, are shown to be close, or cannot be told apart with the runs at hand.

Δ = ours - paper, each side a mean over n runs with a sample std. The rule, in full:

- Spreads. Each side's spread is max(its sample std, the network's floor), the floor being the
  median of the nonzero stds the paper published for that network, and never less than one test
  image (100/N points): three runs estimate a std poorly (a std of 0 or 0.064 is as likely the
  luck of three draws as a network that never varies), so no row may claim less spread than the
  network's typical row. A side without a spread of its own (one run; a row published without
  ±) borrows the other side's floored spread and its degrees of freedom; with neither, both
  count as the floor, taken as known.
- Difference. Welch's t-test: t = Δ / se, se² = sp²/np + so²/no, with the Welch-Satterthwaite
  degrees of freedom (the lender's where one side borrowed, since both terms then share one
  estimate). *above* or *below* when the two-sided p < ALPHA.
- Equivalence. Two one-sided tests at ALPHA: the 90% confidence interval of Δ lies inside
  (-margin, +margin). Then *replicated*.
- Otherwise *inconclusive*, with the runs of ours that would decide it, at the observed Δ and
  spreads: more runs can only be ours, the published ones are done, so the paper's side stays
  as it is. Past SEEDS_CAP the answer is "more than SEEDS_CAP".
- A side with one run (its spread borrowed) is *above* or *below* only when the 95% interval of
  Δ lies wholly beyond the margin, and *replicated* only when the 90% interval lies wholly
  within it: the margin alone then decides, not an assumed spread.

The functions take numpy arrays as well as numbers, so that a test can judge thousands of
simulated rows at once with the code the report runs. Student's t is scipy.special's `stdtr`
and `stdtrit`, the functions behind scipy.stats.t, without scipy.stats' import time.
"""

import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from scipy.special import stdtr, stdtrit

ALPHA = 0.05
EQUIVALENCE_MARGIN = 1.0  # accuracy points: |Δ| within it, shown, is a replication
SEEDS_CAP = 20  # runs of ours past which "would decide it" is only "more than SEEDS_CAP"
REPLICATED, ABOVE, BELOW, INCONCLUSIVE = "replicated", "above", "below", "inconclusive"


def spread_floor(published_stds: Iterable[float | None], test_images: int) -> float:
    """The least spread a side may have, in points: the median of the nonzero published stds of
    one network's rows, and never below what one of its `test_images` is worth."""
    nonzero = [std for std in published_stds if std]
    one_image = 100 / test_images
    return max(statistics.median(nonzero), one_image) if nonzero else one_image


@dataclass(frozen=True)
class Test:
    """Welch's test of Δ and its intervals; every field a number or an array of them."""

    delta: np.ndarray
    se: np.ndarray  # standard error of Δ
    df: np.ndarray  # degrees of freedom; inf where every spread is the floor

    @property
    def p_value(self) -> np.ndarray:
        """Two-sided p of Δ = 0."""
        return 2 * stdtr(self.df, -np.abs(self.delta) / self.se)

    def interval(self, level: float) -> tuple[np.ndarray, np.ndarray]:
        """The two-sided `level` confidence interval of Δ."""
        half = stdtrit(self.df, 0.5 + level / 2) * self.se
        return self.delta - half, self.delta + half

    def verdict(self, margin: float, estimated=True) -> np.ndarray:
        """REPLICATED, ABOVE, BELOW or INCONCLUSIVE (the module's rule); `estimated`: whether
        both sides' spreads are their own (False where one side has one run)."""
        low, high = self.interval(1 - 2 * ALPHA)  # the two one-sided tests at ALPHA
        equivalent = (low > -margin) & (high < margin)
        wide_low, wide_high = self.interval(1 - ALPHA)
        beyond = (wide_low > margin) | (wide_high < -margin)
        differs = np.where(estimated, self.p_value < ALPHA, beyond)
        return np.where(
            differs,
            np.where(self.delta > 0, ABOVE, BELOW),
            np.where(equivalent, REPLICATED, INCONCLUSIVE),
        )


def welch(delta, paper_spread, paper_n, our_spread, our_n) -> Test:
    """Welch's test of Δ from both sides' own spreads (each side n >= 2)."""
    paper_term = np.square(paper_spread) / paper_n
    our_term = np.square(our_spread) / our_n
    total = paper_term + our_term
    with np.errstate(divide="ignore", invalid="ignore"):
        df = total**2 / (paper_term**2 / (paper_n - 1) + our_term**2 / (our_n - 1))
    return Test(np.asarray(delta, float), np.sqrt(total), np.asarray(df, float))


def floored_test(delta, paper_std, paper_n, our_std, our_n, floor) -> Test:
    """Welch's test with each side's spread raised to `floor` (both sides n >= 2)."""
    return welch(delta, np.maximum(paper_std, floor), paper_n, np.maximum(our_std, floor), our_n)


@dataclass(frozen=True)
class Side:
    """One side of a comparison: the mean of n runs and their sample std (None: not known)."""

    mean: float
    std: float | None
    n: int

    @property
    def has_spread(self) -> bool:
        return self.std is not None and self.n > 1


@dataclass(frozen=True)
class Judgement:
    """The verdict on one row and the numbers it rests on."""

    delta: float
    ci_low: float  # the 95% confidence interval of Δ
    ci_high: float
    p_value: float  # Welch's, two-sided
    verdict: str  # REPLICATED, ABOVE, BELOW or INCONCLUSIVE
    paper_spread: float  # the spreads the test used: floored, or borrowed
    our_spread: float
    borrowed: bool  # a side had one run, or no published spread, and took the other's
    seeds: int | None = None  # inconclusive: our runs that would decide it; None: > SEEDS_CAP

    @property
    def note(self) -> str:
        """What the verdict's cell adds to the verdict: "n=1: spread borrowed", and for an
        inconclusive row the runs of ours that would decide it ("needs 6 runs of ours")."""
        parts = ["n=1: spread borrowed"] if self.borrowed else []
        if self.verdict == INCONCLUSIVE:
            seeds = f"more than {SEEDS_CAP}" if self.seeds is None else str(self.seeds)
            parts.append(f"needs {seeds} runs of ours")
        return "; ".join(parts)

    @property
    def seeds_text(self) -> str:
        """The runs that would decide an inconclusive row, for a CSV cell; empty otherwise."""
        if self.verdict != INCONCLUSIVE:
            return ""
        return f">{SEEDS_CAP}" if self.seeds is None else str(self.seeds)


def spreads(paper: Side, ours: Side, floor: float) -> tuple[float, float, float, float]:
    """(paper spread, its degrees of freedom, our spread, its degrees of freedom) under the
    module's rule: floored, or borrowed from the other side, or the floor taken as known."""
    paper_spread = max(paper.std, floor) if paper.has_spread else None
    our_spread = max(ours.std, floor) if ours.has_spread else None
    paper_df, our_df = paper.n - 1.0, ours.n - 1.0
    if paper_spread is None and our_spread is None:
        return floor, math.inf, floor, math.inf
    if paper_spread is None:
        paper_spread, paper_df = our_spread, our_df
    if our_spread is None:
        our_spread, our_df = paper_spread, paper_df
    return paper_spread, paper_df, our_spread, our_df


def borrowed_test(delta, spread, df, paper_n, our_n) -> Test:
    """Δ's test where one side borrowed the other's spread: se from the one spread, and its
    degrees of freedom."""
    se = spread * np.sqrt(1 / paper_n + 1 / np.asarray(our_n, float))
    return Test(np.asarray(delta, float), se, np.broadcast_to(np.asarray(df, float), se.shape))


def judge(paper: Side, ours: Side, floor: float, margin: float = EQUIVALENCE_MARGIN) -> Judgement:
    """The verdict on our runs beside a published row (the module's rule)."""
    if not floor > 0 or not margin > 0:
        raise ValueError(f"floor and margin must be positive, got {floor} and {margin}")
    delta = ours.mean - paper.mean
    paper_spread, _, our_spread, our_df = spreads(paper, ours, floor)
    estimated = paper.has_spread and ours.has_spread
    if estimated:
        test = floored_test(delta, paper.std, paper.n, ours.std, ours.n, floor)
    else:  # one spread, on both sides (spreads()), and its degrees of freedom
        test = borrowed_test(delta, our_spread, our_df, paper.n, ours.n)
    verdict = str(test.verdict(margin, estimated))
    low, high = test.interval(1 - ALPHA)
    seeds = None
    if verdict == INCONCLUSIVE:
        seeds = seeds_to_decide(delta, paper, paper_spread, our_spread, ours.n, margin)
    return Judgement(
        delta=delta, ci_low=float(low), ci_high=float(high), p_value=float(test.p_value),
        verdict=verdict, paper_spread=paper_spread, our_spread=our_spread,
        borrowed=not estimated, seeds=seeds,
    )  # fmt: skip


def seeds_to_decide(
    delta: float, paper: Side, paper_spread: float, our_spread: float, our_n: int, margin: float
) -> int | None:
    """The fewest runs of ours, more than `our_n`, with which the row would no longer be
    inconclusive at the same Δ and spreads; None past SEEDS_CAP. (Not every larger number
    decides too: as our side grows, Welch's degrees of freedom fall toward the paper's n - 1.)"""
    seeds = np.arange(max(our_n + 1, 2), SEEDS_CAP + 1)
    if not seeds.size:
        return None
    if paper.has_spread:
        test = welch(delta, paper_spread, paper.n, our_spread, seeds)
    else:  # the published side keeps borrowing ours, now estimated from `seeds` runs
        test = borrowed_test(delta, our_spread, seeds - 1.0, paper.n, seeds)
    decided = test.verdict(margin, paper.has_spread) != INCONCLUSIVE
    return int(seeds[decided][0]) if decided.any() else None
