"""N:M semi-structured sparsity (pruning/nm.py): any ranking criterion keeps at most N of every M
consecutive weights along each layer's inputs, at the schedule's exact sparsity when its prune
removes at least what the constraint forces; mistakes are one line and exit 2."""

import json

import pytest
import torch
from torch import nn

import main
from cli import parse_args
from models import build_model
from pruning import NM, Criterion, Periodic, Pruner, SynFlow, build_criterion
from pruning.registry import method_label
from record import identity_defaults
from tests.support.runs import assert_one_error_line, only_run_dir, quick

CONSTRAINED_CRITERIA = ["flipout", "global_magnitude", "magnitude", "random", "snip", "grasp"]
FIRST = "0.weight"  # the tiny net's first convolution, left out of the constraint


def tiny_net() -> nn.Module:
    """A conv net whose every layer a 2:4 divides: 4 input channels, then 8, 32 and 16 inputs."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(4, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(32, 16),
        nn.ReLU(),
        nn.Linear(16, 4),
    )


def batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(1)
    return [(torch.randn(8, 4, 6, 6, generator=generator), torch.arange(8) % 4)]


def nm_pruner(criterion="global_magnitude", **kwargs) -> Pruner:
    return Pruner(
        tiny_net(),
        build_criterion(criterion) if isinstance(criterion, str) else criterion,
        Periodic(rate=0.5, every=1),
        data=batches(),
        nm="2:4",
        nm_exclude=[FIRST],
        **kwargs,
    )


def most_live_in_a_group(nm: NM, mask: torch.Tensor) -> int:
    return int(nm.groups(mask).sum(-1).max())


def constrained_counts(pruner: Pruner) -> dict[str, int]:
    """The most live weights in any group of M, per tensor."""
    return {name: most_live_in_a_group(pruner.nm, mask) for name, mask in pruner.masks.items()}


# -- the constraint ---------------------------------------------------------------------------


def test_n_m_is_parsed_checked_and_written_back():
    assert NM.parse("2:4") == NM(2, 4) and str(NM.parse(" 1 : 8 ")) == "1:8"
    assert NM(2, 4).sparsity_floor == 0.5
    for text in ("2-4", "2:", "a:b", "2:4:8", ""):
        with pytest.raises(ValueError, match="expected N:M such as 2:4"):
            NM.parse(text)
    for n, m in ((4, 2), (4, 4), (0, 4), (2, 65)):
        with pytest.raises(ValueError, match="1 <= N < M <= 64"):
            NM(n, m)


def test_groups_run_along_the_inputs_at_each_kernel_position():
    nm = NM(1, 4)
    conv = torch.arange(2 * 8 * 3 * 3).reshape(2, 8, 3, 3)
    grouped = nm.groups(conv)
    assert grouped.shape == (2, 3, 3, 2, 4)
    # one group: four consecutive input channels at one output channel and kernel position
    assert grouped[1, 2, 0, 1].tolist() == conv[1, 4:8, 2, 0].tolist()
    assert torch.equal(nm.ungroup(grouped, conv.shape), conv)
    linear = torch.arange(3 * 8).reshape(3, 8)
    assert nm.groups(linear)[2, 1].tolist() == linear[2, 4:8].tolist()
    assert torch.equal(nm.ungroup(nm.groups(linear), linear.shape), linear)


def test_the_excess_is_every_live_weight_beyond_the_n_best_live_ones():
    nm = NM(2, 4)
    scores = {"w": torch.tensor([[3.0, 1.0, 2.0, 0.0, 5.0, 5.0, 5.0, 5.0, 9.0, 1.0, 8.0, 7.0]])}
    live = torch.tensor(
        [[True, True, True, True, True, True, True, True, False, True, True, False]]
    )
    excess = nm.excess(scores, {"w": live})["w"][0].tolist()
    # the two highest stay; among equal scores the first; dead weights are neither kept nor excess
    assert excess == [False, True, False, True, False, False, True, True,
                      False, False, False, False]  # fmt: skip
    # 1-D tensors are never constrained; excluded ones are left out
    scores["b"] = torch.ones(8)
    assert set(nm.excess(scores, {"w": live, "b": torch.ones(8, dtype=torch.bool)})) == {"w"}
    assert nm.excess(scores, {"w": live}, exclude=["w"]) == {}


# -- with every ranking criterion -------------------------------------------------------------


@pytest.mark.parametrize("criterion", [*CONSTRAINED_CRITERIA, "synflow"])
def test_every_ranking_criterion_keeps_at_most_n_of_m_at_the_exact_sparsity(criterion):
    if criterion == "synflow":
        criterion = SynFlow(iterations=4)  # its rounds rescore: four are enough here
    pruner = nm_pruner(criterion)
    total = pruner.masks.num_total
    before = {name: mask.clone() for name, mask in pruner.masks.items()}
    for sparsity in (0.7, 0.9):
        event = pruner.prune(sparsity=sparsity)
        assert event.live == round((1 - sparsity) * total)  # more than the constraint forced
        assert pruner.nm.satisfied(pruner.masks, [FIRST])
        counts = constrained_counts(pruner)
        assert all(counts[name] <= 2 for name in counts if name != FIRST), counts
        for name, mask in pruner.masks.items():  # no weight is revived
            assert not bool((mask & ~before[name]).any()), name
            before[name] = mask.clone()


@pytest.mark.parametrize("criterion", ["global_magnitude", "magnitude"])
def test_a_prune_smaller_than_the_constraint_also_removes_what_it_forces(criterion):
    pruner = nm_pruner(criterion)
    sizes = {name: mask.numel() for name, mask in pruner.masks.items()}
    forced = sum(size for name, size in sizes.items() if name != FIRST) // 2
    event = pruner.prune(sparsity=0.1)
    assert event.pruned >= forced and event.sparsity > 0.1
    layers = pruner.masks.layer_sparsity()
    for name in sizes:
        if name != FIRST:
            assert layers[name] == 0.5, name  # exactly the forced half: dense before
    if criterion == "global_magnitude":
        # the forced weights fill the global count first: nothing else goes
        assert event.pruned == forced and layers[FIRST] == 0.0
        assert most_live_in_a_group(pruner.nm, pruner.masks[FIRST]) == 4  # left unconstrained
    else:
        # each layer removes its own share or what is forced there, whichever is more
        assert layers[FIRST] == pytest.approx(0.1, abs=1 / sizes[FIRST])


def test_scheduled_prunes_keep_the_constraint_and_revive_nothing():
    pruner = nm_pruner("flipout")
    pruner.before_training()
    for epoch in range(1, 5):
        before = {name: mask.clone() for name, mask in pruner.masks.items()}
        pruner.end_of_epoch(epoch)
        assert pruner.nm.satisfied(pruner.masks, [FIRST])
        assert all(bool((before[name] >= mask).all()) for name, mask in pruner.masks.items())
    # periodic at rate 0.5: the first prune removes as many as the constraint forces, or more
    assert [event.sparsity for event in pruner.events] == pytest.approx(
        [1 - 0.5**k for k in range(1, 5)], abs=1e-3
    )


def test_a_criterion_that_ignores_the_constraint_is_caught_before_it_prunes():
    class Stubborn(Criterion):
        def select(self, inputs, step):
            return {name: torch.zeros_like(m) for name, m in inputs.masks.items()}

    pruner = nm_pruner(Stubborn())
    with pytest.raises(RuntimeError, match="Stubborn chose weights that leave more than 2:4"):
        pruner.prune(sparsity=0.5)
    assert pruner.masks.num_live == pruner.masks.num_total


def test_the_library_refuses_what_cannot_hold_in_one_line():
    lenet5 = build_model("lenet5")
    with pytest.raises(ValueError, match=r"0\.weight has 3 input channels, not a multiple of 4; "
                       r"leave it out with nm_exclude=\['0\.weight'\]"):  # fmt: skip
        Pruner(lenet5, "flipout", nm="2:4")
    with pytest.raises(ValueError, match=r"3\.weight has 6 input channels"):
        Pruner(lenet5, "flipout", nm="2:4", nm_exclude=["0.weight"])
    with pytest.raises(ValueError, match=r"7\.weight has 400 inputs, not a multiple of 32"):
        Pruner(lenet5, "flipout", nm="1:32", nm_exclude=["0.weight", "3.weight"])
    with pytest.raises(ValueError, match=r"nm_exclude 0\.bias: no prunable tensor .* 0\.weight"):
        Pruner(lenet5, "flipout", nm="2:4", nm_exclude=["0.bias"])
    with pytest.raises(ValueError, match="Threshold decides by itself which weights go: nm 2:4"):
        Pruner(lenet5, "threshold", nm="2:4")
    with pytest.raises(ValueError, match="Dense prunes nothing: nm 2:4"):
        Pruner(lenet5, "none", nm="2:4")
    with pytest.raises(ValueError, match="nm_exclude leaves tensors out"):
        Pruner(lenet5, "flipout", nm_exclude=["0.weight"])
    # lenet5 runs 2:4 with its two small convolutions left out
    pruner = Pruner(lenet5, "flipout", nm=NM(2, 4), nm_exclude=["0.weight", "3.weight"])
    assert pruner.summary()["nm"] == "2:4"
    assert pruner.summary()["nm_exclude"] == ["0.weight", "3.weight"]
    assert "nm" not in Pruner(lenet5, "flipout").summary()


# -- the command line -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "names"),
    [
        (["--nm", "2-4"], ["--nm", "expected N:M such as 2:4, got '2-4'"]),
        (["--nm", "4:2"], ["--nm", "1 <= N < M"]),
        (
            ["--nm", "2:8"],
            ["3.weight has 300 inputs, not a multiple of 8", "--nm_exclude 3.weight"],
        ),
        (["--nm", "2:4", "--nm_exclude", "3.bias"], ["--nm_exclude 3.bias", "1.weight"]),
        (["--nm", "2:4", "--prune_criterion", "threshold"], ["--nm 2:4", "threshold"]),
        (["--nm", "2:4", "--prune_criterion", "none"], ["--nm 2:4", "prunes nothing"]),
    ],
)
def test_command_line_mistakes_are_one_line_and_exit_2(tmp_path, capsys, argv, names):
    assert main.main(quick(tmp_path, "-e", "2", "--limit_batches", "1", *argv)) == 2
    assert_one_error_line(capsys, *names)
    assert not (tmp_path / "runs").exists()


def test_nm_exclude_without_nm_is_warned_about(capsys):
    parse_args(["--nm_exclude", "1.weight"])
    assert "--nm_exclude has no effect without --nm" in capsys.readouterr().err


def test_a_run_with_nm_records_it_and_saves_n_of_m_masks(tmp_path):
    argv = quick(tmp_path, "-e", "3", "--limit_batches", "2", "--prune_freq", "1", "--nm", "2:4",
                 "--save_model")  # fmt: skip
    assert main.main(argv) == 0
    run_dir = only_run_dir(tmp_path / "runs")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (summary["nm"], summary["nm_exclude"]) == ("2:4", [])
    assert summary["options"]["nm"] == "2:4"
    # the summary names the method as the report does, with how the run departs from the
    # paper's FlipOut, which trains with noise
    assert summary["method"] == "FlipOut 2:4 (no noise)"
    assert method_label(summary["prune_criterion"], summary["options"]) == summary["method"]
    # periodic at rate 0.5 after epochs 1 and 2: the first prune is exactly what 2:4 forces
    assert summary["final_sparsity"] == pytest.approx(0.75, abs=1e-3)
    masks = torch.load(run_dir / "model.pt", weights_only=True)["masks"]
    assert NM(2, 4).satisfied(masks)
    assert max(most_live_in_a_group(NM(2, 4), m) for m in masks.values() if m.dim() == 2) == 2
    # a resume, and a sweep's identity of a run, see the constraint
    assert parse_args(["--resume", str(run_dir)]).prune.nm == "2:4"
    assert {"nm", "nm_exclude"} <= set(identity_defaults())
