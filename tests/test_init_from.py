"""--init_from (the original's --load_model): a run that starts from trained weights, prunes them
and fine-tunes."""

import json

import pytest

import main
from cli import parse_args
from tests.support.runs import quick, summary


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A dense LeNet-300-100 trained on digits, saved as model.pt."""
    root = tmp_path_factory.mktemp("trained")
    argv = quick(root, "--prune_criterion", "none", "-e", "8", "-lr", "0.05", "--save_model")
    assert main.main([*argv, "--run_dir", str(root / "dense")]) == 0
    return root / "dense"


def test_the_original_flag_is_an_alias():
    assert parse_args(["--load_model", "model.pt"]).init_from == "model.pt"


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
