"""The report's plots: accuracy against sparsity, one panel per (model, dataset) and one curve per
method (with `--paper`, the paper's curves beside ours), and the noise ablation; drawn with
matplotlib's Agg canvas into a PNG that carries the report's mark (PNG_MARK)."""

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from experiments.files import png_texts
from experiments.rows import METRICS, Row
from pruning.registry import CRITERIA, method_label, published_noise
from utils.io import write_atomic

PLOT_NAME = "accuracy_vs_sparsity.png"

NOISE_PLOT_NAME = "noise_ablation.png"

# a panel whose accuracies span more points than this gets a second, zoomed row (see draw)
ZOOM_SPAN = 15.0

# what marks the report's files as its own, so that a rerun replaces them and nothing else
# (experiments/files.py): a plot's PNG text chunk, and the start of a CSV's first line, the
# columns every CSV of the report begins with
PNG_MARK = ("Software", "python -m experiments.report")


def is_our_plot(head: bytes) -> bool:
    keyword, text = PNG_MARK
    return png_texts(head).get(keyword) == text


def nines(sparsity_percent: float) -> float:
    """Plot position: 90% -> 1, 99% -> 2, 99.9% -> 3, so that 75% .. 99.9% spread evenly.
    Clamped so that a fully pruned model stays on the axis instead of at infinity."""
    return -math.log10(max(1 - sparsity_percent / 100, 1e-6))


def readable_ticks(sparsities: list[float]) -> list[float]:
    """The measured sparsities, dropping any that would print on top of the previous one."""
    ticks: list[float] = []
    for sparsity in sorted(sparsities):
        if not ticks or nines(sparsity) - nines(ticks[-1]) >= 0.15:
            ticks.append(sparsity)
    return ticks


@dataclass(frozen=True)
class Curve:
    """One line of a panel: a method's accuracy at each of its sparsities (percent)."""

    method: str  # the method's label, which pairs our curve with the paper's
    sparsity: tuple[float, ...]
    accuracy: tuple[float, ...]
    spread: tuple[float, ...]  # error bars: the sample std, 0 where there is none
    paper: bool = False  # the published curve, drawn dashed beside ours

    @property
    def label(self) -> str:
        return f"{self.method} (paper)" if self.paper else self.method


@dataclass(frozen=True)
class Level:
    """A horizontal line across a panel: an unpruned network's accuracy."""

    method: str
    accuracy: float
    spread: float
    paper: bool = False

    @property
    def label(self) -> str:
        return f"{self.method} (paper)" if self.paper else self.method


@dataclass
class Panel:
    """One subplot: a (model, dataset)'s curves and horizontal lines, what a plot shows."""

    model: str
    dataset: str
    metric: str
    curves: list[Curve]
    levels: list[Level]
    note: str = ""  # a second title line, e.g. what the dashed curves are

    @property
    def title(self) -> str:
        return f"{self.model} on {self.dataset}" + (f"\n{self.note}" if self.note else "")


def curve_of(rows: list[Row], paper: bool = False) -> Curve:
    """The rows of one method as a curve, by increasing sparsity."""
    rows = sorted(rows, key=lambda row: row.sparsity_mean)
    return Curve(
        method=rows[0].method,
        sparsity=tuple(row.sparsity_mean for row in rows),
        accuracy=tuple(row.accuracy_mean for row in rows),
        spread=tuple(row.accuracy_std or 0.0 for row in rows),
        paper=paper,
    )


def panel_of(rows: list[Row], methods: Iterable[str] | None = None) -> Panel:
    """One (model, dataset)'s rows as a panel: a curve per method label, so one per group of
    runs (all, or those in `methods`), the dense network's as a horizontal line (one per
    recipe, where its runs are of several)."""
    dense = CRITERIA["none"].label
    wanted = None if methods is None else set(methods)
    curves, levels = [], []
    for method in dict.fromkeys(row.method for row in rows):  # paper order, once each
        points = [row for row in rows if row.method == method]
        if method == dense or method.startswith(f"{dense} ("):
            [row, *_] = points
            levels.append(Level(method, row.accuracy_mean, row.accuracy_std or 0.0))
        elif wanted is None or method in wanted:
            curves.append(curve_of(points))
    return Panel(rows[0].model, rows[0].dataset, rows[0].metric, curves, levels)


def by_pair(rows: list[Row]) -> dict[tuple[str, str], list[Row]]:
    """The rows of each (model, dataset), in table order."""
    pairs: dict[tuple[str, str], list[Row]] = {}
    for row in rows:
        pairs.setdefault((row.model, row.dataset), []).append(row)
    return pairs


def accuracy_panels(rows: list[Row], paper: bool = False) -> list[Panel]:
    """The accuracy-vs-sparsity plot: a panel for every (model, dataset) where some method has
    several sparsity levels (with `paper`, also for every network of the paper), with every
    method's curve and the dense network as a line. Where the noise ablation has its own panel
    (noise_panels), its variants are drawn there, not here."""
    ablated = {(panel.model, panel.dataset) for panel in noise_panels(rows)}
    variants = set(noise_ablation_methods().values())
    rows = [r for r in rows if (r.model, r.dataset) not in ablated or r.method not in variants]
    levels = Counter((row.model, row.dataset, row.method) for row in rows)
    networks = paper_networks() if paper else set()
    return [
        panel_of(pair_rows)
        for (model, dataset), pair_rows in by_pair(rows).items()
        if model in networks or any(levels[(model, dataset, row.method)] > 1 for row in pair_rows)
    ]


def paper_networks() -> set[str]:
    from experiments.published import load

    return set(load().networks)


def noise_ablation_methods() -> dict[str, str]:
    """The noise ablation's pairs: each method as the paper runs it -> its other noise setting."""
    return {
        method_label(name, {}): method_label(name, {"noise": not published_noise(name)})
        for name in ("flipout", "global_magnitude")
    }


def noise_panels(rows: list[Row]) -> list[Panel]:
    """The noise-ablation plot: a panel for every (model, dataset) with runs of a method both as
    the paper runs it and with the other noise setting (FlipOut without its noise,
    GlobalMagnitude with noise), with both settings of both methods."""
    pairs = noise_ablation_methods()
    methods = [*pairs, *pairs.values()]
    panels = []
    for pair_rows in by_pair(rows).values():
        present = {row.method for row in pair_rows}
        if any(plain in present and variant in present for plain, variant in pairs.items()):
            panels.append(panel_of(pair_rows, methods))
    return panels


def draw(panels: list[Panel], path: Path) -> Path | None:
    """Write the panels side by side as one PNG; None, and nothing written, without panels.
    Our curves are solid with error bars of one sample std; the paper's dashed, in the colour of
    ours of the same method; horizontal lines for the unpruned networks. Where a panel's
    accuracies span more than ZOOM_SPAN points, a second row shows its top ZOOM_SPAN points,
    where methods that did not collapse differ by tenths."""
    if not panels:
        return None
    # the Agg canvas directly rather than pyplot: no display, and no global figure state to leak
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    zoomed = [accuracy_span(panel) > ZOOM_SPAN for panel in panels]
    rows = 2 if any(zoomed) else 1
    figure = Figure(figsize=(6.5 * len(panels), 4.8 * rows), layout="constrained")
    FigureCanvasAgg(figure)
    grid = figure.subplots(rows, len(panels), squeeze=False)
    for column, panel in enumerate(panels):
        draw_panel(grid[0][column], panel)
        if rows == 2 and zoomed[column]:
            draw_panel(grid[1][column], panel, zoom=True)
        elif rows == 2:
            grid[1][column].set_axis_off()
    keyword, mark = PNG_MARK  # what makes the file recognisably ours (experiments/files.py)
    write_atomic(
        Path(path),
        lambda file: figure.savefig(file, format="png", dpi=150, metadata={keyword: mark}),
    )
    return Path(path)


def accuracy_span(panel: Panel) -> float:
    values = [value for curve in panel.curves for value in curve.accuracy]
    values += [level.accuracy for level in panel.levels]
    return max(values) - min(values) if values else 0.0


def draw_panel(axes, panel: Panel, zoom: bool = False) -> None:
    methods = list(dict.fromkeys(curve.method for curve in panel.curves))
    colours = {method: f"C{index % 10}" for index, method in enumerate(methods)}
    for curve in panel.curves:
        axes.errorbar(
            [nines(value) for value in curve.sparsity],
            curve.accuracy,
            yerr=curve.spread,
            color=colours[curve.method],
            linestyle="--" if curve.paper else "-",
            marker="s" if curve.paper else "o",
            markerfacecolor="none" if curve.paper else None,
            alpha=0.8 if curve.paper else 1.0,
            capsize=3,
            label=curve.label,
        )
    for level in panel.levels:
        colour = "black" if level.paper else "dimgray"
        axes.axhline(level.accuracy, color=colour, linestyle="--" if level.paper else "-",
                     linewidth=1, label=level.label)  # fmt: skip
    # ticks at the curves' levels: a lone point elsewhere would crowd out a level's label
    swept = [value for curve in panel.curves if len(curve.sparsity) > 1 for value in curve.sparsity]
    ticks = readable_ticks(swept or [value for curve in panel.curves for value in curve.sparsity])
    labels = [f"{tick:.2f}".rstrip("0").rstrip(".") for tick in ticks]
    axes.set_xticks([nines(tick) for tick in ticks], labels, rotation=45 if len(ticks) > 5 else 0)
    axes.set_xlabel("Sparsity (%)")
    axes.set_ylabel(METRICS[panel.metric][2])
    axes.grid(alpha=0.3)
    if zoom:
        top = max(
            [v for c in panel.curves for v in c.accuracy] + [v.accuracy for v in panel.levels]
        )
        axes.set_ylim(top - ZOOM_SPAN, top + 1)
        axes.set_title(f"the top {ZOOM_SPAN:g} points", fontsize="small")
        return
    axes.set_title(panel.title, fontsize="medium")
    axes.legend(fontsize="x-small")
