"""The training FLOPs a run records: per epoch in metrics.jsonl (`train_flops`, with the
`train_examples` it trained) and in all in summary.json (`train_flops`, and `train_flops_dense`
for the same steps with every weight live), counted as the RigL papers count them. LeNet-300-100
uses each weight once per input, so a network's MACs are its count of live weights: each
expectation below is written out from the run's own live counts."""

import pytest
import torch

import main
from tests.support.runs import only_run_dir, quick, records, stopped_in_epoch, summary
from utils.checkpoint import CHECKPOINT, load_checkpoint, save_atomic

# three steps of BATCH examples an epoch, two epochs
BATCH = 32
SHORT = ["-m", "lenet300", "-d", "digits", "-e", "2", "--limit_batches", "3", "-bs", str(BATCH)]
EXAMPLES = 3 * BATCH
DENSE_MACS = 300 * 32 * 32 + 100 * 300 + 10 * 100  # 338,200
# a mask update after steps 2 and 4 of the six: one in each epoch
SPARSE = [*SHORT, "--init_sparsity", "0.9", "--rigl_update_every", "2", "--rigl_end", "1"]
RIGL = [*SPARSE, "--prune_criterion", "rigl"]


def run(tmp_path, *argv: str):
    assert main.main(quick(tmp_path, *argv)) == 0
    return only_run_dir(tmp_path / "runs")


@pytest.fixture(scope="module")
def rigl_run(tmp_path_factory):
    """A straight RigL run, its directory: read by two tests, never changed."""
    return run(tmp_path_factory.mktemp("rigl"), *RIGL)


def test_flipout_trains_each_epoch_at_the_live_weights_of_its_masks(tmp_path):
    run_dir = run(tmp_path, *SHORT, "--prune_freq", "1", "--prune_rate", "0.5")
    done, epochs = summary(run_dir), records(run_dir)
    # epoch 1 trains dense; epoch 2 with what the prune after epoch 1 left live
    live = [DENSE_MACS, done["prune_events"][0]["live"]]
    assert live[1] == DENSE_MACS // 2
    assert [e["train_examples"] for e in epochs] == [EXAMPLES, EXAMPLES]
    # forward f and backward 2f per example, two FLOPs per multiply-accumulate
    assert [e["train_flops"] for e in epochs] == [6 * f * EXAMPLES for f in live]
    assert done["train_flops"] == 6 * EXAMPLES * sum(live)
    assert done["train_flops_dense"] == 6 * DENSE_MACS * 2 * EXAMPLES
    assert done["flops_dense"] == DENSE_MACS


def test_a_dense_run_trains_at_its_dense_flops(tmp_path):
    done = summary(run(tmp_path, *SHORT, "--prune_criterion", "none"))
    assert done["train_flops"] == done["train_flops_dense"] == 6 * DENSE_MACS * 2 * EXAMPLES


@pytest.mark.parametrize(("criterion", "dense_gradient"), [("rigl", True), ("set", False)])
def test_sparse_training_costs_its_sparse_flops_and_rigl_its_dense_gradients(
    criterion, dense_gradient, tmp_path, request
):
    if criterion == "rigl":
        done = summary(request.getfixturevalue("rigl_run"))
    else:
        done = summary(run(tmp_path, *SPARSE, "--prune_criterion", criterion))
    updates = [event for event in done["prune_events"] if "step" in event]
    assert [event["step"] for event in updates] == [2, 4]
    sparse = done["flops_remaining"]
    assert sparse == round(0.1 * DENSE_MACS)  # each layer keeps its count of live weights
    # RigL's update steps compute the dense gradient: f_D - f_S more for each of their examples
    gradients = len(updates) * BATCH * (DENSE_MACS - sparse) if dense_gradient else 0
    assert done["train_flops"] == 2 * (3 * sparse * 2 * EXAMPLES + gradients)
    # 10% of dense, and for RigL the dense gradient: a third of a step's work on 90% more
    # weights, for the examples of its two update steps
    extra = 0.9 * (2 * BATCH) / (3 * 2 * EXAMPLES) if dense_gradient else 0.0
    assert done["train_flops"] / done["train_flops_dense"] == pytest.approx(0.1 + extra)


def test_a_run_stopped_and_resumed_records_the_flops_of_a_straight_one(
    rigl_run, tmp_path, monkeypatch
):
    stopped = stopped_in_epoch(tmp_path, RIGL, 2)
    # the interrupted run's summary counts its completed epoch, the one its checkpoint holds
    first = records(rigl_run)[0]
    assert summary(stopped)["train_flops"] == first["train_flops"]
    assert main.main(["--resume", str(stopped), "--num_workers", "0", "--quiet"]) == 0

    assert records(stopped) == records(rigl_run)
    for key in ("train_flops", "train_flops_dense"):
        assert summary(stopped)[key] == summary(rigl_run)[key]


def test_a_run_an_earlier_version_started_records_no_train_flops(tmp_path):
    run_dir = run(tmp_path, *SHORT, "-e", "1", "--prune_freq", "1")
    # its checkpoint's epochs, and metrics.jsonl, as a version before these fields wrote them
    checkpoint = load_checkpoint(run_dir)
    for epoch in checkpoint["history"]:
        del epoch["train_flops"], epoch["train_examples"]
    save_atomic(checkpoint, run_dir / CHECKPOINT)
    assert main.main(["--resume", str(run_dir), "-e", "2", "--num_workers", "0", "--quiet"]) == 0
    done = summary(run_dir)
    assert done["status"] == "completed" and done["epochs_completed"] == 2
    assert "train_flops" not in done and "train_flops_dense" not in done
    # the epoch it trained itself is counted in its record
    assert records(run_dir)[1]["train_flops"] == 6 * (DENSE_MACS // 2) * EXAMPLES


def test_a_conv_layer_costs_its_uses_per_weight():
    from export.flops import TrainingFlops

    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 2, 3, padding=1),  # 18 weights, each used at 4x4 positions
        torch.nn.Flatten(),
        torch.nn.Linear(32, 3),  # 96 weights, each used once
    )
    flops = TrainingFlops(model, (1, 4, 4))
    assert flops.dense_macs == 18 * 16 + 96
    masks = {
        "0.weight": torch.zeros(2, 1, 3, 3, dtype=torch.bool),
        "2.weight": torch.ones(3, 32, dtype=torch.bool),
    }
    masks["0.weight"][0] = True  # 9 live
    assert flops.live_macs(masks) == 9 * 16 + 96
    # an update that drops 4 conv weights and grows 4 linear ones, after step 2 of 3 steps of 8
    # examples (the last of 4): the update step computes the dense gradient
    moved = {"0.weight": [4, 0], "2.weight": [0, 4]}
    before, after = 9 * 16 + 96, 5 * 16 + 100
    expected = 3 * before * 16 + (flops.dense_macs - before) * 8 + 3 * after * 4
    assert flops.epoch(before, 20, 8, [(2, moved)], dense_gradient=True) == 2 * expected
    assert flops.epoch(before, 20, 8, [(2, moved)], dense_gradient=False) == 2 * (
        3 * before * 16 + 3 * after * 4
    )
