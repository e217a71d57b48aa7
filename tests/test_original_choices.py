"""The FlipOut authors' code-level choices as options (docs/baselines.md): Hoyer-Square over every
trainable parameter (`--hoyer_scope all`) and SNIP scoring a Xavier re-initialised copy with NLL
on raw logits (`--snip_score xavier_nll`). Each is checked against a computation written out by
hand from the authors' code; the defaults stay as they were, and the paper's sweeps use the
authors' choices, so that a run with the other choice is a recipe that differs."""

import copy
import json
import math

import pytest
import torch
from torch import nn

import cli
import main
from experiments import published
from experiments.paper import paper_options, recipe_differences
from experiments.runs import identity
from experiments.sweeps import SWEEPS
from models import build_model
from pruning import Pruner, Snip, Threshold
from pruning.criteria import first_batches
from pruning.registry import method_label
from record import identity_defaults
from tests.support.nets import ConvBnNet, make_pruner, snip_batches
from tests.support.runs import assert_one_error_line, only_run_dir, quick

# -- Hoyer-Square's scope ----------------------------------------------------------------------


def authors_hoyer_square(model: nn.Module) -> torch.Tensor:
    """utils/getters.get_weight_penalty of the authors' code, written out: every parameter that
    requires a gradient and is not all zero, each its own term (sum |w|)^2 / sum w^2."""
    total = torch.zeros(())
    for w in model.parameters():
        if w.requires_grad and w.abs().sum() > 0:
            total = total + w.abs().sum() ** 2 / (w.abs() ** 2).sum()
    return total


def net_with_every_kind_of_tensor() -> ConvBnNet:
    """A ConvBnNet with BatchNorm scales away from 1, an all-zero bias (the conv's) and a frozen
    one (the linear layer's), so that each rule of the sum shows."""
    torch.manual_seed(0)
    model = ConvBnNet()
    with torch.no_grad():
        model.conv.bias.zero_()
        model.bn.weight.uniform_(0.5, 1.5)
        model.bn.bias.uniform_(-0.5, 0.5)
    model.fc.bias.requires_grad_(False)
    return model


def test_scope_all_is_the_authors_sum_over_every_trainable_parameter():
    model = net_with_every_kind_of_tensor()
    pruner = Pruner(model, Threshold(), hoyer_lambda=0.5, hoyer_scope="all")
    ours = pruner.penalty()
    theirs = 0.5 * authors_hoyer_square(model)
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-6)
    # the gradients too: BatchNorm's, and zero for the all-zero bias that theirs skipped
    params = [p for p in model.parameters() if p.requires_grad]
    mine = torch.autograd.grad(ours, params)
    hand = torch.autograd.grad(theirs, params, allow_unused=True)
    for p, a, b in zip(params, mine, hand, strict=True):
        torch.testing.assert_close(a, torch.zeros_like(p) if b is None else b)
    assert not model.conv.bias.any() and not mine[1].any()
    # precondition of the teeth: BatchNorm's terms and the biases' count for something
    prunable = Pruner(model, Threshold(), hoyer_lambda=0.5).penalty()
    assert ours.item() > prunable.item() + 1.0


def test_scope_prunable_is_the_default_and_sums_the_pruned_tensors_only():
    model = net_with_every_kind_of_tensor()
    pruner = Pruner(model, Threshold(), hoyer_lambda=0.5)
    assert pruner.hoyer_scope == "prunable"
    weights = [model.conv.weight, model.fc.weight]
    expected = 0.5 * sum(w.abs().sum() ** 2 / w.pow(2).sum() for w in weights)
    assert pruner.penalty().item() == pytest.approx(expected.item(), rel=1e-6)


def test_a_scope_that_is_neither_is_refused_naming_the_keyword():
    with pytest.raises(ValueError, match="hoyer_scope must be 'prunable' or 'all', got 'every'"):
        Pruner(ConvBnNet(), Threshold(), hoyer_lambda=0.5, hoyer_scope="every")


def test_a_run_with_scope_all_penalises_every_parameter_and_records_it(tmp_path):
    argv = quick(
        tmp_path, "-e", "1", "--limit_batches", "1", "--add_hs", "--hoyer_lambda", "2e-3",
        "--hoyer_scope", "all", "--prune_criterion", "threshold", "--prune_freq", "5",
    )  # fmt: skip
    assert main.main(argv) == 0
    run_dir = only_run_dir(tmp_path / "runs")
    [record] = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    # the one step sees the initial weights: lambda * HS(every weight and bias)
    torch.manual_seed(0)
    expected = 2e-3 * authors_hoyer_square(build_model("lenet300", 10, 1, 32)).item()
    assert record["train_penalty"] == pytest.approx(expected, rel=1e-6)
    summary = json.loads((run_dir / "summary.json").read_text())
    config = json.loads((run_dir / "config.json").read_text())
    assert summary["options"]["hoyer_scope"] == config["hoyer_scope"] == "all"


# -- SNIP's score ------------------------------------------------------------------------------

SEED = 3


def authors_snip_scores(model, batches, masks=None) -> dict[str, torch.Tensor]:
    """snip.py of the authors' code, written out: a deep copy, every Conv2d and Linear weight
    drawn from N(0, 2 / (fan_in + fan_out)) in module order (from the generator --seed seeds
    here), the copy in train mode, F.nll_loss on its logits, i.e. minus the mean logit of the
    true class, and |dL/dw * w| of the copy's weights, summed over the batches."""
    generator = torch.Generator().manual_seed(SEED)
    twin = copy.deepcopy(model).train()
    weights = {}
    with torch.no_grad():
        for name, module in twin.named_modules():
            if isinstance(module, nn.Conv2d | nn.Linear):
                w = module.weight
                fan_in = w.shape[1] * w[0, 0].numel()
                fan_out = w.shape[0] * w[0, 0].numel()
                w.normal_(0.0, math.sqrt(2.0 / (fan_in + fan_out)), generator=generator)
                if masks is not None:
                    w.mul_(masks[f"{name}.weight"])
                weights[f"{name}.weight"] = w
    grads = {name: torch.zeros_like(w) for name, w in weights.items()}
    for inputs, targets in batches:
        logits = twin(inputs)
        loss = -logits[torch.arange(len(targets)), targets].mean()
        found = torch.autograd.grad(loss, list(weights.values()))
        for name, grad in zip(weights, found, strict=True):
            grads[name] += grad
    return {name: (grads[name] * w).abs() for name, w in weights.items()}


def statistics_far_from_the_batches() -> ConvBnNet:
    torch.manual_seed(0)
    model = ConvBnNet()
    with torch.no_grad():
        model.bn.running_mean.copy_(torch.tensor([2.0, -1.5, 0.5, 3.0]))
        model.bn.running_var.copy_(torch.tensor([9.0, 0.05, 4.0, 0.2]))
    return model


def xavier_pruner(model: nn.Module, **overrides) -> Pruner:
    return make_pruner(
        model, prune_criterion="snip", snip_sparsity=0.8, snip_score="xavier_nll", seed=SEED,
        snip_batches=2, **overrides,
    )  # fmt: skip


@pytest.mark.parametrize("after_a_prune", [False, True], ids=["at_init", "after_a_prune"])
def test_xavier_nll_scores_are_the_authors_and_leave_the_model_and_rng_alone(after_a_prune):
    model = statistics_far_from_the_batches()
    model.eval()  # the copy scores in train mode whatever the model's own mode, as theirs did
    batches = snip_batches(2, (1, 6, 6))
    pruner = xavier_pruner(model)
    pruner.attach_data(batches)
    masks = None
    if after_a_prune:
        masks = {name: torch.rand(w.shape) > 0.5 for name, w in pruner.params.items()}
        pruner.adopt_masks(masks)
    before = {name: t.clone() for name, t in model.state_dict().items()}
    global_rng = torch.get_rng_state()

    ours = pruner.criterion.scores(pruner.prune_inputs())
    theirs = authors_snip_scores(model, first_batches(batches, 2), masks)
    assert ours.keys() == theirs.keys() == {"conv.weight", "fc.weight"}
    for name in ours:
        torch.testing.assert_close(ours[name], theirs[name], rtol=1e-5, atol=1e-7)
        assert ours[name].abs().sum() > 0

    # the model's weights, BatchNorm statistics, mode and gradients as they were; the global
    # random state untouched (the copy is drawn from the pruner's own generator)
    after = model.state_dict()
    for name, value in before.items():
        assert torch.equal(after[name], value), name
    assert not model.training and all(p.grad is None for p in model.parameters())
    assert torch.equal(torch.get_rng_state(), global_rng)


def test_xavier_nll_ignores_the_models_weights_and_differs_from_the_default():
    batches = snip_batches(2, (1, 6, 6))
    model, other = statistics_far_from_the_batches(), statistics_far_from_the_batches()
    with torch.no_grad():
        other.conv.weight.mul_(-7.0)
        other.fc.weight.uniform_(-1.0, 1.0)
    scores = []
    for net in (model, other):
        pruner = xavier_pruner(net)
        pruner.attach_data(batches)
        scores.append(pruner.criterion.scores(pruner.prune_inputs()))
    for name in scores[0]:
        torch.testing.assert_close(scores[0][name], scores[1][name])
    default = make_pruner(model, prune_criterion="snip", snip_sparsity=0.8, snip_batches=2)
    default.attach_data(batches)
    as_initialised = default.criterion.scores(default.prune_inputs())
    assert not torch.allclose(as_initialised["conv.weight"], scores[0]["conv.weight"])


def test_xavier_nll_prunes_the_lowest_of_the_authors_scores():
    model = statistics_far_from_the_batches()
    batches = snip_batches(2, (1, 6, 6))
    pruner = xavier_pruner(model)
    pruner.attach_data(batches)
    pruner.before_training()
    theirs = authors_snip_scores(model, batches)
    everything = torch.cat([s.flatten() for s in theirs.values()])
    keep = round(0.2 * everything.numel())
    cut = everything.sort(descending=True).values[keep - 1]
    live = pruner.masks.num_live
    assert live == keep
    for name, score in theirs.items():
        # every kept weight scores at least the cut, every pruned one at most
        assert bool((score[pruner.masks[name]] >= cut).all())
        assert bool((score[~pruner.masks[name]] <= cut).all())


@pytest.mark.parametrize(
    ("options", "label"),
    [
        ({}, "SNIP"),
        ({"snip_score": "as_initialised"}, "SNIP"),
        ({"snip_score": "xavier_nll"}, "SNIP (Xavier copy, NLL)"),
        (
            {"snip_score": "xavier_nll", "snip_bn": "eval"},
            "SNIP (Xavier copy, NLL, BatchNorm in eval mode)",
        ),
        ({"snip_score": "xavier_nll", "schedule": "periodic"}, "SNIP (periodic, Xavier copy, NLL)"),
        ({"snip_bn": "eval", "schedule": "periodic"}, "SNIP (periodic, BatchNorm in eval mode)"),
    ],
)
def test_the_score_is_part_of_the_methods_name(options, label):
    assert method_label("snip", options) == label


def test_a_score_that_is_neither_is_refused():
    assert Snip(sparsity=0.9).score == "as_initialised"
    with pytest.raises(ValueError, match="score must be 'as_initialised' or 'xavier_nll', got 'x'"):
        Snip(sparsity=0.9, score="x")


def test_a_xavier_nll_run_records_its_score_and_method(tmp_path):
    snip = ["--prune_criterion", "snip", "--snip_sparsity", "0.9", "--snip_score", "xavier_nll"]
    assert main.main(quick(tmp_path, *snip, "-e", "1", "--limit_batches", "1")) == 0
    run_dir = only_run_dir(tmp_path / "runs")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["method"] == "SNIP (Xavier copy, NLL)"
    assert summary["options"]["snip_score"] == "xavier_nll"
    assert summary["final_sparsity"] == pytest.approx(0.9, abs=1e-6)


# -- the flags ---------------------------------------------------------------------------------


def test_the_defaults_are_unchanged_and_name_no_run_anew():
    options = cli.parse_args([]).options()
    assert (options["hoyer_scope"], options["snip_score"]) == ("prunable", "as_initialised")
    assert identity_defaults()["hoyer_scope"] == "prunable"
    assert identity_defaults()["snip_score"] == "as_initialised"
    # a config.json written before the options existed names the same run as one with them
    older = {k: v for k, v in options.items() if k not in ("hoyer_scope", "snip_score")}
    assert identity(options) == identity(older)
    assert identity({**options, "hoyer_scope": "all"}) != identity(options)


@pytest.mark.parametrize(
    ("argv", "warning"),
    [
        (["--hoyer_scope", "all"], "--hoyer_scope has no effect without --add_hs"),
        (
            ["--snip_score", "xavier_nll"],
            "--snip_score has no effect unless --prune_criterion snip",
        ),
    ],
)
def test_each_option_is_named_where_it_cannot_apply(capsys, argv, warning):
    cli.parse_args(argv)
    assert capsys.readouterr().err == f"warning: {warning}\n"


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--add_hs", "--hoyer_lambda", "1e-4", "--hoyer_scope", "every"], "--hoyer_scope"),
        (["--prune_criterion", "snip", "--snip_sparsity", "0.9", "--snip_score", "x"],
         "--snip_score"),
    ],
)  # fmt: skip
def test_a_value_that_is_neither_is_one_line_and_exit_2(tmp_path, capsys, argv, flag):
    assert main.main(quick(tmp_path, *argv)) == 2
    assert_one_error_line(capsys, flag)
    assert not (tmp_path / "runs").exists()


# -- the paper's sweeps and the recipe ---------------------------------------------------------


def parsed_commands(sweep: str) -> list:
    parser = cli.build_parser()
    return [parser.parse_args(argv) for argv in SWEEPS[sweep].commands(SWEEPS[sweep].default_seeds)]


@pytest.mark.parametrize("sweep", sorted(SWEEPS))
def test_the_paper_sweeps_make_the_authors_choices_and_the_others_the_defaults(sweep):
    commands = parsed_commands(sweep)
    paper = SWEEPS[sweep].paper
    hoyer = [c.hoyer_scope for c in commands if c.add_hs]
    snip = [c.snip_score for c in commands if c.prune_criterion == "snip"]
    assert set(hoyer) <= {"all" if paper else "prunable"}
    assert set(snip) <= {"xavier_nll" if paper else "as_initialised"}
    others = {
        (c.hoyer_scope, c.snip_score)
        for c in commands
        if not c.add_hs and c.prune_criterion != "snip"
    }
    assert others <= {("prunable", "as_initialised")}
    if sweep.endswith("_figures") or sweep in ("vgg19_cifar10", "digits_demo"):
        assert hoyer and snip  # precondition: these sweeps have both methods


def rows_of(kind: str) -> published.Published:
    rows = published.load().of("vgg19")
    if kind == "hoyer_square":
        return next(row for row in rows if row.hoyer_square)
    return next(row for row in rows if row.criterion == "snip")


@pytest.mark.parametrize(
    ("kind", "key", "ours", "theirs"),
    [
        ("hoyer_square", "hoyer_scope", "prunable", "all"),
        ("snip", "snip_score", "as_initialised", "xavier_nll"),
    ],
)
def test_a_run_with_the_other_choice_is_a_recipe_that_differs(kind, key, ours, theirs):
    row = rows_of(kind)
    options = dict(paper_options(row))
    assert options[key] == theirs
    summary = {"options": options}
    assert recipe_differences(summary, row) == ()
    summary = {"options": {**options, key: ours}}
    [difference] = recipe_differences(summary, row)
    assert difference.startswith(key) and ours in difference and theirs in difference
