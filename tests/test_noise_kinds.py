"""FlipOut's noise beyond SGD (docs/noise.md): the kinds of Noise ("gradient", the paper's;
"update"; "second_moment") under each optimizer, in your own loop and on the command line, and the
measurements of --log_mechanism (pruning/mechanism.py)."""

import io
import json
import math

import pytest
import torch
import torch.nn.functional as F
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

import main
from pruning import FlipOut, Noise, Periodic, Pruner
from pruning.noise import NOISES, GradientNoise, MomentNoise, UpdateNoise
from tests.support.runs import (
    assert_identical,
    assert_one_error_line,
    assert_resumed_equals_straight,
    quick,
    quick_run,
    records,
    stopped_in_epoch,
)

KINDS = ("gradient", "update", "second_moment")
OPTIMIZERS = {
    "sgd": lambda params: torch.optim.SGD(params, lr=0.05),
    "momentum": lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=5e-4),
    "adam": lambda params: torch.optim.Adam(params, lr=1e-2),
    "adamw": lambda params: torch.optim.AdamW(params, lr=1e-2, weight_decay=5e-2),
}


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(6, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 3)
    )


def trained(kind: str, opt: str, steps: int, state: dict | None = None, seed: int = 0):
    """A FlipOut Pruner with `kind` noise, half the live weights pruned every 3 steps (an epoch
    of 3 steps), after `steps` steps from the start or from `state` (model, optimizer, pruner)."""
    model = mlp()
    pruner = Pruner(model, FlipOut(), Periodic(rate=0.5, every=1), noise=Noise(kind=kind), seed=1)
    optimizer = OPTIMIZERS[opt](model.parameters())
    pruner.attach_optimizer(optimizer)
    done = 0
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        pruner.load_state_dict(state["pruner"])
        done = state["steps"]
    batches = torch.Generator().manual_seed(seed)
    for step in range(steps):
        inputs, targets = torch.randn(16, 6, generator=batches), torch.randint(0, 3, (16,))
        if step < done:
            continue  # the batches of the steps already taken, drawn all the same
        optimizer.zero_grad()
        F.cross_entropy(model(inputs), targets).backward()
        pruner.after_backward()
        optimizer.step()
        pruner.after_step()
        if (step + 1) % 3 == 0:
            pruner.end_of_epoch()
    return model, optimizer, pruner


@pytest.mark.parametrize("opt", sorted(OPTIMIZERS))
@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_keeps_the_sparsity_exact_and_pruned_weights_zero(kind, opt):
    _, _, pruner = trained(kind, opt, 9)
    total = pruner.masks.num_total
    live = total
    for _ in range(3):
        live -= round(live * 0.5)  # each prune removes half of those live, counted exactly
    assert pruner.masks.num_live == live
    for name, p in pruner.params.items():
        assert torch.all(p[~pruner.masks[name]] == 0), name
        assert torch.isfinite(p).all()
    assert isinstance(pruner.noise, NOISES[kind])


@pytest.mark.parametrize("kind", KINDS)
def test_a_resumed_pruner_goes_on_as_a_straight_one_to_the_bit(kind):
    model, optimizer, pruner = trained(kind, "adamw", 4)
    state = {
        "model": {k: v.clone() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "pruner": pruner.state_dict(),
        "steps": 4,
    }
    state = torch.load(_saved(state), weights_only=True)  # through a file, as a checkpoint
    resumed = trained(kind, "adamw", 8, state)
    straight = trained(kind, "adamw", 8)
    for ours, theirs in zip(resumed, straight, strict=True):
        assert_identical(ours.state_dict(), theirs.state_dict())


def _saved(state: dict):
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return buffer


def test_the_default_noise_is_the_papers():
    assert Noise().kind == "gradient"
    pruner = Pruner(mlp(), FlipOut(), noise=Noise())
    assert type(pruner.noise) is GradientNoise


def test_an_unknown_kind_is_refused_naming_the_field():
    with pytest.raises(ValueError, match=r"Noise\.kind must be 'gradient' or 'update' or"):
        Noise(kind="weights")


@pytest.mark.parametrize("scale", [1.0, 0.3])
def test_update_noise_has_the_std_of_the_steps_rms_times_the_scale(scale):
    big, small = nn.Parameter(torch.randn(200_000)), nn.Parameter(torch.randn(50_000))
    noise = UpdateNoise([big, small], scale, seed=3)
    noise.before_step()
    steps = [torch.randn(200_000) * 0.01, torch.randn(50_000) * 3.0]  # one RMS per tensor
    with torch.no_grad():
        for p, step in zip((big, small), steps, strict=True):
            p.add_(step)
    stepped = [big.detach().clone(), small.detach().clone()]
    noise.add()
    for p, step, before in zip((big, small), steps, stepped, strict=True):
        expected = float(step.norm()) / math.sqrt(step.numel()) * scale
        assert float((p.detach() - before).double().std()) == pytest.approx(expected, rel=0.02)


def test_update_noise_never_reaches_pruned_weights_under_any_optimizer():
    p = nn.Parameter(torch.randn(1000))
    mask = torch.arange(1000) % 3 != 0
    with torch.no_grad():
        p.mul_(mask)
    noise = UpdateNoise([p], 1.0, seed=0, masks=[mask])
    noise.before_step()
    with torch.no_grad():
        p.add_(0.1)  # an optimizer that moves every weight, pruned ones too
    noise.add()
    assert torch.all(p[~mask] == 0)


def test_second_moment_noise_follows_each_coordinates_gradient_rms():
    p = nn.Parameter(torch.zeros(3, 40_000))
    scales = torch.tensor([[0.0], [1.0], [10.0]])  # a coordinate's gradient: its row's scale
    noise = MomentNoise([p], 0.5, seed=0)
    generator = torch.Generator().manual_seed(0)
    for _ in range(3):
        true = torch.randn(3, 40_000, generator=generator) * scales
        p.grad = true.clone()
        noise.add()
    added = (p.grad - true).double()
    assert torch.all(added[0] == 0)  # no gradient, no noise
    assert float(added[1].std()) == pytest.approx(0.5, rel=0.05)
    assert float(added[2].std()) == pytest.approx(5.0, rel=0.05)
    assert noise.moments()["count"] == 3


def test_second_moment_noise_without_its_averages_in_the_checkpoint_is_refused():
    noise = MomentNoise([nn.Parameter(torch.zeros(5))], 1.0, seed=0)
    with pytest.raises(ValueError, match="no gradient averages for --noise_kind second_moment"):
        noise.load_moments(None)


@pytest.mark.parametrize("kind", ["update", "second_moment"])
def test_the_noise_depends_on_the_seed_not_on_the_number_of_threads(kind):
    def noisy(threads):
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            _, _, pruner = trained(kind, "adam", 6)
            return [p.detach().clone() for p in pruner.params.values()]
        finally:
            torch.set_num_threads(before)

    for a, b in zip(noisy(1), noisy(3), strict=True):
        assert torch.equal(a, b)


# -- the command line ---------------------------------------------------------------------------

DIGITS = ("-m", "lenet300", "-d", "digits", "-bs", "256", "--prune_criterion", "flipout",
          "--prune_freq", "1")  # fmt: skip


def test_the_papers_noise_under_an_adaptive_optimizer_is_warned_about_in_one_line(tmp_path, capsys):
    quick_run(tmp_path / "a", *DIGITS, "--opt", "adamw", "-lr", "1e-3", "--noise")
    lines = [line for line in capsys.readouterr().err.splitlines() if "--noise_kind" in line]
    assert len(lines) == 1 and lines[0].startswith("warning: --noise adds the paper's")
    assert "--opt adamw" in lines[0] and "docs/noise.md" in lines[0]
    for argv in (("--opt", "sgd", "--noise"), ("--opt", "adam", "--noise", "--noise_kind",
                                                "update")):  # fmt: skip
        quick_run(tmp_path / argv[1] / argv[-1], *DIGITS, "-lr", "1e-3", *argv)
        assert "--noise_kind" not in capsys.readouterr().err


def test_noise_kind_without_noise_is_warned_about_and_a_bad_kind_refused(tmp_path, capsys):
    quick_run(tmp_path / "inert", *DIGITS, "-e", "1", "--noise_kind", "update")
    assert "warning: --noise_kind has no effect without --noise" in capsys.readouterr().err
    assert main.main(quick(tmp_path, *DIGITS, "--noise", "--noise_kind", "weights")) == 2
    assert_one_error_line(capsys, "--noise_kind")


@pytest.mark.parametrize("kind", ["update", "second_moment"])
def test_a_run_resumed_mid_way_equals_a_straight_one(tmp_path, kind):
    argv = [*DIGITS, "-e", "3", "--opt", "adamw", "-lr", "1e-3", "--noise", "--noise_kind", kind]
    stopped = stopped_in_epoch(tmp_path, argv, epoch=3)
    assert_resumed_equals_straight(tmp_path, stopped, argv)


def test_measuring_the_mechanism_changes_nothing_and_logs_it_per_tensor(tmp_path):
    argv = [*DIGITS, "--opt", "adamw", "-lr", "1e-3", "--noise", "--seed", "3"]
    watched = quick_run(tmp_path / "watched", *argv, "--log_mechanism")
    plain = quick_run(tmp_path / "plain", *argv)
    ours, theirs = records(watched), records(plain)
    for entry in ours:
        entry.pop("mechanism")
    assert ours == theirs  # the clean step is taken on a copy: the run is the same
    first = records(watched)[0]["mechanism"]  # epoch 1, which ends in a prune
    assert set(first) == {"1.weight", "3.weight", "5.weight"}
    assert set(first["1.weight"]) == {
        "flip_rate", "flip_rate_kept", "flip_rate_removed", "noise_dominated", "noise_to_step",
        "step_rms", "clean_step_rms", "history_to_step", "shadow_step_rms", "signal_kept",
    }  # fmt: skip
    assert all(stats["noise_to_step"] > 0 for stats in first.values())
    tags = EventAccumulator(str(watched)).Reload().Tags()["scalars"]
    assert {"mechanism/noise_to_step/1.weight", "mechanism/flip_rate/5.weight"} <= set(tags)


@pytest.mark.parametrize("scale", ["1", "0.5"])
def test_the_noise_to_step_ratio_is_the_scale_at_a_plain_sgd_step(tmp_path, scale):
    """At plain SGD's first step the step is -lr * g and the noise -lr * noise: their ratio is
    the noise's scale, by construction (the std is the gradient's RMS times the scale). Plain SGD
    keeps no state, so the shadow's step is the clean step at every epoch."""
    run = quick_run(tmp_path, *DIGITS, "--opt", "sgd", "--momentum", "0", "--noise",
                    "--noise_scale_factor", scale, "--log_mechanism")  # fmt: skip
    for name, stats in records(run)[0]["mechanism"].items():
        assert stats["noise_to_step"] == pytest.approx(float(scale), rel=0.05), name
    for record in records(run):  # plain SGD keeps no state: no history for the noise to leave
        for stats in record["mechanism"].values():
            assert stats["history_to_step"] == pytest.approx(stats["noise_to_step"], rel=1e-4)
            assert stats["signal_kept"] == pytest.approx(1.0, abs=0.05)  # linear: all kept


def test_the_mechanism_reads_back_from_metrics_jsonl_as_json(tmp_path):
    run = quick_run(tmp_path, *DIGITS, "--log_mechanism")
    line = (run / "metrics.jsonl").read_text().splitlines()[0]
    assert json.loads(line)["mechanism"]["1.weight"]["noise_to_step"] == 0.0  # no noise


def test_the_mechanism_summary_groups_runs_and_draws_its_plot_only_where_it_may(tmp_path, capsys):
    from experiments import mechanism

    for seed in ("0", "1"):
        quick_run(tmp_path / "runs" / seed, *DIGITS, "--noise", "--log_mechanism", "--seed", seed)
    quick_run(tmp_path / "runs" / "plain", *DIGITS)  # not measured: left out
    plot = tmp_path / "mechanism.png"
    assert mechanism.main([str(tmp_path / "runs"), "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    [row] = [line for line in out.splitlines() if line.startswith("| lenet300 |")]
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[1:5] == ["sgd", "FlipOut", "50.00", "2"]  # two seeds, one group
    assert plot.read_bytes().startswith(b"\x89PNG")
    assert mechanism.main([str(tmp_path / "runs"), "--plot", str(plot)]) == 0  # ours: replaced
    foreign = tmp_path / "foreign.png"
    foreign.write_bytes(b"not ours")
    assert mechanism.main([str(tmp_path / "runs"), "--plot", str(foreign)]) == 2
    assert foreign.read_bytes() == b"not ours"
    assert "left as it is" in capsys.readouterr().err
    assert mechanism.main([str(tmp_path / "runs" / "plain")]) == 1
