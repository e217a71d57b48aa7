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
"""

import functools
import json
from dataclasses import dataclass
from pathlib import Path

RESULTS_FILE = Path(__file__).with_name("paper_results.json")
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
    n: int
    source: str  # a key of PaperResults.sources
    hoyer_lambda: float | None = None  # Hoyer-Square's λ (--hoyer_lambda); None for the others
    published_sparsity: str | None = None  # the sparsity as the source prints it
    authors_name: str | None = None  # the method's name in the authors' results file

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
