"""--init_from (the original's --load_model): a run that starts from trained weights, prunes them
and fine-tunes."""

import contextlib
import io
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

import main
from cli import parse_args
from data.common import DatasetError
from data.imagenette import check_is_image
from export.weights import Weights, load_weights
from models import build_model
from tests.support.datasets import write_mnist
from tests.support.deadline import deadline
from tests.support.runs import assert_one_error_line, quick, summary
from utils.errors import UserError


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A dense LeNet-300-100 trained on digits, saved as model.pt."""
    root = tmp_path_factory.mktemp("trained")
    argv = quick(root, "--prune_criterion", "none", "-e", "8", "-lr", "0.05", "--save_model")
    assert main.main([*argv, "--run_dir", str(root / "dense")]) == 0
    return root / "dense"


def test_the_original_flag_is_an_alias():
    assert parse_args(["--load_model", "model.pt"]).model.init_from == "model.pt"


def test_prune_a_trained_model_to_90_percent_and_recover(trained, tmp_path, capsys):
    dense = summary(trained)["final_test_acc"]
    assert dense > 90
    argv = quick(tmp_path, "--init_from", str(trained / "model.pt"), "--prune_criterion",
                 "global_magnitude", "--schedule", "oneshot", "--target_sparsity", "0.9",
                 "-e", "3", "-lr", "0.01")  # fmt: skip
    assert main.main([*argv, "--run_dir", str(tmp_path / "pruned")]) == 0
    assert f"initialised from {trained / 'model.pt'} (model.pt)" in capsys.readouterr().out
    pruned = summary(tmp_path / "pruned")
    assert f"{100 * pruned['final_sparsity']:.2f}" == "90.00"
    assert [event["epoch"] for event in pruned["prune_events"]] == [0]
    # a tenth of the weights, fine-tuned for three epochs, is about as good as all of them
    assert pruned["final_test_acc"] >= dense - 3
    config = json.loads((tmp_path / "pruned" / "config.json").read_text())
    assert config["init_from"] == str(trained / "model.pt")


def test_the_masks_of_a_pruned_file_are_kept(trained, tmp_path):
    half = tmp_path / "half"
    argv = quick(tmp_path, "--init_from", str(trained / "model.pt"), "--prune_criterion",
                 "global_magnitude", "--schedule", "oneshot", "--target_sparsity", "0.5",
                 "-e", "2", "--save_model", "--limit_batches", "2")  # fmt: skip
    assert main.main([*argv, "--run_dir", str(half)]) == 0
    # from the half-pruned checkpoint, dense training: its pruned weights stay pruned
    again = tmp_path / "again"
    argv = quick(tmp_path, "--init_from", str(half / "checkpoint.pt"), "--prune_criterion",
                 "none", "-e", "1", "--limit_batches", "2")  # fmt: skip
    assert main.main([*argv, "--run_dir", str(again)]) == 0
    assert summary(again)["final_sparsity"] == pytest.approx(0.5, abs=1e-6)


def test_a_file_for_another_network_is_refused_in_one_line(trained, tmp_path, capsys):
    argv = quick(tmp_path, "--init_from", str(trained / "model.pt"), "-d", "synthetic",
                 "-e", "1", "--limit_batches", "1")  # fmt: skip
    assert main.main(argv) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith(f"error: --init_from {trained / 'model.pt'}: ")
    # digits are 1x32x32 images, the synthetic ones 3x32x32: the first layer differs
    assert "shape of 1.weight is 300x1024 in the file, 300x3072 here" in error


# -- kinds of number: a tensor is loaded as what it holds ----------------------------------------


def lenet300_state(dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The state dict of the network a run on digits builds, its tensors turned into `dtype`."""
    return {
        name: t.to(dtype) for name, t in build_model("lenet300", 10, 1, 32).state_dict().items()
    }


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.uint8, torch.bool])
def test_integer_weights_are_refused_not_cast(tmp_path, capsys, dtype):
    # the case: a safetensors file of int64 weights trained to a loss of 1209, exit 0
    save_file(lenet300_state(dtype), tmp_path / "ints.safetensors")
    argv = quick(tmp_path, "--init_from", str(tmp_path / "ints.safetensors"), "-e", "1")
    assert main.main(argv) == 2
    kind = str(dtype).removeprefix("torch.")
    assert_one_error_line(capsys, f"1.weight is {kind} in the file, float32 here (and 5 more)",
                          "floating point into floating point")  # fmt: skip
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_floating_point_weights_of_another_precision_load(tmp_path, dtype):
    model = build_model("lenet300", 10, 1, 32)
    state = lenet300_state(dtype)
    load_weights(model, Weights(state, None, None, "state dict", "half.pt"))
    assert model[1].weight.dtype == torch.float32
    assert torch.equal(model[1].weight, state["1.weight"].float())


# the file, the kind of number it holds, the value put into one of its tensors -> what the one
# line names
NOT_FINITE = {
    "1e300 in float64 safetensors": ("huge.safetensors", torch.float64, "1.weight", 1e300,
                                     "1.weight holds 1e+300 in the file, beyond float32's range"),
    "1e300 in a float64 state dict": ("huge.pt", torch.float64, "3.bias", -1e300,
                                      "3.bias holds 1e+300 in the file, beyond float32's range"),
    "NaN in safetensors": ("nan.safetensors", torch.float32, "5.weight", float("nan"),
                           "5.weight holds NaN or infinite values in the file"),
    "an infinity in a state dict": ("inf.pt", torch.float16, "1.bias", float("-inf"),
                                    "1.bias holds NaN or infinite values in the file"),
}  # fmt: skip


@pytest.mark.parametrize("case", NOT_FINITE)
def test_weights_that_are_not_finite_in_the_network_are_refused(tmp_path, capsys, case):
    # the case: 1e300 in float64 became inf in float32, and the run diverged, exit 3
    name, dtype, tensor, value, names = NOT_FINITE[case]
    state = lenet300_state(dtype)
    state[tensor].view(-1)[7] = value
    path = tmp_path / name
    if path.suffix == ".safetensors":
        save_file(state, path)
    else:
        torch.save(state, path)
    assert main.main(quick(tmp_path, "--init_from", str(path), "-e", "1")) == 2
    assert_one_error_line(capsys, f"--init_from {path}: {names}", "finite numbers")
    assert not (tmp_path / "runs").exists()


def batchnorm_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))


def test_batchnorms_counter_loads_from_another_integer_type_but_not_from_floats():
    model, state = batchnorm_net(), batchnorm_net().state_dict()
    state["1.num_batches_tracked"] = torch.tensor(7, dtype=torch.int32)
    load_weights(model, Weights(dict(state), None, None, "state dict", "bn.pt"))
    assert model[1].num_batches_tracked.dtype == torch.int64 and model[1].num_batches_tracked == 7
    state["1.num_batches_tracked"] = torch.tensor(7.5)
    with pytest.raises(UserError, match=r"1\.num_batches_tracked is float32 in the file, int64"):
        load_weights(model, Weights(dict(state), None, None, "state dict", "bn.pt"))


# -- what is not a file is refused before it is opened --------------------------------------------


def fifo(path: Path) -> Path:
    path.unlink(missing_ok=True)
    os.mkfifo(path)
    return path


def run_config(run_dir: Path, source: Path) -> Path:
    """A run directory with `source`'s config.json alone."""
    run_dir.mkdir()
    shutil.copy(source / "config.json", run_dir / "config.json")
    return run_dir


def new_run(tmp: Path, *argv: str) -> list[str]:
    return quick(tmp, *argv, "-e", "1", "--limit_batches", "1")


# what to put in the way -> the command (under tmp_path) and what its one line names
FIFOS = {
    "--init_from a FIFO": lambda tmp, run: (
        new_run(tmp, "--init_from", str(fifo(tmp / "weights.pt"))), "it is a FIFO, not a file"),
    "--init_from a run whose model.pt is a FIFO": lambda tmp, run: (
        new_run(tmp, "--init_from", str(fifo(run_config(tmp / "r", run) / "model.pt").parent)),
        "its model.pt is a FIFO, not a file"),
    "--resume a run whose checkpoint is a FIFO": lambda tmp, run: (
        ["--resume", str(fifo(run_config(tmp / "r", run) / "checkpoint.pt").parent)],
        "its checkpoint.pt is a FIFO, not a file"),
    "--resume a run whose config.json is a FIFO": lambda tmp, run: (
        ["--resume", str(fifo(run_config(tmp / "r", run) / "config.json").parent)],
        "config.json is unreadable: a FIFO, not a file"),
    "--run_dir a directory whose config.json is a FIFO": lambda tmp, run: (
        new_run(tmp, "--run_dir", str(fifo(run_config(tmp / "r", run) / "config.json").parent)),
        "config.json is unreadable: a FIFO, not a file"),
    "--data_dir with an MNIST file that is a FIFO": lambda tmp, run: (
        new_run(tmp, "-d", "mnist", "--data_dir", str(mnist_with_a_fifo(tmp / "data"))),
        "t10k-labels-idx1-ubyte is a FIFO, not a file"),
}  # fmt: skip


def mnist_with_a_fifo(data_dir: Path) -> Path:
    write_mnist(data_dir)
    fifo(data_dir / "MNIST" / "raw" / "t10k-labels-idx1-ubyte")
    return data_dir


@pytest.mark.parametrize("case", FIFOS)
def test_a_fifo_where_a_file_is_read_is_one_line_at_once(pruned_run, tmp_path, capsys, case):
    argv, names = FIFOS[case](tmp_path, pruned_run)
    with deadline(20, case):
        assert main.main([*argv, "--num_workers", "0", "--quiet"]) == 2
    assert_one_error_line(capsys, names)


def test_an_imagenette_image_that_is_a_fifo_is_named(imagenette_dir):
    image = next((imagenette_dir / "imagenette2" / "val").rglob("*.JPEG"))
    fifo(image)
    with deadline(20, "an image that is a FIFO"), pytest.raises(DatasetError, match="a FIFO"):
        check_is_image(str(image))


# -- masks for tensors this run keeps dense --------------------------------------------------------

KEPT_DENSE = [
    (["--prune_exclude", "5"], ["its masks prune 5.weight", "keeps dense by --prune_exclude 5",
                                "leave it out of --prune_exclude"]),
    (["--prune_include", "1", "3"], ["its masks prune 5.weight", "by --prune_include 1 3",
                                     "name it in --prune_include"]),
]  # fmt: skip


@pytest.mark.parametrize(("argv", "names"), KEPT_DENSE, ids=[" ".join(a) for a, _ in KEPT_DENSE])
def test_masks_of_a_tensor_this_run_keeps_dense_name_the_option(
    pruned_run, tmp_path, capsys, argv, names
):
    argv = quick(tmp_path, "--init_from", str(pruned_run), *argv, "-e", "1")
    with contextlib.redirect_stdout(io.StringIO()) as out:
        assert main.main(argv) == 2
    line = assert_one_error_line(capsys, *names)
    assert "prune_bias" not in line and "prune_bnorm" not in line
    # the line that says the file was loaded came before the error that refused its masks
    assert "initialised from" not in out.getvalue()
    assert not (tmp_path / "runs").exists()


def test_a_mask_that_prunes_nothing_of_a_tensor_kept_dense_is_dropped(trained, tmp_path):
    # the dense model.pt has a mask of all ones for every prunable tensor, 5.weight's included
    argv = quick(tmp_path, "--init_from", str(trained), "--prune_exclude", "5", "-e", "1",
                 "--limit_batches", "1", "--prune_criterion", "none")  # fmt: skip
    assert main.main([*argv, "--run_dir", str(tmp_path / "run")]) == 0
    assert summary(tmp_path / "run")["excluded_layers"] == ["5.weight"]


@pytest.mark.filterwarnings("always")
@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_a_pickle_of_another_protocol_is_one_line_without_torchs_warning(
    tmp_path, capsys, zip_format
):
    # torch's weights-only reader warned in two lines of its own before it refused the file
    path = tmp_path / "protocol4.pt"
    torch.save(lenet300_state(torch.float32), path, pickle_protocol=4,
               _use_new_zipfile_serialization=zip_format)  # fmt: skip
    assert main.main(quick(tmp_path, "--init_from", str(path), "-e", "1")) == 2
    assert_one_error_line(capsys, f"--init_from {path}: ")
