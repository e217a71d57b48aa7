"""What a run's checkpoint says about its pruned network, without training or data.

    python -m export.inspect RUN_DIR

Prints the model and last completed epoch, each prunable layer's live weights and remaining
multiply-accumulates (MACs), the overall sparsity and FLOPs with the theoretical speed-up, the
layers pruning removed completely, and how often the surviving weights flipped sign: over all of
them and per layer, with the share that never flipped, the weights FlipOut trusts most. Given a
file instead, it says in one line what the file is (an export and the run it came from, a file of
a run directory) and which directory to give.

Run it as `python -m export.inspect` from the repository root. `python export/inspect.py` would put
utils/ on sys.path, and this file would then shadow the standard library's `inspect` module.
"""

import sys

import torch

from export.artifacts import PrunedRun, shown
from export.compact import compact_summary
from export.flops import flops_summary, layer_flops
from export.formats import file_size, run_at
from pruning.mask import layer_table, percent
from utils.errors import OneLineParser, command


def live_counts(masks: dict[str, torch.Tensor]) -> dict[str, tuple[int, int]]:
    return {name: (int(mask.sum()), mask.numel()) for name, mask in masks.items()}


def flip_stats(counts: torch.Tensor) -> tuple[float, int, float] | None:
    """(mean, max, share never flipped) of the flip counts of some live weights; None for none."""
    if counts.numel() == 0:
        return None
    return float(counts.double().mean()), int(counts.max()), float((counts == 0).double().mean())


def flip_table(run: PrunedRun) -> tuple[str, str]:
    """The one-line summary over all live weights, and the per-layer table."""
    live = {name: run.flip_counts[name][mask] for name, mask in run.masks.items()}
    overall = flip_stats(torch.cat(list(live.values())))
    if overall is None:
        summary = "sign flips of the live weights: no live weights left"
    else:
        mean, most, never = overall
        summary = (
            f"sign flips of the live weights: mean {mean:.3f}, max {most:,}, "
            f"never flipped {percent(never)}"
        )
    width = max(len(name) for name in ["layer", *live])
    lines = [f"{'layer':<{width}}  {'mean flips':>10}  {'max flips':>9}  {'never flipped':>13}"]
    for name, counts in live.items():
        stats = flip_stats(counts)
        if stats is None:  # a collapsed layer has no live weight to average over
            mean, most, never = "-", "-", "-"
        else:
            mean, most, never = f"{stats[0]:.3f}", f"{stats[1]:,}", percent(stats[2])
        lines.append(f"{name:<{width}}  {mean:>10}  {most:>9}  {never:>13}")
    return summary, "\n".join(lines)


def compact_line(run: PrunedRun) -> str:
    """The size of the network `--to compact` would write."""
    compact = compact_summary(run.model, run.input_shape, run.masks)
    if "refused" in compact:
        return f"compact network: cannot be made ({compact['refused']})"
    line = (
        f"compact network (python -m export RUN_DIR --to compact OUT): "
        f"{compact['params_after']:,} of {compact['params_before']:,} parameters "
        f"({file_size(compact['bytes'])}), {compact['channels_after']:,} of "
        f"{compact['channels_before']:,} conv and linear outputs"
    )
    if compact.get("not_compacted"):
        line += f"; left whole: {shown(compact['not_compacted'])}"
    return line


def describe(run: PrunedRun) -> str:
    counts = live_counts(run.masks)
    live = sum(n for n, _ in counts.values())
    total = sum(n for _, n in counts.values())
    flops = flops_summary(run.model, run.input_shape, run.masks)
    collapsed = [name for name, (n, _) in counts.items() if n == 0]
    sparsity = percent(1 - live / total)
    options = ", ".join(f"{key}={value}" for key, value in run.spec.items() if key != "name")
    flips_summary, flips_per_layer = flip_table(run)
    sections = [
        f"run {run.run_dir}\nmodel {run.spec['name']} ({options}), last epoch {run.epoch}",
        layer_table(counts, layer_flops(run.model, run.input_shape, run.masks)),
        "\n".join(
            [
                f"sparsity {sparsity} ({live:,} of {total:,} prunable weights live)",
                f"MACs per input: dense {flops['flops_dense']:,}, "
                f"remaining {flops['flops_remaining']:,}, "
                f"theoretical speed-up {flops['theoretical_speedup']:.2f}x",
                f"collapsed layers: {', '.join(collapsed) if collapsed else 'none'}",
                compact_line(run),
            ]
        ),
        f"{flips_summary}\n{flips_per_layer}",
    ]
    return "\n\n".join(sections)


@command
def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(
        prog="python -m export.inspect",
        description="Sparsity, FLOPs, collapsed layers and sign-flip statistics of a run, read "
        "from its checkpoint.",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run directory with checkpoint.pt")
    args = parser.parse_args(argv)
    print(describe(run_at(args.run_dir)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
