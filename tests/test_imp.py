"""Iterative magnitude pruning with rewinding (Frankle & Carbin, 2019; Frankle et al., 2020):
the Rounds schedule, the rewind itself, the run's rounds in its summary, resuming mid-round, and
`--imp_optimizer fresh`, open_lth's new optimizer for every round."""

import signal

import pytest
import torch
from torch import nn

import main
from pruning import Pruner
from pruning.schedule import Rounds
from tests.support.runs import assert_one_error_line, quick, records, summary
from utils.stop import Interrupted

IMP = ["--prune_criterion", "imp", "--rounds", "3", "--rewind_epoch", "1", "-e", "3"]


def test_rounds_replay_the_epochs_after_the_rewind_point():
    rounds = Rounds(rate=0.2, rounds=3, rewind_epoch=1, epochs=3)
    assert rounds.round_ends() == [3, 5, 7] and rounds.total_epochs() == 7
    assert [rounds.training_epoch(e) for e in range(1, 8)] == [1, 2, 3, 2, 3, 2, 3]
    assert rounds.epochs_pruned() == [3, 5]  # the last round is not pruned
    assert rounds.final_sparsity() == pytest.approx(1 - 0.8**2)
    with pytest.raises(ValueError, match="rewind_epoch 3 must be before the end of a round"):
        Rounds(rewind_epoch=3, epochs=3)


def train_epoch(model, optimizer, pruner, data, epoch: int) -> None:
    for inputs, targets in zip(*data, strict=True):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(inputs), targets).backward()
        pruner.after_backward(epoch)
        optimizer.step()
        pruner.after_step()


@pytest.mark.parametrize("rewind_epoch", [0, 1])
def test_after_rewinding_the_live_weights_are_the_saved_early_weights(rewind_epoch):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 4))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    schedule = Rounds(rate=0.5, rounds=2, rewind_epoch=rewind_epoch, epochs=3)
    pruner = Pruner(model, "imp", schedule)
    pruner.attach_optimizer(optimizer)
    data = torch.randn(6, 16, 8), torch.randint(4, (6, 16))
    pruner.before_training()
    early = {name: p.detach().clone() for name, p in model.named_parameters()}
    early_momentum = {}
    for epoch in range(1, 4):
        train_epoch(model, optimizer, pruner, data, epoch)
        if epoch == rewind_epoch:
            early = {name: p.detach().clone() for name, p in model.named_parameters()}
            early_momentum = {
                name: optimizer.state[p]["momentum_buffer"].clone()
                for name, p in model.named_parameters()
            }
        event = pruner.end_of_epoch(epoch)
    assert event.epoch == 3 and event.rewound_to == rewind_epoch
    assert pruner.masks.num_live == pruner.masks.num_total // 2
    for name, p in model.named_parameters():
        mask = pruner.masks[name] if name in pruner.params else torch.ones_like(p, dtype=bool)
        assert torch.equal(p.detach()[mask], early[name][mask]), name  # exactly, bit for bit
        assert not p.detach()[~mask].any(), name  # pruned weights are zero
        momentum = optimizer.state[p].get("momentum_buffer")
        if rewind_epoch == 0:
            assert momentum is None  # the optimizer as it was before the first step
        else:
            assert torch.equal(momentum[mask], early_momentum[name][mask]), name
            assert not momentum[~mask].any(), name


@pytest.mark.parametrize("rewind_epoch", [0, 1])
def test_a_fresh_optimizer_is_empty_at_the_rewind_epoch_and_after_every_rewind(rewind_epoch):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 4))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    schedule = Rounds(
        rate=0.5, rounds=2, rewind_epoch=rewind_epoch, epochs=3, optimizer_at_rewind="fresh"
    )
    pruner = Pruner(model, "imp", schedule)
    pruner.attach_optimizer(optimizer)
    data = torch.randn(6, 16, 8), torch.randint(4, (6, 16))
    pruner.before_training()
    early = {name: p.detach().clone() for name, p in model.named_parameters()}
    for epoch in range(1, 4):
        train_epoch(model, optimizer, pruner, data, epoch)
        assert len(optimizer.state) == len(early)  # Adam's moments and step, every tensor
        event = pruner.end_of_epoch(epoch)
        if epoch == rewind_epoch:
            early = {name: p.detach().clone() for name, p in model.named_parameters()}
            assert len(optimizer.state) == 0  # round 1 goes on with a new optimizer too
    assert event.rewound_to == rewind_epoch
    assert len(optimizer.state) == 0  # round 2 starts with a new optimizer
    for name, p in model.named_parameters():
        mask = pruner.masks[name] if name in pruner.params else torch.ones_like(p, dtype=bool)
        assert torch.equal(p.detach()[mask], early[name][mask]), name


def test_imp_optimizer_takes_rewind_or_fresh(tmp_path, capsys):
    assert Rounds(epochs=3).optimizer_at_rewind == "rewind"
    with pytest.raises(ValueError, match="optimizer_at_rewind must be 'rewind' or 'fresh'"):
        Rounds(epochs=3, optimizer_at_rewind="new")
    assert main.main(quick(tmp_path, *IMP, "--imp_optimizer", "new")) == 2
    assert "choose rewind or fresh" in assert_one_error_line(capsys, "--imp_optimizer")
    assert not (tmp_path / "runs").exists()


def test_imp_from_the_command_line_records_every_round(tmp_path, capsys):
    argv = quick(tmp_path, *IMP, "--limit_batches", "3", "--use_scheduler", "--milestones", "2")
    assert main.main([*argv, "--run_dir", str(tmp_path / "imp")]) == 0
    imp = summary(tmp_path / "imp")
    assert imp["method"] == "IMP (rewind to epoch 1)" and imp["epochs"] == 7
    assert [r["round"] for r in imp["rounds"]] == [1, 2, 3]
    assert [r["last_epoch"] for r in imp["rounds"]] == [3, 5, 7]
    assert [r["sparsity"] for r in imp["rounds"]] == pytest.approx([0, 0.5, 0.75], abs=1e-5)
    assert [e["rewound_to"] for e in imp["prune_events"]] == [1, 1]
    # the learning-rate schedule is rewound too: epoch 3 of each round gets the milestone's drop
    lrs = [r["lr"] for r in records(tmp_path / "imp")]
    assert lrs == pytest.approx([0.1, 0.1, 0.01, 0.1, 0.01, 0.1, 0.01])
    out = capsys.readouterr().out
    assert "round 2/3 ends" in out and "rewound to epoch 1" in out


@pytest.mark.parametrize("imp_optimizer", ["rewind", "fresh"])
def test_each_round_starts_from_the_rewind_epochs_optimizer_or_a_fresh_one(
    tmp_path, monkeypatch, imp_optimizer
):
    argv = quick(tmp_path, *IMP, "--limit_batches", "3", "--use_scheduler", "--milestones", "2")
    run_dir = tmp_path / imp_optimizer
    momentum, masks = {}, {}  # epoch -> as the epoch begins, by weight name
    real_run_epoch = main.run_epoch

    def watch(epoch, run):
        model, optimizer, pruner = run.model, run.optimizer, run.pruner
        names = {id(p): name for name, p in model.named_parameters()}
        momentum[epoch] = {
            names[id(p)]: state["momentum_buffer"].clone() for p, state in optimizer.state.items()
        }
        masks[epoch] = {name: mask.clone() for name, mask in pruner.masks.items()}
        return real_run_epoch(epoch, run)

    monkeypatch.setattr(main, "run_epoch", watch)
    flags = ["--imp_optimizer", imp_optimizer, "--run_dir", str(run_dir)]
    assert main.main([*argv, *flags]) == 0
    fresh = ", fresh optimizer" if imp_optimizer == "fresh" else ""
    assert summary(run_dir)["method"] == f"IMP (rewind to epoch 1{fresh})"
    # the learning-rate schedule is rewound in both
    lrs = [r["lr"] for r in records(run_dir)]
    assert lrs == pytest.approx([0.1, 0.1, 0.01, 0.1, 0.01, 0.1, 0.01])
    assert momentum[3] and momentum[5]  # built up within each round
    # epoch 2 follows the rewind epoch in round 1; epochs 4 and 6 begin rounds 2 and 3
    if imp_optimizer == "fresh":
        assert momentum[2] == momentum[4] == momentum[6] == {}  # as a new torch.optim.SGD
        return
    for epoch in (4, 6):
        assert momentum[epoch].keys() == momentum[2].keys()
        for name, buffer in momentum[epoch].items():
            live = masks[epoch].get(name, torch.ones_like(buffer, dtype=torch.bool))
            assert torch.equal(buffer[live], momentum[2][name][live]), name
            assert not buffer[~live].any(), name


@pytest.mark.parametrize("extra", [[], ["--imp_optimizer", "fresh"]], ids=["rewind", "fresh"])
def test_imp_resumed_mid_round_equals_an_uninterrupted_run(tmp_path, monkeypatch, extra):
    argv = quick(tmp_path, *IMP, "--limit_batches", "3", *extra)
    assert main.main([*argv, "--run_dir", str(tmp_path / "reference")]) == 0

    real_run_epoch = main.run_epoch

    def stop_at_epoch_5(epoch, *args, **kwargs):
        if epoch == 5:  # in round 2, after the rewind at the end of epoch 3
            raise Interrupted(signal.SIGTERM)
        return real_run_epoch(epoch, *args, **kwargs)

    monkeypatch.setattr(main, "run_epoch", stop_at_epoch_5)
    assert main.main([*argv, "--run_dir", str(tmp_path / "resumed")]) == 143
    monkeypatch.setattr(main, "run_epoch", real_run_epoch)
    assert main.main(["--resume", str(tmp_path / "resumed"), "--quiet"]) == 0

    assert records(tmp_path / "resumed") == records(tmp_path / "reference")
    ours = torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=True)
    theirs = torch.load(tmp_path / "reference" / "checkpoint.pt", weights_only=True)
    for name, value in theirs["model"].items():
        assert torch.equal(ours["model"][name], value), name
    for name, value in theirs["pruner"]["rewind_point"]["model"].items():
        assert torch.equal(ours["pruner"]["rewind_point"]["model"][name], value), name
    assert ours["optimizer"]["state"].keys() == theirs["optimizer"]["state"].keys()
    for index, state in theirs["optimizer"]["state"].items():
        for key, value in state.items():
            assert torch.equal(ours["optimizer"]["state"][index][key], value), (index, key)
    assert summary(tmp_path / "resumed")["rounds"] == summary(tmp_path / "reference")["rounds"]
