"""training.py as a library: the optimizer registry, and a training epoch configured by a
`TrainConfig` written in Python, with no command line anywhere."""

import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import cli
from models import build_model
from pruning import FlipOut, Periodic, Pruner
from tests.support.nets import CPU
from training import (
    OPTIMIZERS,
    TrainConfig,
    build_optimizer,
    evaluate,
    train_one_epoch,
)
from utils.distributed import Distributed

CLASSES = {
    "sgd": torch.optim.SGD,
    "rmsprop": torch.optim.RMSprop,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
}


def test_the_registry_holds_the_four_optimizers_and_says_which_take_momentum():
    # the four among others: docs/library.md's recipe adds one
    assert {name: OPTIMIZERS[name].cls for name in CLASSES} == CLASSES
    assert {name for name in CLASSES if OPTIMIZERS[name].takes_momentum} == {"sgd", "rmsprop"}


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_each_optimizer_is_built_with_the_given_settings(name):
    params = list(nn.Linear(3, 2).parameters())
    optimizer = build_optimizer(name, params, lr=0.05, momentum=0.5, weight_decay=1e-3)
    assert type(optimizer) is CLASSES[name]  # exact: pruning/pruner.py's KEEP_ZEROS needs it
    group = optimizer.param_groups[0]
    assert group["params"] == params
    assert group["lr"] == 0.05 and group["weight_decay"] == 1e-3
    if OPTIMIZERS[name].takes_momentum:
        assert group["momentum"] == 0.5
    else:
        assert "momentum" not in group
    # everything else is the library's default, as before the registry
    expected = CLASSES[name](nn.Linear(3, 2).parameters(), lr=0.05, weight_decay=1e-3).defaults
    if OPTIMIZERS[name].takes_momentum:
        expected["momentum"] = 0.5
    assert optimizer.defaults == expected


def test_adamw_without_weight_decay_has_none():
    # AdamW's own default is 0.01; --reg_type l1 / l2 must not bring it in unasked.
    optimizer = build_optimizer("adamw", nn.Linear(3, 2).parameters(), lr=1e-3)
    assert optimizer.param_groups[0]["weight_decay"] == 0.0


def test_an_unknown_optimizer_is_a_value_error_naming_the_choices():
    with pytest.raises(ValueError, match="unknown optimizer 'lbfgs'") as error:
        build_optimizer("lbfgs", nn.Linear(3, 2).parameters(), lr=0.1)
    assert all(name in str(error.value) for name in OPTIMIZERS)
    with pytest.raises(ValueError, match="unknown optimizer 'lbfgs'") as error:
        TrainConfig(opt="lbfgs")
    assert ", ".join(sorted(OPTIMIZERS)) in str(error.value)
    with pytest.raises(ValueError, match="wdecay, l1, l2"):
        TrainConfig(reg_type="l3")


def test_the_defaults_are_the_command_lines():
    assert TrainConfig() == TrainConfig.from_options(cli.parse_args([]).by_name())
    config = TrainConfig.from_options(
        cli.parse_args(["--lambda", "1e-3", "--opt", "adamw"]).by_name()
    )
    assert config.lambda_ == 1e-3 and config.opt == "adamw" and config.weight_decay == 1e-3
    assert TrainConfig(reg_type="l2", lambda_=1e-3).weight_decay == 0.0


def test_the_command_line_offers_the_registry(capsys):
    assert cli.parse_args(["--opt", "adamw"]).train.opt == "adamw"
    cli.parse_args(["--opt", "adamw", "--momentum", "0.5"])
    assert "--momentum has no effect with --opt adam, adamw" in capsys.readouterr().err
    cli.parse_args(["--opt", "rmsprop", "--momentum", "0.5"])
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("penalties", [False, True], ids=["plain", "l2_and_hoyer"])
def test_an_epoch_trains_from_a_config_written_in_python(penalties):
    torch.manual_seed(0)
    model = build_model("lenet300", 10, 1, 8)
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(40, 1, 8, 8, generator=generator)
    labels = torch.randint(0, 10, (40,), generator=generator)
    loader = DataLoader(TensorDataset(images, labels), batch_size=8)
    reg = {"reg_type": "l2", "lambda_": 1e-4} if penalties else {}
    hoyer = 1e-4 if penalties else 0.0
    config = TrainConfig(opt="adamw", lr=1e-3, clip_grad=True, limit_batches=4, quiet=True, **reg)
    optimizer = build_optimizer(
        config.opt, model.parameters(), config.lr, config.momentum, config.weight_decay
    )
    pruner = Pruner(model, FlipOut(), Periodic(rate=0.5, every=1), hoyer_lambda=hoyer)
    pruner.attach_optimizer(optimizer)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    ddp = Distributed()

    record = train_one_epoch(model, loader, optimizer, pruner, config, 1, CPU, 1.0, ddp)

    penalty = {"train_penalty"} if penalties else set()
    assert set(record) == {"train_loss", "train_acc", "train_examples"} | penalty
    assert record["train_examples"] == 4 * 8  # limit_batches of 8 images
    assert all(math.isfinite(value) for value in record.values())
    if penalties:
        assert record["train_penalty"] > 0
    assert all(not torch.equal(p, before[name]) for name, p in model.named_parameters())
    loss, accuracy = evaluate(model, loader, config, CPU, "test", ddp)
    assert math.isfinite(loss) and 0 <= accuracy <= 100
