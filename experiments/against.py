"""Each row of the report set beside a baseline method's row (`report --against METHOD`): on the
same network and data, trained alike (the same training recipe, the method's options aside), at
the same sparsity level, the difference of the two mean accuracies and
Welch's two-sided t-test of it (unequal variances, the Welch-Satterthwaite degrees of freedom;
experiments/verdict.py). No spread is floored or borrowed here: both rows need two runs or more,
and a row without a counterpart, or with several (the baseline split by recipe), is left without
a test, saying why."""

from dataclasses import dataclass

from experiments.rows import Row

SAME_LEVEL = 0.05  # sparsity points: rows this close are of one level (counts round per layer)


@dataclass(frozen=True)
class Against:
    delta: float | None = None  # this row's mean minus the baseline's, in accuracy points
    p: float | None = None  # Welch's two-sided p of delta = 0
    df: float | None = None
    why_not: str = ""  # why there is no test

    def cell(self) -> str:
        if self.delta is None:
            return f"— ({self.why_not})"
        if self.p is None:
            return f"{self.delta:+.2f} ({self.why_not})"
        return f"{self.delta:+.2f}, p={self.p:.3g}"


def methods(rows: list[Row]) -> list[str]:
    return sorted({row.method for row in rows})


def compare(rows: list[Row], baseline: str) -> dict[int, Against]:
    """id(row) -> its comparison with `baseline`'s row, for every row not itself the baseline's."""
    from experiments.verdict import welch  # scipy, only where asked for

    results = {}
    for row in rows:
        if row.method == baseline:
            continue
        same = [
            other
            for other in rows
            if other.method == baseline
            and (other.model, other.dataset, other.training)
            == (row.model, row.dataset, row.training)
            and abs(other.sparsity_mean - row.sparsity_mean) <= SAME_LEVEL
        ]
        if not same:
            results[id(row)] = Against(why_not="no baseline row of its training at this sparsity")
        elif len(same) > 1:
            results[id(row)] = Against(why_not=f"{len(same)} baseline rows at this sparsity")
        elif row.n < 2 or same[0].n < 2:
            results[id(row)] = Against(why_not="a row of one run has no spread")
        else:
            base = same[0]
            delta = row.accuracy_mean - base.accuracy_mean
            test = welch(delta, base.accuracy_std, base.n, row.accuracy_std, row.n)
            if not test.se > 0:
                results[id(row)] = Against(delta, why_not="no spread on either side")
                continue
            results[id(row)] = Against(delta, float(test.p_value), float(test.df))
    return results
