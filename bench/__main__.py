"""python -m bench: run the benchmarks on this machine's device and write BENCHMARKS.md."""

import argparse
import datetime
import os
import platform
import sys
from pathlib import Path

import torch

from bench import bookkeeping, dynamic, epoch, inference, pipeline, prune
from export.formats import threads_text
from utils.flags import Accumulated
from utils.io import write_text_atomic
from utils.runtime import resolve_device

SECTIONS = ("step", "prune", "pipeline", "epoch", "inference")
# A full VGG-19 epoch takes a few seconds on a GPU and over ten minutes on a small CPU: there it
# runs only when asked for (`--sections epoch`, with `--epoch_images` to shorten it).
CPU_SECTIONS = ("step", "prune", "pipeline")


def machine(device: torch.device) -> list[str]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    accelerator = torch.cuda.get_device_name(device) if device.type == "cuda" else "none (CPU)"
    return [
        f"- date: {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}",
        f"- machine: {cpu}, {cores} cores, {platform.system()} {platform.release()}",
        f"- device: {device} ({accelerator}), torch {torch.__version__}, "
        f"{torch.get_num_threads()} CPU threads",
    ]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.1f} ms"


def step_table(result: dict) -> list[str]:
    steps, alone = result["steps"], result["alone"]
    dense = steps["dense"]
    rows = [
        f"### 1. Training step, VGG-19, batch 128 (half the weights pruned; RigL and SET at "
        f"{result['dynamic']['sparsity']:.0%})",
        "",
        "| | time per step | vs dense |",
        "|---|---|---|",
        f"| dense step (forward, backward, SGD) | {ms(dense)} | 1.000 |",
        f"| + masking and flip tracking (ours) | {ms(steps['ours'])} | "
        f"{steps['ours'] / dense:.3f} |",
        f"| + masking, flip tracking and gradient noise (ours) | {ms(steps['ours_noise'])} | "
        f"{steps['ours_noise'] / dense:.3f} |",
        f"| + original-style bookkeeping | {ms(steps['original'])} | "
        f"{steps['original'] / dense:.3f} |",
        "",
        "The bookkeeping alone, timed on its own (more precise than a difference of step times):",
        "",
        "| | time per step | share of the dense step |",
        "|---|---|---|",
    ]
    labels = {
        "ours": f"masking + flip tracking, ours (default here: {result['default_kernels']})",
        "eager": "masking + flip tracking, ours, eager kernels",
        "compiled": "masking + flip tracking, ours, compiled kernels",
        "remasking": "masking + flip tracking, ours, re-masking weights too (other optimizers)",
        "noise": "gradient noise: drawing and adding it",
        "original": "original style: fp32 weight copy, fp32 counters, out-of-place masking",
    }
    for key, label in labels.items():
        if key in alone:
            rows.append(f"| {label} | {ms(alone[key])} | {alone[key] / dense:.1%} |")
    rows += [
        "",
        f"Bookkeeping, original style / ours: **{alone['original'] / alone['ours']:.1f}x**. "
        f"With noise, ours adds {(alone['ours'] + alone['noise']) / dense:.1%} to the dense step.",
        "Whole-step ratios carry the run-to-run spread of a step (several percent on a shared "
        "CPU); the isolated timings are the precise figures.",
        "",
        *dynamic_rows(result),
    ]
    return rows


def dynamic_rows(result: dict) -> list[str]:
    """RigL's and SET's steps beside the same run's dense step, their mean over a cycle computed
    from the update step and the step between updates."""
    steps, dense, shown = result["steps"], result["steps"]["dense"], result["dynamic"]
    work, cycle = shown["work"], shown["cycle"]

    def row(label: str, step: float, pruning: float) -> str:
        return (
            f"| {label} | {ms(step)} | {step / dense:.3f} | {ms(pruning)} | {pruning / dense:.1%} |"
        )

    def mean(times: dict) -> float:
        return dynamic.cycle_mean(times["rigl_update"], times["rigl"], cycle)

    return [
        f"Dynamic sparse training in the same run, at {shown['sparsity']:.0%} sparsity (RigL's "
        "usual setting; ERK layer densities), each method on its own copy of the network; the "
        "pruner's work (after_backward and after_step) timed inside the same steps:",
        "",
        "| | time per step | vs dense | the pruner's work | share of the dense step |",
        "|---|---|---|---|---|",
        row("RigL, a step between mask updates (masking, flip tracking)", steps["rigl"],
            work["rigl"]),
        row("RigL, an update step (+ dense gradient copy, drop of least magnitude, growth of "
            "largest gradient)", steps["rigl_update"], work["rigl_update"]),
        row(f"RigL, mean step over one update cycle of ΔT = {cycle}: (update + {cycle - 1} "
            f"others) / {cycle}", mean(steps), mean(work)),
        row("SET, an update step (random growth, no gradient copy)", steps["set_update"],
            work["set_update"]),
        "",
        "With dense tensors autograd computes every weight's gradient at every step anyway, so "
        "RigL's saving in the sparse-FLOPs sense is not realised here: a step between updates "
        "costs a dense step plus the masking, and an update adds the gradient copy and the "
        f"ranking of its drop and growth, once every {cycle} steps (docs/baselines.md). The "
        f"update rows time a run's first updates (drop fraction {shown['drop_fraction']:g}, "
        "annealed later).",
    ]  # fmt: skip


def state_table(result: dict) -> list[str]:
    return [
        "### 4. Pruning state per prunable parameter",
        "",
        f"{result['prunable']:,} prunable weights: ours **{result['state_bytes']:.1f} bytes** "
        "(bool mask, a byte with the sign bit and pending flips, int32 flip total); original style "
        f"{result['original_state_bytes']:.1f} bytes (bool mask, fp32 weight copy, fp32 counter).",
    ]


def prune_table(result: dict) -> list[str]:
    times = result["times"]
    return [
        "### 2. One global FlipOut prune, VGG-19 (20M weights, half removed)",
        "",
        "| | time | speed-up |",
        "|---|---|---|",
        f"| full argsort | {ms(times['sort'])} | 1.0x |",
        f"| ours (k-th value, identical mask) | {ms(times['ours'])} | "
        f"**{times['sort'] / times['ours']:.1f}x** |",
    ]


def pipeline_table(result: dict) -> list[str]:
    rates = result["images_per_second"]
    return [
        f"### 3. Input pipeline, CIFAR-10-shaped images with crop and flip, batch {pipeline.BATCH}",
        "",
        "| | images per second | speed-up |",
        "|---|---|---|",
        f"| torchvision DataLoader, PIL transforms, {result['workers']} workers | "
        f"{rates['torchvision']:,.0f} | 1.0x |",
        f"| device-resident (`--data_on_device`) | {rates['device']:,.0f} | "
        f"**{rates['device'] / rates['torchvision']:.1f}x** |",
    ]


def epoch_table(result: dict) -> list[str]:
    # scaled to the whole training set when --epoch_images shortened it
    minutes = result["epoch_seconds"] * 350 / 60
    dataset = epoch.DATASET_NAMES[result["dataset"]]
    return [
        f"### 5. One training epoch, {result['model']} on {dataset}, FlipOut with noise, "
        "`--amp --data_on_device --channels_last`",
        "",
        f"| images | steps | time | images per second | 350 {dataset} epochs at this pace |",
        "|---|---|---|---|---|",
        f"| {result['images']:,} | {result['steps']} | {result['seconds']:.1f} s | "
        f"{result['images_per_second']:,.0f} | {minutes:,.0f} min |",
    ]


def epoch_tables(device, images: int | None, networks: list[str], record: Path) -> list[str]:
    """Each network's epoch on its dataset, each recorded in `record` (BENCHMARKS.json), where
    `python -m experiments list` finds the pace to turn sweeps into GPU-hours."""
    rows = []
    for name in networks:
        result = epoch.run(device, images, name, epoch.NETWORKS[name])
        epoch.record(result, device, record)
        rows += [*epoch_table(result), ""]
    return [*rows, f"Recorded in {record.name} for `python -m experiments list`."]


EXPORTS = ("compact", "sparse", "onnxruntime")


def inference_table(rows: list[dict]) -> list[str]:
    lines = [
        "### 6. Inference of a pruned network: dense against its exports, on the CPU",
        "",
        "Networks trained here by main.py on the bundled digits, FlipOut halving the live weights "
        "at the end of every few epochs (bench/inference.py has the recipes; the runs are cached "
        "under ~/.cache/flipout/bench/), timed on real test images. *limit*: the dense network's "
        "multiply-accumulates over the live weights' (summary.json's `theoretical_speedup`), the "
        "speed-up of an export bound by arithmetic alone. *compact*: `--to compact`; *sparse*: "
        "`--to sparse_runtime`, its kernels chosen by timing at the batch size and thread count "
        "of the row; *onnxruntime*: `--to onnx` run by onnxruntime. Each is timed on one thread "
        "and on all of them, and shown at the faster, with its thread count. A network at chance "
        "accuracy does not classify, and is not timed.",
        "",
        "| network | sparsity | test accuracy | limit (MACs dense / live) | parameters (dense -> "
        "compact) | batch | dense | compact | sparse | onnxruntime |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        head = (
            f"| {row['network']} | {row['sparsity']:.2%} | {row['accuracy']:.2f}% | "
            f"{row['limit']:.1f}x |"
        )
        if not row["classifies"]:
            lines.append(f"{head} - | - | **does not classify**: not timed | | | |")
        for batch in row.get("times", {}):
            lines.append(f"{head} {inference_cells(row, batch)}")
    timed = [row for row in rows if row["classifies"]]
    if timed:
        difference = max(row["difference"] for row in timed)
        lines += [
            "",
            "The sparse exports' outputs differ from the masked networks' by at most "
            f"{difference:.1e} of the largest output, on the images timed.",
        ]
    return lines


def inference_cells(row: dict, batch: int) -> str:
    """A timed row's cells from the parameters on: each export's time, its speed-up over dense
    and its share of the limit, at its faster thread count."""
    params, times, counts = row["params"], row["times"][batch], row["threads"][batch]
    sparse_layers, layers = row["sparse_layers"][batch]
    cells = []
    for name in EXPORTS:
        speedup = times["dense"] / times[name]
        cell = (
            f"{ms(times[name])}, **{speedup:.1f}x** ({speedup / row['limit']:.0%} of the limit), "
            f"{threads_text(counts[name])}"
        )
        if name == "sparse":
            cell += f"; {sparse_layers}/{layers} layers sparse"
        cells.append(cell)
    dense = f"{ms(times['dense'])}, {threads_text(counts['dense'])}"
    return f"{params[0]:,} -> {params[1]:,} | {batch} | {dense} | {' | '.join(cells)} |"


def build_parser() -> argparse.ArgumentParser:
    """The flags; one of several values given twice adds its values to the first's."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N (default: auto)")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (default: off)")
    parser.add_argument(
        "--sections",
        nargs="+",
        action=Accumulated,
        choices=SECTIONS,
        help="(default: all on CUDA; step, prune and pipeline on the CPU)",
    )
    parser.add_argument(
        "--epoch_images",
        type=int,
        help="training images timed in the epoch section, the time scaled to the whole set "
        "(default: the whole set, 50000 for CIFAR-10)",
    )
    parser.add_argument(
        "--epoch_networks",
        nargs="+",
        action=Accumulated,
        choices=list(epoch.NETWORKS),
        default=list(epoch.NETWORKS),
        help="the networks the epoch section times (default: the paper's three)",
    )
    parser.add_argument(
        "--output",
        default="BENCHMARKS.md",
        help="(default: BENCHMARKS.md; the epoch times also go into a .json beside it)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    if args.sections is None:
        args.sections = list(SECTIONS if device.type == "cuda" else CPU_SECTIONS)
    if args.epoch_images is not None and args.epoch_images < 1:
        parser.error("--epoch_images must be positive")
    repeats = 2 if args.quick else 5

    lines = ["# Benchmarks", "", "Written by `python -m bench`; every ratio is measured side by "
             "side in one run.", "", *machine(device), ""]  # fmt: skip
    print("\n".join(lines), flush=True)
    results = {}
    sections = {
        "step": lambda: step_table(results.setdefault("step", bookkeeping.run(device, repeats))),
        "prune": lambda: prune_table(prune.run(device, repeats)),
        "pipeline": lambda: pipeline_table(pipeline.run(device, max(2, repeats // 2))),
        "epoch": lambda: epoch_tables(
            device, args.epoch_images, args.epoch_networks, Path(args.output).with_suffix(".json")
        ),
        "inference": lambda: inference_table(inference.run(device, repeats)),
    }
    tables = [sections[name] for name in SECTIONS if name in args.sections]
    if "step" in args.sections:
        tables.append(lambda: state_table(results["step"]))
    for table in tables:
        rows = table()
        print("\n".join(rows) + "\n", flush=True)
        lines += [*rows, ""]
    write_text_atomic(Path(args.output), "\n".join(lines))
    print(f"written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
