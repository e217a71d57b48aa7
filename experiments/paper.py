"""The report beside the paper: `python -m experiments.report DIR --paper` sets the runs below DIR
beside the numbers Apostol, Stol & Forré (2020) published (experiments/published.py), row by row,
with a verdict for each. docs/replication.md ("Beside the paper") shows what a reader gets.

Matching. A completed run goes beside the published row of its network, its method (criterion,
gradient noise on or off; for Hoyer-Square the same λ) and its final sparsity, within the report's
SPARSITY_TOLERANCE (Hoyer-Square's sparsity follows from its λ: shown beside the row's, not
matched). Its recipe is compared with the row's own command (experiments/sweeps.py,
`published_command`) on every option of its identity (record.py) but the seed and the NEUTRAL
ones: a run of another recipe is shown under "recipe differs", with what differs, and is never
called a replication. Runs of no published row are listed as such; a row without a run of the
paper's recipe is *not run*.

Verdict: experiments/verdict.py has the rule. Only the accuracy after the last epoch compares
(`--metric final`): the authors' numbers are each run's last logged test accuracy.
"""

import functools
import math
from collections import defaultdict
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from experiments import published
from experiments.plots import Curve, Level, Panel
from experiments.published import TEST_IMAGES, Published
from experiments.rows import (
    SPARSITY_TOLERANCE,
    Row,
    group_runs,
    level_row,
    mean_std,
    option,
    table_head,
    table_line,
    write_dicts_csv,
)
from experiments.runs import resolve
from experiments.sweeps import published_command
from experiments.values import finite_number
from experiments.verdict import (
    ALPHA,
    EQUIVALENCE_MARGIN,
    INCONCLUSIVE,
    Judgement,
    Side,
    judge,
    spread_floor,
)
from pruning.mask import percent
from pruning.registry import is_hoyer_square, method_label, published_noise
from record import Role, identity_defaults, keys_with

# options that set the sparsity a row is matched on: compared through the sparsity itself (the
# seed README gives SNIP 0.999 for 99.9%, the authors' figure runs 0.9990234375)
SPARSITY_OPTIONS = {"snip": {"snip_sparsity", "init_sparsity"}}
VERDICTS = ("replicated", "above", "below", INCONCLUSIVE, "recipe differs", "not run")
# the published sparsity the paper's claims compare at: the ladder's last level
CLAIM_SPARSITY = 99.90234375


@dataclass(frozen=True)
class Differing:
    """Runs beside a published row, of another recipe: what differs, and their Row."""

    row: Row
    differences: tuple[str, ...]


@dataclass(frozen=True)
class Comparison:
    """One published row and what this directory holds of it."""

    published: Published
    ours: Row | None  # the runs of the paper's recipe; None when there are none
    others: tuple[Differing, ...] = ()  # runs of other recipes beside it
    floor: float = 0.0  # the least spread of either side, in points (network_floors)
    margin: float = EQUIVALENCE_MARGIN  # |Δ| shown within it is a replication

    @functools.cached_property
    def judgement(self) -> Judgement | None:
        """The test of our runs beside the row (experiments/verdict.py); None when not run."""
        if self.ours is None:
            return None
        row, ours = self.published, self.ours
        paper_side = Side(row.mean, row.std, row.n)
        our_side = Side(ours.accuracy_mean, ours.accuracy_std, ours.n)
        return judge(paper_side, our_side, self.floor, self.margin)

    @property
    def delta(self) -> float | None:
        return None if self.judgement is None else self.judgement.delta

    @property
    def verdict(self) -> str:
        if self.judgement is None:
            return "recipe differs" if self.others else "not run"
        return self.judgement.verdict

    @property
    def verdict_cell(self) -> str:
        """The verdict with what it rests on where that is not the plain rule."""
        note = self.judgement.note if self.judgement else ""
        return f"{self.verdict} ({note})" if note else self.verdict


@dataclass
class Beside:
    """Every published row of the networks run here, and the runs beside none."""

    comparisons: list[Comparison]
    unmatched: list[Row]
    not_shown: dict[str, int] = field(default_factory=dict)  # "model on dataset" -> rows
    margin: float = EQUIVALENCE_MARGIN
    floors: dict[str, float] = field(default_factory=dict)  # model -> its spread floor, shown


def network_floors(results) -> dict[str, float]:
    """model -> the least spread of a side beside its rows (experiments/verdict.py)."""
    return {
        model: spread_floor([row.std for row in results.of(model)], TEST_IMAGES[dataset])
        for model, dataset in results.networks.items()
    }


# -- matching ---------------------------------------------------------------------------------


def noise_of(summary: dict) -> bool:
    """Whether the run added gradient noise; where its summary does not say, what its label
    means: FlipOut with noise, the others without."""
    noise = option(summary, "noise")
    return published_noise(summary["prune_criterion"]) if noise is None else bool(noise)


def same_method(summary: dict, row: Published) -> bool:
    if summary["model"] != row.model or summary["prune_criterion"] != row.criterion:
        return False
    hoyer_square = is_hoyer_square(summary["prune_criterion"], summary.get("options") or {})
    if hoyer_square != row.hoyer_square or option(summary, "nm"):
        return False
    if row.hoyer_square:
        strength = option(summary, "hoyer_lambda")
        return finite_number(strength) and math.isclose(strength, row.hoyer_lambda)
    return noise_of(summary) == row.noise


def published_row(summary: dict, rows: tuple[Published, ...]) -> Published | None:
    """The published row the run stands beside, or None."""
    sparsity = 100 * summary["final_sparsity"]
    for row in rows:
        if not same_method(summary, row):
            continue
        if row.hoyer_square or abs(sparsity - row.sparsity) <= 100 * SPARSITY_TOLERANCE:
            return row
    return None


@functools.cache
def paper_options(row: Published) -> dict:
    """The options of the row's own command, resolved by main.py's parser."""
    return resolve(published_command(row, 0, "paper"), Path("runs")).options


def shown_value(value) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, list):
        return " ".join(map(shown_value, value)) or "none"
    if value is None:
        return "none"
    return f"{value:g}" if isinstance(value, float) else str(value)


def recipe_differences(summary: dict, row: Published) -> tuple[str, ...]:
    """What differs between the run's recipe and the row's ("epochs 2, not 350"); empty when
    it is the paper's."""
    options = summary.get("options")
    if not isinstance(options, dict) or not options:
        return ("its summary.json records no options",)
    theirs = paper_options(row)
    skipped = {*keys_with(Role.NEUTRAL), *SPARSITY_OPTIONS.get(row.criterion, set())}
    found = []
    for key, default in identity_defaults().items():
        ours, paper = options.get(key, default), theirs.get(key, default)
        if key not in skipped and shown_value(ours) != shown_value(paper):
            found.append(f"{key} {shown_value(ours)}, not {shown_value(paper)}")
    return tuple(found)


def compare(summaries, metric: str = "final", margin=None, results=None) -> Beside:
    """Every completed run set beside its published row (the module's matching), grouped into
    one Row per published row and recipe; every published row of the networks that have runs
    beside some row, whether run or not, judged with the equivalence `margin` (points;
    EQUIVALENCE_MARGIN when None)."""
    results = results or published.load()
    margin = EQUIVALENCE_MARGIN if margin is None else margin
    floors = network_floors(results)
    same_recipe, other_recipe, unmatched = defaultdict(list), defaultdict(list), []
    for summary in summaries:
        if summary["status"] != "completed":
            continue
        row = published_row(summary, results.rows)
        if row is None:
            unmatched.append(summary)
            continue
        differences = recipe_differences(summary, row)
        if differences:
            other_recipe[row].append((differences, summary))
        else:
            same_recipe[row].append(summary)
    shown = {row.model for row in [*same_recipe, *other_recipe]}
    comparisons = []
    for row in results.rows:
        if row.model not in shown:
            continue
        ours = level_row(same_recipe[row], metric) if same_recipe[row] else None
        others = differing(other_recipe[row], metric)
        comparisons.append(Comparison(row, ours, others, floors[row.model], margin))
    not_shown = defaultdict(int)
    for row in results.rows:
        if row.model not in shown:
            not_shown[f"{row.model} on {row.dataset}"] += 1
    shown_floors = {model: floor for model, floor in floors.items() if model in shown}
    return Beside(comparisons, group_runs(unmatched, metric), dict(not_shown), margin, shown_floors)


def differing(runs: list[tuple[tuple[str, ...], dict]], metric: str) -> tuple[Differing, ...]:
    """Runs of other recipes beside one row, a Row for each recipe (and dataset)."""
    by_recipe = defaultdict(list)
    for differences, summary in runs:
        by_recipe[(summary["dataset"], differences)].append(summary)
    return tuple(
        Differing(level_row(level, metric), differences)
        for (_, differences), level in sorted(by_recipe.items())
    )


# -- the tables -------------------------------------------------------------------------------


def row_label(row: Published) -> str:
    """The published row's method as the report labels a run of it."""
    return method_label(row.criterion, row.options())


def sparsity_cell(comparison: Comparison) -> str:
    row, ours = comparison.published, comparison.ours
    text = percent(row.sparsity / 100, sign="")
    if row.hoyer_square and ours is not None:
        text += f" (ours {percent(ours.sparsity_mean / 100, sign='')})"
    return text


def p_cell(p_value: float) -> str:
    return "<0.001" if p_value < 0.001 else f"{p_value:.3f}"


def comparison_table(comparisons: list[Comparison]) -> str:
    row = comparisons[0].published
    header = ["Method", "Sparsity (%)", "Paper (%)", "Ours (%)", "Δ", "95% CI", "p", "Verdict"]
    lines = [f"### {row.model} on {row.dataset}, beside the paper", "", *table_head(header)]
    for comparison in comparisons:
        row, ours, test = comparison.published, comparison.ours, comparison.judgement
        numbers = ["—", "", "", ""]
        if ours is not None:
            numbers = [
                mean_std(ours.accuracy_mean, ours.accuracy_std, ours.n),
                f"{test.delta:+.2f}",
                f"[{test.ci_low:+.2f}, {test.ci_high:+.2f}]",
                p_cell(test.p_value),
            ]
        cells = [row_label(row), sparsity_cell(comparison), mean_std(row.mean, row.std, row.n)]
        lines.append(table_line([*cells, *numbers, comparison.verdict_cell]))
    return "\n".join(lines)


def differing_table(comparisons: list[Comparison]) -> str:
    """The runs beside a published row with another recipe, and what differs."""
    header = ["Runs", "Method", "Sparsity (%)", "Paper (%)", "Ours (%)", "What differs"]
    lines = []
    for comparison in comparisons:
        row = comparison.published
        for other in comparison.others:
            ours = other.row
            shown = "; ".join(other.differences[:4])
            if len(other.differences) > 4:
                shown += f"; and {len(other.differences) - 4} more"
            lines.append(table_line([
                f"{ours.model} on {ours.dataset}", row_label(row),
                percent(ours.sparsity_mean / 100, sign=""), mean_std(row.mean, row.std, row.n),
                mean_std(ours.accuracy_mean, ours.accuracy_std, ours.n), shown,
            ]))  # fmt: skip
    if not lines:
        return ""
    title = "### Runs beside a published row, with another recipe: no verdict"
    return "\n".join([title, "", *table_head(header), *lines])


def unmatched_list(rows: list[Row], networks: dict[str, str]) -> str:
    if not rows:
        return ""
    lines = []
    for row in rows:
        why = (
            f"no published {row.method} row at this sparsity"
            if row.model in networks
            else f"the paper has no {row.model}"
        )
        level = percent(row.sparsity_mean / 100, sign="")
        lines.append(f"- {row.model} on {row.dataset}: {row.method} at {level}% (n={row.n}): {why}")
    return "\n".join(["### Runs beside no published row", "", *lines])


def tally(comparisons: list[Comparison]) -> str:
    counts = defaultdict(int)
    for comparison in comparisons:
        counts[comparison.verdict] += 1
    parts = [f"{counts[name]} {name}" for name in VERDICTS if counts[name]]
    return f"{', '.join(parts)}, of {len(comparisons)} published rows"


# -- the paper's claims -----------------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    """A difference the paper draws a conclusion from: `first` - `second`, both at 99.9%."""

    text: str
    first: tuple[str, bool]  # (criterion, noise) of the published row
    second: tuple[str, bool]


CLAIMS = (
    Claim("FlipOut - GlobalMagnitude", ("flipout", True), ("global_magnitude", False)),
    Claim("FlipOut with noise - without", ("flipout", True), ("flipout", False)),
    Claim("FlipOut - GlobalMagnitude with noise", ("flipout", True), ("global_magnitude", True)),
)


def difference(first, second) -> str:
    """first - second of two (mean, std, n), with the standard error of the difference where
    both have a spread."""
    delta = first[0] - second[0]
    if first[1] is None or second[1] is None:
        return f"{delta:+.2f}"
    error = math.sqrt(first[1] ** 2 / first[2] + second[1] ** 2 / second[2])
    return f"{delta:+.2f} ± {error:.2f}"


def claims_table(comparisons: list[Comparison]) -> str:
    at = {
        (c.published.model, c.published.criterion, c.published.noise): c
        for c in comparisons
        if not c.published.hoyer_square and math.isclose(c.published.sparsity, CLAIM_SPARSITY)
    }
    lines = []
    for model in dict.fromkeys(c.published.model for c in comparisons):
        for claim in CLAIMS:
            first, second = at.get((model, *claim.first)), at.get((model, *claim.second))
            if first is None or second is None:
                continue
            pair = (first.published, second.published)
            paper = difference(*[(row.mean, row.std, row.n) for row in pair])
            ours = "not run with the paper's recipe"
            if first.ours is not None and second.ours is not None:
                runs = (first.ours, second.ours)
                ours = difference(*[(r.accuracy_mean, r.accuracy_std, r.n) for r in runs])
            lines.append(table_line([model, claim.text, paper, ours]))
    if not lines:
        return ""
    header = ["Network", "Claim, at 99.9% (points)", "Paper", "Ours"]
    return "\n".join(["### The paper's claims", "", *table_head(header), *lines])


def rule_text(floors: dict[str, float], margin: float = EQUIVALENCE_MARGIN) -> str:
    """The rule in a sentence, with the floor of each network shown."""
    shown = ", ".join(f"{model} {floor:.4g}" for model, floor in floors.items())
    level = f"{100 * ALPHA:g}%"
    return (
        f"Δ = ours - paper; above or below when Welch's t-test (Welch-Satterthwaite df) gives "
        f"p < {ALPHA:g}, replicated when two one-sided tests at {level} put Δ within "
        f"±{margin:g} point{'s' if margin != 1 else ''} (--equivalence_margin), inconclusive "
        "otherwise, with the runs of ours that would decide it; each side's spread is at least "
        f"its network's floor ({shown or 'none shown'} points: the median nonzero published "
        "std of the network's rows, and never below one test image, 100/N), since a std of "
        "three runs is too uncertain to trust when small, and a side with one run borrows the "
        "other's and is called only where the margin alone decides. A run is set beside a row "
        "of its network, method and sparsity; only one of the row's recipe (every option but "
        f"the seed and {', '.join(sorted(set(keys_with(Role.NEUTRAL)) - {'seed'}))}) gets a "
        "verdict."
    )


def markdown(beside: Beside, results=None) -> str:
    """The report's section beside the paper."""
    results = results or published.load()
    blocks = ["## Beside the paper"]
    if not beside.comparisons:
        networks = ", ".join(f"{model} on {data}" for model, data in results.networks.items())
        blocks.append(f"No run here is of a network of the paper ({networks}).")
    by_model = defaultdict(list)
    for comparison in beside.comparisons:
        by_model[comparison.published.model].append(comparison)
    blocks += [comparison_table(comparisons) for comparisons in by_model.values()]
    blocks += [
        differing_table(beside.comparisons),
        unmatched_list(beside.unmatched, results.networks),
        claims_table(beside.comparisons),
    ]
    summary = [f"Rule: {rule_text(beside.floors, beside.margin)}"]
    if beside.comparisons:
        summary.insert(0, f"Verdicts: {tally(beside.comparisons)}.")
    if beside.not_shown:
        left = ", ".join(f"{pair} ({count} rows)" for pair, count in beside.not_shown.items())
        summary.append(f"Not shown, no run of them here: {left}.")
    cited = sorted({c.published.source for c in beside.comparisons})
    sources = [results.sources[key] for key in cited]
    if sources:
        summary.append("Published numbers: " + "; ".join(s.cite() for s in sources) + ".")
    blocks.append("### Summary\n\n" + "\n".join(f"- {line}" for line in summary))
    return "\n\n".join(block for block in blocks if block)


# -- the CSV ----------------------------------------------------------------------------------

PAPER_COLUMNS = ["paper_sparsity", "paper_mean", "paper_std", "paper_n", "delta", "ci_low",
                 "ci_high", "p_value", "verdict", "verdict_note", "seeds_to_decide",
                 "recipe_differences", "paper_source"]  # fmt: skip


def csv_lines(beside: Beside, show_flops: bool) -> tuple[list[str], list[dict]]:
    """The CSV of the report beside the paper: a line for every published row shown (our
    columns empty where not run), every group of runs of another recipe, and every row of runs
    beside no published row (the paper's columns empty)."""
    ours_columns = [f.name for f in fields(Row) if f.name != "training"]
    if not show_flops:
        ours_columns.remove("flops_remaining_mean")
    shown = [c.ours for c in beside.comparisons if c.ours] + list(beside.unmatched)
    shown += [other.row for c in beside.comparisons for other in c.others]
    if all(row.train_flops_mean is None for row in shown):  # as the report's own CSV
        ours_columns = [column for column in ours_columns if not column.startswith("train_flops")]
    lines = []
    for comparison in beside.comparisons:
        row = comparison.published
        paper = {
            "paper_sparsity": row.sparsity, "paper_mean": row.mean, "paper_std": row.std,
            "paper_n": row.n, "paper_source": published.load().sources[row.source].cite(),
        }  # fmt: skip
        mine = asdict(comparison.ours) if comparison.ours else {"method": row_label(row)}
        if comparison.ours is None:
            mine.update(model=row.model, dataset=row.dataset)
        lines.append({**mine, **paper, **judgement_columns(comparison.judgement),
                      "verdict": comparison.verdict})  # fmt: skip
        for other in comparison.others:
            lines.append({**asdict(other.row), **paper, "verdict": "recipe differs",
                          "recipe_differences": "; ".join(other.differences)})  # fmt: skip
    for row in beside.unmatched:
        lines.append({**asdict(row), "verdict": "no published row"})
    return ours_columns + PAPER_COLUMNS, lines


def judgement_columns(test: Judgement | None) -> dict:
    if test is None:
        return {}
    return {
        "delta": test.delta, "ci_low": test.ci_low, "ci_high": test.ci_high,
        "p_value": test.p_value, "verdict_note": "n=1: spread borrowed" if test.borrowed else "",
        "seeds_to_decide": test.seeds_text,
    }  # fmt: skip


def write_csv(beside: Beside, path: Path, show_flops: bool = False) -> None:
    columns, lines = csv_lines(beside, show_flops)
    write_dicts_csv(columns, lines, path)


# -- the plots --------------------------------------------------------------------------------


def paper_curve(rows: list[Published]) -> Curve:
    rows = sorted(rows, key=lambda row: row.sparsity)
    return Curve(
        method=row_label(rows[0]),
        sparsity=tuple(row.sparsity for row in rows),
        accuracy=tuple(row.mean for row in rows),
        spread=tuple(row.std or 0.0 for row in rows),
        paper=True,
    )


def with_paper(panels: list[Panel], results=None) -> list[Panel]:
    """The panels with the paper's curve beside each of ours of a published method (dashed),
    and the paper's unpruned network as a horizontal line, where the panel's model is one of
    the paper's."""
    results = results or published.load()
    for panel in panels:
        rows = results.of(panel.model)
        if not rows:
            continue
        by_label = defaultdict(list)
        for row in rows:
            by_label[row_label(row)].append(row)
        curves = []
        for curve in panel.curves:  # each of ours followed by the paper's, for the legend
            curves.append(curve)
            if curve.method in by_label:
                curves.append(paper_curve(by_label[curve.method]))
        panel.curves = curves
        dense = [row for row in rows if row.criterion == "none"]
        panel.levels = [
            *panel.levels,
            *[Level(row_label(row), row.mean, row.std or 0.0, paper=True) for row in dense],
        ]
        note = "dashed: the paper"
        if rows[0].dataset != panel.dataset:
            note += f", on {rows[0].dataset}"
        panel.note = note
    return panels
