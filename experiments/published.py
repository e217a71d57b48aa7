"""The paper's published results as data: `paper_results.json`, read into `Published` rows.

Apostol, Stol & Forré (2020), "FlipOut: Uncovering Redundant Weights via Sign Flipping", reported
more than the seed README's three tables: its figures plot every method at every sparsity of the
ladder, the unpruned networks, and a noise ablation. The authors' results files hold every number
of them; `paper_results.json` copies those numbers digit for digit and names, for each, the file
and the commit of the authors' repository it was read at (its `sources`). The numbers are facts:
never edit one except to correct a copying mistake against its source. `seed_tables` keeps the
seed README's tables as printed, and a test checks them against the rows.

A row is one published mean: a network, a method (criterion and gradient noise on or off; for
Hoyer-Square its λ), a sparsity, and mean ± sample std over `n` runs, in percent. The sweeps
(experiments/sweeps.py) turn each row into the command that makes it; the report
(experiments/paper.py) puts runs beside it.

The files do not print n, and the authors' "averaged over 3 runs" does not hold for every row:
their script took every run in the folder. `derive_n` finds it from the numbers themselves. An
accuracy is a count of correct test images over N (TEST_IMAGES), logged as a 32-bit float, so n
runs have a whole total: mean * n * N / 100 must be a whole number, within the rounding of the
digits the source prints (its `decimals`). Where it is, the runs are reconstructed: integer
counts with that total whose mean and sample std, computed as the authors' pandas did from the
logged floats, print as the file prints them. A row's n is the authors' 3 where 3 runs reproduce
its mean and std (as where every n fits, such as a spread of 0 or four-decimal numbers), else the
fewest runs from 2 to 10 that do; `n_how` says which, and a test recomputes every row's.
"""

import functools
import json
import math
import statistics
import struct
from dataclasses import dataclass
from pathlib import Path

RESULTS_FILE = Path(__file__).with_name("paper_results.json")
# what an accuracy is a count of: CIFAR-10's test set, Imagenette's validation set (its test set)
TEST_IMAGES = {"cifar10": 10_000, "imagenette": 3_925}
STATED_N = 3  # the authors' README: "averaged over 3 runs"
RUNS_TRIED = range(2, 11)
# counts a reconstruction visits before it gives up undecided (the rows' own need up to 90,000)
SEARCH_BUDGET = 1_000_000
# the kinds of row (`figure`): the accuracy-vs-sparsity figure, the noise ablation's other arm,
# the unpruned networks (the figure's horizontal line) and the seed tables' Hoyer-Square rows
FIGURES = ("sparsity", "noise", "unpruned", "table")


@dataclass(frozen=True)
class Published:
    """One published mean: test accuracy in percent over `n` runs."""

    model: str
    dataset: str
    figure: str  # one of FIGURES
    method: str  # the paper's name for it
    criterion: str  # main.py's --prune_criterion
    noise: bool  # --noise (at scale 1)
    sparsity: float  # percent: the ladder's exact level; for Hoyer-Square the sparsity reached
    mean: float
    std: float | None  # sample std; None where none was published
    n: int  # runs: derive_n's
    n_how: str  # how n was found: derive_n's words
    source: str  # a key of PaperResults.sources
    hoyer_lambda: float | None = None  # Hoyer-Square's λ (--hoyer_lambda); None for the others
    published_sparsity: str | None = None  # the sparsity as the source prints it
    authors_name: str | None = None  # the method's name in the authors' results file
    n_note: str | None = None  # where n is not the authors' 3: why that may be

    @property
    def hoyer_square(self) -> bool:
        return self.hoyer_lambda is not None

    def options(self) -> dict:
        """The options that name its method, as a run's summary.json records them."""
        options = {"noise": self.noise, "add_hs": self.hoyer_square}
        if self.hoyer_square:
            options["hoyer_lambda"] = self.hoyer_lambda
        return options


@dataclass(frozen=True)
class Source:
    repository: str
    path: str
    commit: str
    what: str
    decimals: int  # the decimals of a percent its numbers carry (0.900191 is 90.0191: 4)

    def cite(self) -> str:
        return f"{self.repository} {self.path} @ {self.commit[:7]}"


@dataclass(frozen=True)
class PaperResults:
    rows: tuple[Published, ...]
    sources: dict[str, Source]
    seed_tables: tuple[dict, ...]  # the seed README's rows, every value as printed

    @property
    def networks(self) -> dict[str, str]:
        """model -> dataset, in the paper's order."""
        return {row.model: row.dataset for row in self.rows}

    def of(self, model: str) -> list[Published]:
        return [row for row in self.rows if row.model == model]


@functools.cache
def load(path: Path = RESULTS_FILE) -> PaperResults:
    record = json.loads(Path(path).read_text(encoding="utf-8"))
    return PaperResults(
        rows=tuple(Published(**row) for row in record["rows"]),
        sources={key: Source(**value) for key, value in record["sources"].items()},
        seed_tables=tuple(record["seed_tables"]),
    )


# -- how many runs: the module's derivation -----------------------------------------------------


def logged(count: int, images: int) -> float:
    """The accuracy of `count` correct images of `images`, in percent, as TensorBoard logged it:
    a 32-bit float."""
    return 100 * struct.unpack("f", struct.pack("f", count / images))[0]


def printed_alike(value: float, printed: float, decimals: int) -> bool:
    """Whether `value` prints as `printed` with `decimals` decimals."""
    return abs(value - printed) <= 0.5 * 10**-decimals * (1 + 1e-9)


def whole_total(mean: float, n: int, images: int, decimals: int) -> int | None:
    """The total of correct images that n runs with this printed mean have, or None where no
    whole number fits the mean's rounding (and a float's, a few millionths of an image)."""
    exact = mean * n * images / 100
    total = round(exact)
    slack = 0.5 * 10**-decimals * n * images / 100 + n * images * 2**-24
    return total if abs(exact - total) <= slack else None


def runs_of(mean: float, std: float, n: int, images: int, decimals: int) -> tuple | None:
    """Counts of correct images of n runs that print as `mean` ± `std`, or None where there are
    none; SearchTooLarge past SEARCH_BUDGET counts visited."""
    total = whole_total(mean, n, images, decimals)
    if total is None:
        return None
    # n·Σx² - total² = n(n-1)·s² (s in images), s anywhere within the printed std's rounding
    half = 0.5 * 10**-decimals * images / 100 + 2 * images * 2**-24
    spread = std * images / 100
    lowest = math.floor(n * (n - 1) * max(spread - half, 0) ** 2)
    highest = math.ceil(n * (n - 1) * (spread + half) ** 2)
    reach = math.sqrt(highest * (n - 1)) / n  # no run lies further from the mean
    low, high = max(0, math.floor(total / n - reach)), min(images, math.ceil(total / n + reach))
    search = Search(n, range(lowest + total**2, highest + total**2 + 1), high)
    for counts in search.counts(n, total, low, 0, ()):
        runs = [logged(count, images) for count in counts]
        mean_of, std_of = statistics.fmean(runs), statistics.stdev(runs)
        if printed_alike(mean_of, mean, decimals) and printed_alike(std_of, std, decimals):
            return counts
    return None


class SearchTooLarge(Exception):
    """More candidate runs than SEARCH_BUDGET: whether any prints alike is left undecided."""


def reproduced(mean: float, std: float, n: int, images: int, decimals: int) -> bool | None:
    """Whether n runs can print as `mean` ± `std`; None where the search was too large."""
    try:
        return runs_of(mean, std, n, images, decimals) is not None
    except SearchTooLarge:
        return None


@dataclass
class Search:
    """Nondecreasing counts of n runs, each at most `high`, with a sum and with n·Σx² in
    `squares`; a depth-first search cut where the rest cannot reach `squares`."""

    n: int
    squares: range
    high: int
    visited: int = 0

    def counts(self, left: int, rest: int, low: int, so_far: int, chosen: tuple):
        if left == 1:
            if low <= rest <= self.high and self.n * (so_far + rest * rest) in self.squares:
                yield (*chosen, rest)
            return
        for count in range(low, rest // left + 1):
            self.visited += 1
            if self.visited > SEARCH_BUDGET:
                raise SearchTooLarge
            others = rest - count
            if others > (left - 1) * self.high:
                continue
            if (
                self.n * self.most(left - 1, others, count, so_far + count * count)
                < self.squares.start
            ):
                break  # the rest can only get closer together from here
            if self.n * self.least(left - 1, others, so_far + count * count) >= self.squares.stop:
                continue
            yield from self.counts(
                left - 1, others, count, so_far + count * count, (*chosen, count)
            )

    @staticmethod
    def least(left: int, rest: int, so_far: int) -> int:
        """Σx² of `left` counts summing to `rest` at their closest together."""
        each, more = divmod(rest, left)
        return so_far + (left - more) * each * each + more * (each + 1) ** 2

    @staticmethod
    def most(left: int, rest: int, low: int, so_far: int) -> int:
        """Σx² of `left` counts of at least `low` summing to `rest` at their furthest apart."""
        return so_far + (left - 1) * low * low + (rest - (left - 1) * low) ** 2


def derive_n(mean: float, std: float | None, images: int, decimals: int) -> tuple[int, str]:
    """(n, how it was found) for a published row (the module's derivation)."""
    if std is None:
        return 1, "stated: 1 run, no spread published"
    fitting = [n for n in RUNS_TRIED if whole_total(mean, n, images, decimals) is not None]
    stated = reproduced(mean, std, STATED_N, images, decimals)
    if stated:
        every = "; every n from 2 to 10 fits the mean" if len(fitting) == len(RUNS_TRIED) else ""
        return STATED_N, f"stated: {STATED_N} fits mean and std{every}"
    if stated is None:  # 3 fits the mean and is not shown wrong: the authors' word stands
        return STATED_N, f"stated: {STATED_N} fits the mean; too many runs fit it to check the std"
    how_stated = "the mean but not the std" if STATED_N in fitting else "neither"
    for n in fitting:
        if n != STATED_N and reproduced(mean, std, n, images, decimals):
            return n, f"derived: {n} runs reproduce mean and std; {STATED_N} fits {how_stated}"
    return STATED_N, f"stated: {STATED_N}, though no n from 2 to 10 reproduces mean and std"
