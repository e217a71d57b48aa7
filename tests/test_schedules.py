"""Schedules as objects: periodic, one-shot and gradual (Zhu & Gupta, 2017) reach their targets
exactly, with any ranking criterion, from the library and from the command line; criteria declare
their own options, and the command line, its checks and the report follow from the class."""

import json
from dataclasses import dataclass

import pytest
import torch
from torch import nn

import main
from cli import build_parser, parse_args
from pruning import CRITERIA, Criterion, Gradual, OneShot, Pruner
from pruning.options import option
from pruning.registry import method_label
from pruning.schedule import Step
from tests.support.runs import only_run_dir, quick
from utils.errors import UserError

RANKING = ["flipout", "global_magnitude", "magnitude", "random"]


def net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    # layer sizes that do not divide evenly, so that rounding has to be shared out
    return nn.Sequential(nn.Linear(37, 101), nn.ReLU(), nn.Linear(101, 13), nn.Linear(13, 7))


def test_gradual_follows_the_cubic_curve_to_its_target():
    schedule = Gradual(sparsity=0.9, start=2, end=10, every=2, epochs=20)
    assert schedule.epochs_pruned() == [4, 6, 8, 10]  # s(2) = s_i = 0 prunes nothing
    for epoch in (4, 6, 8, 10):
        fraction = (epoch - 2) / 8
        assert schedule.step(epoch).sparsity == pytest.approx(0.9 * (1 - (1 - fraction) ** 3))
    assert schedule.step(10).sparsity == 0.9
    assert schedule.step(11) is None and schedule.step(3) is None
    # an end that is not on the beat is still a prune, the last
    assert Gradual(sparsity=0.5, start=0, end=5, every=2, epochs=9).epochs_pruned() == [2, 4, 5]
    assert Gradual(sparsity=0.5, epochs=10).end == 5  # default: half of training


@pytest.mark.parametrize("criterion", RANKING)
@pytest.mark.parametrize("target", [0.95, 0.9, 0.5001])
def test_gradual_ends_at_exactly_its_target(criterion, target):
    model = net()
    pruner = Pruner(model, criterion, Gradual(sparsity=target, start=0, end=6, every=2, epochs=8))
    total = pruner.masks.num_total
    live_before = total
    for epoch in range(1, 9):
        pruner.end_of_epoch(epoch)
        assert pruner.masks.num_live <= live_before  # never revives a weight
        live_before = pruner.masks.num_live
    assert pruner.masks.num_live == round((1 - target) * total)
    assert [event.epoch for event in pruner.events] == [2, 4, 6]
    if CRITERIA[criterion].scope == "layer":  # every layer at the target, to the weight
        for name, (live, size) in pruner.masks.live_counts().items():
            assert abs(live - (1 - target) * size) < 1, name


@pytest.mark.parametrize("criterion", RANKING)
@pytest.mark.parametrize("epoch", [0, 3])
def test_oneshot_prunes_once_to_its_target(criterion, epoch):
    pruner = Pruner(net(), criterion, OneShot(sparsity=0.8, epoch=epoch, epochs=6))
    event = pruner.before_training()
    for e in range(1, 7):
        event = pruner.end_of_epoch(e) or event
    assert [e.epoch for e in pruner.events] == [epoch]
    assert pruner.masks.num_live == round(0.2 * pruner.masks.num_total)


def test_layer_shares_add_up_exactly():
    counts = {"a": (1000, 1000), "b": (7, 7), "c": (333, 333)}
    removals = Step(sparsity=0.95).layer_removals(counts)
    kept = sum(live - removals[name] for name, (live, _) in counts.items())
    assert kept == round(0.05 * 1340)
    assert Step(rate=0.5).layer_removals(counts) == {"a": 500, "b": 3, "c": 166}


def test_prune_now_outside_the_schedule():
    pruner = Pruner(net(), "global_magnitude")
    pruner.prune(sparsity=0.9)
    assert pruner.masks.num_live == round(0.1 * pruner.masks.num_total)
    with pytest.raises(ValueError, match="either sparsity or rate"):
        pruner.prune()


def test_threshold_cannot_aim_at_a_sparsity():
    with pytest.raises(ValueError, match="periodic"):
        Pruner(net(), "threshold", Gradual(sparsity=0.9, epochs=10))


def test_library_options_are_checked_by_the_flag_parsers():
    with pytest.raises(ValueError, match="p must be greater than 0"):
        CRITERIA["flipout"](p=0)
    with pytest.raises(ValueError, match="end 9 must be before the last epoch"):
        Gradual(sparsity=0.9, end=9, epochs=9)
    with pytest.raises(ValueError, match="sparsity must be less than 1"):
        OneShot(sparsity=1.0)


# -- the command line ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--schedule", "gradual"], "--schedule gradual: --target_sparsity is required"),
        (["--schedule", "oneshot", "--target_sparsity", "0.9", "--prune_start", "20"],
         "--prune_start 20 must be before the last epoch (20)"),
        (["--schedule", "gradual", "--target_sparsity", "0.9", "--prune_end", "3",
          "--prune_start", "5"], "--prune_end 3 is before --prune_start 5"),
        (["--prune_criterion", "threshold", "--schedule", "gradual", "--target_sparsity", "0.9"],
         "runs on --schedule periodic"),
        (["--prune_criterion", "snip"], "--snip_sparsity (e.g. 0.999)"),
        (["--flipout_p", "0"], "--flipout_p: must be greater than 0"),
    ],
)  # fmt: skip
def test_bad_pruning_options_end_in_one_line(argv, message):
    with pytest.raises(UserError) as error:
        parse_args(argv)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_gradual_run_from_the_command_line_ends_at_exactly_95_percent(tmp_path):
    argv = quick(tmp_path, "-e", "4", "--limit_batches", "2", "--schedule", "gradual",
                 "--target_sparsity", "0.95", "--prune_start", "0", "--prune_end", "3",
                 "--prune_freq", "1")  # fmt: skip
    assert main.main(argv) == 0
    summary = json.loads((only_run_dir(tmp_path / "runs") / "summary.json").read_text())
    assert f"{100 * summary['final_sparsity']:.2f}" == "95.00"
    assert [e["epoch"] for e in summary["prune_events"]] == [1, 2, 3]
    assert summary["schedule"]["name"] == "gradual"
    assert summary["criterion"] == {"name": "flipout", "label": "FlipOut", "flipout_p": 2.0}
    # another schedule, another method; without the paper's noise, said as the report says it
    assert summary["method"] == "FlipOut (gradual) (no noise)"


def test_help_lists_every_criterion_and_schedule_flag_with_its_default():
    text = build_parser().format_help()
    for flag in (
        "--flipout_p",
        "--magnitude_threshold",
        "--snip_sparsity",
        "--snip_batches",
        "--prune_rate",
        "--prune_freq",
        "--stop_pruning_at",
        "--target_sparsity",
        "--prune_start",
        "--prune_end",
        "--start_sparsity",
        "--schedule",
        "--init_from",
    ):
        assert flag in text, flag  # fmt: skip
    assert "FlipOut score |w|^p / (flips + 1) (default: 2.0)" in " ".join(text.split())


@dataclass
class Lowest(Criterion):
    """A criterion a researcher adds: its class, with an option of its own, and a registry line."""

    power: float = option("lowest_power", float, 1.0, "score |w|^power")

    label = "Lowest power"

    def scores(self, inputs):
        return {name: w.detach().abs() ** self.power for name, w in inputs.params.items()}


def test_a_new_criterion_touches_its_class_and_one_registry_line(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(CRITERIA, "lowest", Lowest)
    args = parse_args(["--prune_criterion", "lowest", "--lowest_power", "3"])
    assert args.prune.components["lowest_power"] == 3.0
    assert "--lowest_power" in build_parser().format_help()
    parse_args(["--lowest_power", "3"])  # with another criterion: said to do nothing
    assert "--lowest_power has no effect unless --prune_criterion lowest" in capsys.readouterr().err
    argv = quick(tmp_path, "-e", "3", "--limit_batches", "2", "--prune_freq", "1",
                 "--prune_criterion", "lowest", "--lowest_power", "3")  # fmt: skip
    assert main.main(argv) == 0
    summary = json.loads((only_run_dir(tmp_path / "runs") / "summary.json").read_text())
    assert summary["criterion"] == {"name": "lowest", "label": "Lowest power", "lowest_power": 3.0}
    assert method_label(summary["prune_criterion"], summary["options"]) == "Lowest power"


def test_a_gradient_criterion_scores_afresh_at_every_scheduled_prune(tmp_path):
    """SNIP on the periodic schedule: each prune takes its training batches from the run's
    loader through PruneInputs, with no change to the loop."""
    argv = quick(tmp_path, "-e", "4", "--limit_batches", "2", "--prune_criterion", "snip",
                 "--schedule", "periodic", "--prune_freq", "1", "--prune_rate", "0.5")  # fmt: skip
    assert main.main(argv) == 0
    summary = json.loads((only_run_dir(tmp_path / "runs") / "summary.json").read_text())
    assert [e["epoch"] for e in summary["prune_events"]] == [1, 2, 3]
    assert summary["final_sparsity"] == pytest.approx(0.875, abs=1e-3)


def test_a_criterion_receives_the_model_and_its_batches(monkeypatch):
    seen = []

    @dataclass
    class Probe(Criterion):
        label = "Probe"

        def batches_needed(self):
            return 2

        def scores(self, inputs):
            seen.append((inputs.model, len(inputs.batches), set(inputs.flip_counts)))
            return {name: w.detach().abs() for name, w in inputs.params.items()}

    model = net()
    data = [(torch.randn(4, 37), torch.randint(7, (4,))) for _ in range(3)]
    pruner = Pruner(model, Probe(), OneShot(sparsity=0.5), data=data)
    pruner.before_training()
    assert seen == [(model, 2, set(pruner.params))]
    with pytest.raises(ValueError, match="give the Pruner data="):
        Pruner(model, Probe(), OneShot(sparsity=0.5)).before_training()


def test_layer_shares_stay_exact_when_a_layer_is_already_sparser():
    counts = {"a": (10, 100), "b": (100, 100)}  # a at 90%, b dense; target 50% of 200
    removals = Step(sparsity=0.5).layer_removals(counts)
    assert removals == {"a": 0, "b": 10}


def test_a_pruner_that_should_have_pruned_before_training_says_so():
    pruner = Pruner(net(), "global_magnitude", OneShot(sparsity=0.5))
    with pytest.raises(RuntimeError, match="before_training"):
        pruner.end_of_epoch()


def test_snip_options_and_schedule_flags_warn_when_the_other_decides(capsys):
    parse_args(["--prune_criterion", "snip", "--snip_sparsity", "0.9", "--target_sparsity", "0.5"])
    assert "--target_sparsity has no effect with --prune_criterion snip" in capsys.readouterr().err
    parse_args(["--prune_criterion", "snip", "--snip_sparsity", "0.9", "--schedule", "oneshot",
                "--target_sparsity", "0.5"])  # fmt: skip
    assert "--snip_sparsity has no effect with --schedule oneshot" in capsys.readouterr().err
    parse_args(["--prune_criterion", "none", "--schedule", "gradual"])
    assert "--schedule has no effect with --prune_criterion none" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("criterion", "method"), [("snip", "SNIP"), ("synflow", "SynFlow"), ("grasp", "GraSP")]
)
def test_criteria_at_initialisation_prune_once_before_training(tmp_path, criterion, method):
    run_dir = tmp_path / "r"
    argv = quick(tmp_path, "-e", "2", "--limit_batches", "2", "--prune_criterion", criterion,
                 "--init_sparsity", "0.9")  # fmt: skip
    assert main.main([*argv, "--run_dir", str(run_dir)]) == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["final_sparsity"] == pytest.approx(0.9, abs=1e-6)
    assert [event["epoch"] for event in summary["prune_events"]] == [0]
    assert summary["method"] == method
