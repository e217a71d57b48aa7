"""torchrun and DistributedDataParallel on the CPU (gloo, 2 processes): the run completes with
every rank's FlipOut state identical, matches a single-process run, and evaluates every test image
once. Stopping and resuming under torchrun, and losing a rank, are in test_faults.py."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import cli
import main
import training
from data import build_datasets
from data.device import DeviceLoader
from tests.support import ROOT
from tests.support.runs import only_run_dir, summary
from utils.distributed import Distributed

FLIPOUT_NOISE = ["-e", "6", "--prune_freq", "2", "--noise", "--num_workers", "0", "--quiet"]


def torchrun(*argv: str, processes: int = 2) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
         str(processes), "main.py", *argv],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def summary_of(logdir: Path) -> tuple[Path, dict]:
    run_dir = only_run_dir(logdir)
    return run_dir, summary(run_dir)


def test_two_processes_match_one(tmp_path):
    process = torchrun(*FLIPOUT_NOISE, "--logdir", str(tmp_path / "ddp"))
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err[-3000:]
    # rank 0 alone reports
    assert out.count("done: test accuracy") == 1 and "2 processes" in out
    _, ddp = summary_of(tmp_path / "ddp")
    assert ddp["status"] == "completed" and ddp["processes"] == 2
    # every prune and the end of the run compared all ranks' weights, masks and flip counts
    # bit for bit (Distributed.check_identical): reaching "completed" means they were equal

    assert main.main([*FLIPOUT_NOISE, "--logdir", str(tmp_path / "single")]) == 0
    _, single = summary_of(tmp_path / "single")
    assert ddp["final_sparsity"] == single["final_sparsity"] == 1 - 84550 / 338200
    # same global batch, another data order (DistributedSampler): within 3 points on 360 digits
    assert abs(ddp["final_test_acc"] - single["final_test_acc"]) <= 3.0


def test_one_process_under_torchrun_is_a_group_of_one(tmp_path):
    # the path the CUDA self-check takes with NCCL: DDP, the sampler and the fingerprint checks
    process = torchrun(*FLIPOUT_NOISE, "-e", "3", "--prune_freq", "1", "--limit_batches", "3",
                       "--logdir", str(tmp_path), processes=1)  # fmt: skip
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err[-3000:]
    assert "1 process (DistributedDataParallel, gloo)" in out
    _, summary = summary_of(tmp_path)
    assert summary["status"] == "completed" and summary["processes"] == 1
    assert summary["final_sparsity"] == 0.75


# the options of each criterion that scores by the step's gradient: RigL and GraNet regrow by it,
# Taylor sums (g * w)^2 over the steps between its prunes
BY_GRADIENT = {
    "rigl": ["--init_sparsity", "0.9", "--rigl_update_every", "2"],
    "granet": ["--init_sparsity", "0.5", "--granet_sparsity", "0.9", "--granet_update_every", "2"],
    "taylor": ["--prune_freq", "1"],
}


@pytest.mark.parametrize("criterion", sorted(BY_GRADIENT))
def test_ranks_score_and_regrow_by_the_same_gradient(tmp_path, criterion):
    # each rank trains on its own shard, so their local gradients differ: scoring or growing by
    # them would leave the ranks with different masks, which the check after every prune and
    # update refuses. Reaching "completed" means they used the gradient DDP averaged over ranks
    process = torchrun("--prune_criterion", criterion, *BY_GRADIENT[criterion], "-e", "2",
                       "--limit_batches", "4", "--num_workers", "0", "--quiet",
                       "--logdir", str(tmp_path))  # fmt: skip
    _, err = process.communicate(timeout=300)
    assert process.returncode == 0, err[-3000:]
    _, summary = summary_of(tmp_path)
    assert summary["status"] == "completed" and summary["processes"] == 2
    updates = [event for event in summary["prune_events"] if "step" in event]
    if criterion == "taylor":
        assert summary["final_sparsity"] == 0.5 and not updates
    else:
        assert updates and all(event["grown"] > 0 for event in updates)


def test_global_batch_must_divide_among_processes(tmp_path):
    process = torchrun("-bs", "127", "-e", "1", "--logdir", str(tmp_path))
    _, err = process.communicate(timeout=300)
    assert process.returncode != 0
    assert "-bs 127 is the global batch size and must divide evenly among the 2" in err


def test_evaluation_sees_every_image_once_and_training_shards_are_even():
    splits = build_datasets("digits", "unused")  # 360 test images, 1437 training images
    config = training.TrainConfig.from_options(cli.parse_args(["--num_workers", "0"]).by_name())
    device = torch.device("cpu")
    for world_size in (2, 3):
        seen, train_lengths = [], set()
        for rank in range(world_size):
            ddp = Distributed(rank, world_size)
            loader = training.make_loader(splits.test, 50, False, config, device, ddp)
            seen += [int(i) for i in loader.sampler]
            train = training.make_loader(splits.train, 64, True, config, device, ddp)
            train_lengths.add(len(train))
        assert sorted(seen) == list(range(360))
        assert len(train_lengths) == 1  # equal steps on every rank: no rank waits forever


def test_device_loader_shards_like_the_samplers():
    images = torch.zeros(11, 1, 4, 4, dtype=torch.uint8)
    labels = torch.arange(11)
    for shuffle in (False, True):
        shards = [
            torch.cat([t for _, t in DeviceLoader(images, labels, 3, shuffle, "cpu", (0.0,), (1.0,),
                                                  rank=rank, world_size=2)])
            for rank in range(2)
        ]  # fmt: skip
        if shuffle:  # padded to 12 places: equal length, every image at least once
            assert len(shards[0]) == len(shards[1]) == 6
            assert set(torch.cat(shards).tolist()) == set(range(11))
        else:  # evaluation: every image exactly once
            assert sorted(torch.cat(shards).tolist()) == list(range(11))


def _perturbed_rank(rank: int, store_path: str, results) -> None:
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    store = dist.FileStore(store_path, 2)
    dist.init_process_group("gloo", store=store, rank=rank, world_size=2)
    ddp = Distributed(rank, 2)
    weights = torch.linspace(-1, 1, 1000)
    ddp.check_identical([weights], "weights")  # equal: no error
    if rank == 1:  # flip the lowest bit of one element
        weights.view(torch.int32)[500] ^= 1
    try:
        ddp.check_identical([weights], "weights")
        results[rank] = "no error"
    except RuntimeError as error:
        results[rank] = str(error)
    dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not built in")
def test_a_one_bit_difference_between_ranks_is_an_error(tmp_path):
    results = mp.Manager().dict()
    mp.spawn(_perturbed_rank, args=(str(tmp_path / "store"), results), nprocs=2)
    assert "differ between rank 0 and rank(s) [1]" in results[0]
    assert "differ between rank 1 and rank(s) [0]" in results[1]
