"""The CUDA self-check: `pytest -m cuda` on a machine with a GPU.

Deselected from the default run (pyproject.toml), and skipped with its reason where no GPU is
visible, these check the paths that only a GPU takes: compiled per-step kernels against the eager
ones, bf16 autocast and channels-last against the exact prune target, the device-resident loader
against the CPU's batches, a one-process NCCL group through a prune and its fingerprint check,
and `python -m bench --quick` on the GPU. Each check's body takes a device, so that its logic can
be tried on the CPU too (see DEVELOPERS.md).
"""

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import main
from data.device import DeviceLoader
from models import build_model
from pruning import Periodic, Pruner
from tests.support import ROOT
from tests.support.datasets import cifar_images
from utils.checkpoint import load_checkpoint

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(
        not torch.cuda.is_available(),
        reason="needs a CUDA GPU (none is visible): the CUDA self-check runs only on a GPU machine",
    ),
]
CUDA = torch.device("cuda")


# -- compiled kernels against eager ones -------------------------------------------------------


def exact_live(total: int, prunes: int, rate: float = 0.5) -> int:
    """Live weights after `prunes` prunes, each removing floor(rate * live)."""
    live = total
    for _ in range(prunes):
        live -= int(rate * live)
    return live


class RemaskingSGD(torch.optim.SGD):
    """Not in KEEP_ZEROS: the pruner re-masks the weights after each of its steps, so the
    compiled mask-and-count kernel runs too."""


def lockstep(
    device,
    optimizer_type,
    noise: bool,
    model_name: str = "resnet18",
    steps: int = 300,
    prune_every: int = 60,
):
    """Two copies of one network, one pruner with compiled kernels and one with eager ones, fed
    the same gradients at every step: masks, flip counts and weights must stay bit-identical.
    With noise, the compiled noise add may round differently from the eager one (it can fuse the
    multiply and the add), so the noised gradients are compared within float32 rounding and then
    made equal, and the rest of the state is still compared exactly."""
    size = 16 if model_name == "resnet18" else 32  # ResNet-18 takes any size; LeNet-5 needs 32
    torch.manual_seed(0)
    compiled_model = build_model(model_name, 10, 3, size).to(device)
    eager_model = copy.deepcopy(compiled_model)
    options = dict(noise_scale=1.0 if noise else None, seed=3)
    pairs = []
    for model, mode in ((compiled_model, "on"), (eager_model, "off")):
        optimizer = optimizer_type(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
        pruner = Pruner(
            model, "flipout", Periodic(rate=0.5, every=1), **options, compile_kernels=mode
        )
        pruner.attach_optimizer(optimizer)
        pairs.append((model, optimizer, pruner))
    (_, _, compiled), (_, _, eager) = pairs
    assert not compiled.kernels.eager and eager.kernels.eager
    # noisy copies of one pattern per class: a signal the network learns, so weights keep moving
    # and flipping between prunes
    data = torch.Generator(device).manual_seed(1)
    patterns = torch.randn(10, 3, size, size, device=device, generator=data)
    flips_before_prunes = []
    for step in range(1, steps + 1):
        targets = torch.randint(0, 10, (32,), device=device, generator=data)
        inputs = patterns[targets] + torch.randn(32, 3, size, size, device=device, generator=data)
        for _, optimizer, _ in pairs:
            optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(compiled_model(inputs), targets).backward()
        for theirs, ours in zip(eager_model.parameters(), compiled_model.parameters(), strict=True):
            theirs.grad = ours.grad.clone()
        for _, _, pruner in pairs:
            pruner.after_backward(epoch=1)
        if noise:
            for theirs, ours in zip(
                eager_model.parameters(), compiled_model.parameters(), strict=True
            ):
                torch.testing.assert_close(ours.grad, theirs.grad, rtol=1e-5, atol=1e-7)
                theirs.grad.copy_(ours.grad)
            # the noise never reaches a pruned weight
            for name, mask in compiled.masks.masks.items():
                assert torch.all(compiled.params[name].grad[~mask] == 0), name
        for _, optimizer, pruner in pairs:
            optimizer.step()
            pruner.after_step()
        if step % prune_every == 0:
            flips_before_prunes.append(compiled.flips.total())
            for _, _, pruner in pairs:
                pruner.end_of_epoch(step // prune_every)
            assert_same_state(compiled, eager)
    assert_same_state(compiled, eager)
    total = compiled.masks.num_total
    assert compiled.masks.num_live == exact_live(total, steps // prune_every)
    assert all(flips > 0 for flips in flips_before_prunes), flips_before_prunes


def assert_same_state(compiled: Pruner, eager: Pruner) -> None:
    for name in compiled.params:
        assert torch.equal(compiled.params[name], eager.params[name]), name
        assert torch.equal(compiled.masks[name], eager.masks[name]), name
        assert torch.equal(compiled.flips.counts[name], eager.flips.counts[name]), name


@pytest.mark.parametrize("optimizer_type", [torch.optim.SGD, RemaskingSGD])
@pytest.mark.parametrize("noise", [False, True], ids=["no_noise", "noise"])
def test_compiled_kernels_match_eager_over_hundreds_of_steps(optimizer_type, noise):
    lockstep(CUDA, optimizer_type, noise)


# -- bf16 autocast and channels-last reach the exact target --------------------------------------


def amp_channels_last_run(device: str, tmp_path: Path, criterion_flags: list[str]) -> None:
    argv = [
        "-m", "vgg11", "-d", "synthetic", "-e", "4", "--prune_freq", "1", "--limit_batches", "3",
        "-bs", "32", "--amp", "--channels_last", "--device", device, "--num_workers", "0",
        "--quiet", "--logdir", str(tmp_path), *criterion_flags,
    ]  # fmt: skip
    assert main.main(argv) == 0
    (run_dir,) = tmp_path.iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    masks = load_checkpoint(run_dir)["pruner"]["masks"]
    weights = load_checkpoint(run_dir)["model"]
    total = sum(mask.numel() for mask in masks.values())
    live = sum(int(mask.sum()) for mask in masks.values())
    assert live == exact_live(total, 3)
    assert summary["final_sparsity"] == 1 - live / total
    for name, mask in masks.items():
        assert torch.all(weights[name][~mask] == 0), name


@pytest.mark.parametrize(
    "criterion_flags",
    [["--prune_criterion", "flipout", "--noise"], ["--prune_criterion", "global_magnitude"]],
    ids=["flipout_noise", "global_magnitude"],
)
def test_amp_and_channels_last_prune_to_the_exact_target(tmp_path, criterion_flags):
    amp_channels_last_run("cuda", tmp_path, criterion_flags)


# -- the device-resident loader ----------------------------------------------------------------


def loader_batches_match(device: str) -> None:
    images = torch.from_numpy(cifar_images(50, 0)).permute(0, 3, 1, 2).contiguous()
    options = {"mean": (0.5,) * 3, "std": (0.25,) * 3, "crop_padding": 4, "flip": True, "seed": 5}
    reference = DeviceLoader(images, torch.arange(50), 8, True, "cpu", **options)
    on_device = DeviceLoader(images, torch.arange(50), 8, True, device, **options)
    for _ in range(2):  # two epochs: the generators move on alike
        for (a, targets_a), (b, targets_b) in zip(reference, on_device, strict=True):
            assert b.device.type == torch.device(device).type
            torch.testing.assert_close(a, b.cpu())
            assert torch.equal(targets_a, targets_b.cpu())


def test_device_resident_loader_yields_the_cpu_batches():
    loader_batches_match("cuda")


# -- a one-process NCCL group ------------------------------------------------------------------


def one_process_group(device: str, backend: str, tmp_path: Path) -> None:
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
        "main.py", "-m", "lenet5", "-d", "synthetic", "-e", "3", "--prune_freq", "1", "--noise",
        "--limit_batches", "4", "--device", device, "--num_workers", "0", "--quiet",
        "--logdir", str(tmp_path),
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"1 process (DistributedDataParallel, {backend})" in done.stdout
    (run_dir,) = tmp_path.iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    # each prune and the end of the run compared the ranks' fingerprints through the backend
    assert summary["status"] == "completed" and summary["processes"] == 1
    first, second = summary["prune_events"]
    assert second["live"] == exact_live(first["total"], 2)


def test_one_process_nccl_group_prunes_with_the_fingerprint_check(tmp_path):
    one_process_group("cuda", "nccl", tmp_path)


# -- the benchmark -----------------------------------------------------------------------------


def bench_quick(device: str, tmp_path: Path, extra: list[str] = ()) -> str:
    output = tmp_path / "BENCHMARKS.md"
    command = [sys.executable, "-m", "bench", "--quick", "--device", device, "--output",
               str(output), *extra]  # fmt: skip
    environment = {**os.environ, "PYTHONUNBUFFERED": "1"}
    done = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=1200, env=environment
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return output.read_text()


def test_bench_quick_completes_and_writes_its_gpu_rows(tmp_path):
    text = bench_quick("cuda", tmp_path)
    assert torch.cuda.get_device_name(0) in text
    for heading in ("### 1. Training step", "### 2. One global FlipOut prune",
                    "### 3. Input pipeline", "### 5. One training epoch"):  # fmt: skip
        assert heading in text
