"""Inference speed of a network pruned here: dense against each export, beside the FLOP-bound limit.

Each network is trained by main.py itself on the bundled digits (data/digits.py: 1,437 training
images, 32x32, one channel) while FlipOut halves its live weights every few epochs, into a cache
directory named by a digest of its recipe: ~/.cache/flipout/bench/<digest>/ (under XDG_CACHE_HOME
when set). A later bench reuses the completed run and resumes an interrupted one; a changed recipe
trains afresh, and deleting the directory retrains.

The run's summary.json gives its test accuracy and `theoretical_speedup`: the multiply-accumulates
of the dense network over those of its live weights, the speed-up of an export bound by arithmetic
alone. A network whose accuracy is at chance does not classify (a recipe that prunes too fast can
leave no path from input to output, and a constant network is fast for no use), so it is reported
as such and not timed. The others, the masked dense network (python -m export's input) is timed
side by side with its compact export (export/compact.py) and its sparse-kernel export
(export/sparse_runtime.py), at batch 1 and batch 64 of real test images, on the CPU, where the
sparse kernels run.
"""

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

import main as training_cli
from bench.timing import interleaved
from data import build_datasets
from export import onnx as onnx_export
from export.artifacts import load_run
from export.compact import channel_count, parameter_count
from export.formats import compact_module, copied, masked_network, with_kernels
from export.sparse_runtime import thread_counts, threads
from utils.errors import UserError
from utils.rundir import MODEL, read_summary

BATCHES = (1, 64)
# accuracy at most this many times chance (10% on ten classes) is a network that does not classify
CHANCE_FACTOR = 1.5
# the recipe: lr 0.01, half the live weights pruned at the end of every few epochs
RECIPE = ("-d", "digits", "-lr", "0.01", "--prune_criterion", "flipout", "--schedule",
          "periodic", "--prune_rate", "0.5", "--seed", "0", "--num_workers", "0", "--quiet",
          "--save_model")  # fmt: skip


@dataclass(frozen=True)
class Recipe:
    """One network trained for the bench: main.py's options but --device and --run_dir."""

    options: tuple[str, ...]

    def argv(self, device: torch.device) -> list[str]:
        return [*self.options, "--device", str(device)]

    def run_dir(self, device: torch.device) -> Path:
        text = json.dumps(self.argv(device))
        return cache_dir() / hashlib.sha256(text.encode()).hexdigest()[:16]


def pruned(model: str, epochs: int, prune_freq: int) -> Recipe:
    """`model` pruned at the end of every `prune_freq` epochs but the last: epochs // prune_freq
    halvings, fewer by one where `prune_freq` divides `epochs`."""
    return Recipe((*RECIPE, "-m", model, "-e", str(epochs), "--prune_freq", str(prune_freq)))


# 7 halvings leave 0.78% of the weights (99.22% sparse), 10 leave 0.098% (99.90%); pruning every
# 2 epochs to 99.9% collapsed the network to chance (issue 34), every 3 kept it at 98%
RECIPES = tuple(
    pruned(model, epochs, prune_freq)
    for model in ("vgg19", "resnet18")
    for epochs, prune_freq in ((32, 3), (16, 2))
)


def cache_dir() -> Path:
    try:
        base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    except RuntimeError:
        raise UserError(
            "no home directory to keep the bench's trained networks in; set XDG_CACHE_HOME"
        ) from None
    return Path(base) / "flipout" / "bench"


def trained(recipe: Recipe, device: torch.device) -> tuple[Path, dict]:
    """The run directory of `recipe` and its summary, trained first unless the cache holds it."""
    run_dir = recipe.run_dir(device)
    summary = read_summary(run_dir) if run_dir.is_dir() else None
    complete = summary and summary.get("status") == "completed" and (run_dir / MODEL).is_file()
    if not complete:
        code = training_cli.main([*recipe.argv(device), "--run_dir", str(run_dir)])
        summary = read_summary(run_dir)
        if code != 0 or not summary or summary.get("status") != "completed":
            raise UserError(f"training the bench's network failed (exit {code}); see {run_dir}")
    return run_dir, summary


def held_out_images(summary: dict, count: int) -> torch.Tensor:
    """The first `count` test images of the run's dataset, as its evaluation saw them."""
    test = build_datasets(summary["dataset"], summary["options"]["data_dir"], download=False).test
    return torch.stack([test[index][0] for index in range(count)])


def onnx_case(data: bytes, example: torch.Tensor, count: int):
    """The ONNX model `data` as onnxruntime runs it on `count` threads, on `example`."""
    # its threads must not spin between runs on the cores the next case is timed on
    session = onnx_export.session(data, threads=count, spinning=False)
    feed = {onnx_export.INPUT: example.numpy()}
    return lambda: session.run(None, feed)


def timed(run, images: torch.Tensor, device, repeats: int) -> dict:
    """Sizes of the compact export, and per batch size the milliseconds per forward pass of the
    masked network and of each export, each at its faster thread count, and that count. The
    exports are those python -m export writes, the sparse one's kernels chosen by timing at that
    batch size and thread count."""
    model = masked_network(run)
    compacted = compact_module(run)
    onnx_model = onnx_export.onnx_bytes(compacted, run.input_shape, {})
    row = {
        "params": (parameter_count(model), parameter_count(compacted)),
        "channels": (channel_count(model), channel_count(compacted)),
        "times": {},
        "threads": {},
        "sparse_layers": {},
        "difference": 0.0,
    }
    for batch in BATCHES:
        example = images[:batch]
        best: dict[str, tuple[float, int]] = {}
        sparse_layers = {}
        for count in thread_counts():
            sparse, choices = with_kernels(copied(compacted), run, batch, count)
            sparse_layers[count] = (sum(c.sparse for c in choices), len(choices))
            row["difference"] = max(row["difference"], difference(model, sparse, example))
            cases = {
                "dense": lambda m=model, x=example: m(x),
                "compact": lambda m=compacted, x=example: m(x),
                "sparse": lambda m=sparse, x=example: m(x),
                "onnxruntime": onnx_case(onnx_model, example, count),
            }
            with threads(count), torch.inference_mode():
                # warm: the latency of a network called in a loop, its weights in the caches,
                # rather than just after the dense network has evicted them
                measured = interleaved(cases, device, repeats, warmup=2, warm=True)
            for name, seconds in measured.items():
                if name not in best or seconds < best[name][0]:
                    best[name] = (seconds, count)
        row["times"][batch] = {name: seconds for name, (seconds, _) in best.items()}
        row["threads"][batch] = {name: count for name, (_, count) in best.items()}
        # the kernels of the sparse network at the thread count it was timed faster on
        row["sparse_layers"][batch] = sparse_layers[best["sparse"][1]]
    return row


@torch.inference_mode()
def difference(model, export, images: torch.Tensor) -> float:
    """The largest difference between the outputs of `export` and of the masked `model` on
    `images`, relative to the largest output."""
    expected = model(images)
    return float((export(images) - expected).abs().max() / expected.abs().max().clamp_min(1e-30))


def measure(run_dir: Path, summary: dict, device, repeats: int) -> dict:
    """One table row: the run's accuracy, sparsity and FLOP-bound limit, and its timings unless
    the network does not classify."""
    run = load_run(run_dir)
    row = {
        "network": run.spec["name"],
        "sparsity": summary["final_sparsity"],
        "accuracy": summary["final_test_acc"],
        "limit": summary["theoretical_speedup"],
        "classifies": summary["final_test_acc"] > CHANCE_FACTOR * 100 / run.spec["num_classes"],
    }
    if row["classifies"]:
        images = held_out_images(summary, max(BATCHES))
        row.update(timed(run, images, device, repeats))
    return row


def run(device: torch.device, repeats: int, recipes=RECIPES) -> list[dict]:
    """A row per recipe, its network trained on `device` (or read from the cache), timed on the
    CPU."""
    rows = []
    for recipe in recipes:
        run_dir, summary = trained(recipe, device)
        row = measure(run_dir, summary, torch.device("cpu"), repeats)
        print(f"  {row}", flush=True)
        rows.append(row)
    return rows
