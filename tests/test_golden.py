"""The seed commands' results, bit for bit, as they were before the pruning library's refactor.

Each case is one of the original README's commands (or a neighbour: layer-wise magnitude, dense,
noise on the prunable tensors only, a convolutional network with Adam and biases pruned), shrunk to
a network and data that run here in a second. `tests/golden/seed_commands.json` holds what the
code before the refactor produced for them on the CPU: every epoch's metrics, and digests of the
final weights, masks and flip counts. A refactor that changes any schedule, score, tie-break,
random stream or arithmetic shows up here as a changed digest.

The values are this CPU's with the pinned PyTorch and its default thread count (two cores);
another build of PyTorch, another CPU family or another number of threads (OMP_NUM_THREADS=1)
can round differently. To record them again (only after an intended change of results):

    python -m tests.test_golden --record
"""

import hashlib
import json
import sys
import tempfile
from pathlib import Path

import pytest
import torch

import main
from tests.test_cli import seed_commands

GOLDEN = Path(__file__).parent / "golden" / "seed_commands.json"
METRICS = ("train_loss", "train_acc", "test_loss", "test_acc", "sparsity", "flips", "lr")
SMALL = {
    "--model": "lenet300",
    "--dataset": "digits",
    "-e": "4",
    "--prune_freq": "1",
    "-bs": "32",
    "--snip_sparsity": "0.9",
    "--prune_rate": "0.4",
    "--hoyer_lambda": "3e-4",
    "--magnitude_threshold": "2e-2",
    "--stop_hoyer_at": "2",
}
LENET5 = (
    "--model lenet5 --dataset synthetic --image_size 16 -bs 16 --limit_batches 4 --prune_bias "
    "--opt adam -lr 1e-3 --anneal_lr --anneal_lambda"
)
RUN = ["--limit_batches", "6", "--num_workers", "0", "--quiet", "--seed", "3"]


def shrunk(argv: list[str]) -> list[str]:
    out = list(argv)
    for flag, value in SMALL.items():
        if flag in out:
            out[out.index(flag) + 1] = value
    out = [a for a in out if not a.startswith(("--comment", "--logdir"))]
    return [*out, *RUN]


def cases() -> dict[str, list[str]]:
    commands = {argv[argv.index("--prune_criterion") + 1]: shrunk(argv) for argv in seed_commands()}
    flipout = commands["flipout"]
    return {
        **commands,
        "magnitude": [*commands["global_magnitude"], "--prune_criterion", "magnitude"],
        "none": [*commands["random"], "--prune_criterion", "none"],
        "flipout_prunable_noise": [*flipout, "--noise_only_prunable", "--flipout_p", "1"],
        "flipout_lenet5_bias_adam": [*flipout, *LENET5.split()],
    }


def digest(tensors: dict[str, torch.Tensor]) -> str:
    hashed = hashlib.sha256()
    for name in sorted(tensors):
        hashed.update(name.encode())
        hashed.update(tensors[name].detach().cpu().contiguous().numpy().tobytes())
    return hashed.hexdigest()


def outcome(argv: list[str], root: Path) -> dict:
    run_dir = root / "run"
    assert main.main([*argv, "--run_dir", str(run_dir)]) == 0
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    epochs = [json.loads(line) for line in lines]
    saved = torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=False)
    return {
        "epochs": [{key: record.get(key) for key in METRICS} for record in epochs],
        "weights": digest(saved["model"]),
        "masks": digest(saved["pruner"]["masks"]),
        "flip_counts": digest(saved["pruner"]["flip_counts"]),
    }


@pytest.mark.parametrize("case", sorted(cases()))
def test_same_results_as_before_the_refactor(case, tmp_path):
    recorded = json.loads(GOLDEN.read_text())[case]
    assert outcome(cases()[case], tmp_path) == recorded


def record() -> None:
    results = {}
    for name, argv in cases().items():
        with tempfile.TemporaryDirectory() as root:
            results[name] = outcome(argv, Path(root))
    GOLDEN.parent.mkdir(exist_ok=True)
    GOLDEN.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    print(f"recorded {len(results)} cases in {GOLDEN}")


if __name__ == "__main__" and "--record" in sys.argv:
    record()
