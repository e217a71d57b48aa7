"""The command line: flags, defaults, errors, and the artifacts a run leaves behind."""

import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from unittest.mock import ANY

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams.metadata import parse_session_start_info_plugin_data
from torch import nn

import cli
import main
import training
from models import build_model
from pruning.hoyer import hoyer_square
from tests.support import ROOT
from tests.support.runs import assert_one_error_line, only_run_dir, quick
from tests.support.seed import seed_commands
from utils.logging import make_run_dir


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


# -- parsing -----------------------------------------------------------------------------------


def test_the_seed_commands_parse_with_their_original_spellings():
    commands = [cli.parse_args(argv) for argv in seed_commands()]
    assert [c.prune.prune_criterion for c in commands] == [
        "flipout", "global_magnitude", "random", "snip", "threshold",
    ]  # fmt: skip
    flipout = commands[0]
    assert (flipout.model.model, flipout.data.dataset) == ("vgg19", "cifar10")
    assert (flipout.train.batch_size, flipout.train.epochs) == (128, 350)
    assert flipout.train.lambda_ == 5e-4 and flipout.train.milestones == [150, 250]
    assert flipout.prune.noise and flipout.prune.noise_scale_factor == 1
    assert flipout.prune.components["flipout_p"] == 2
    assert flipout.run.comment == "test flipout" and flipout.run.logdir == "vgg19/"
    assert commands[3].value("snip_sparsity") == 0.999
    hoyer = commands[4].prune
    assert hoyer.add_hs and hoyer.hoyer_lambda == 6e-5 and hoyer.stop_hoyer_at == 350


def test_short_forms():
    args = cli.parse_args(
        ["-m", "vgg11", "-d", "synthetic", "-bs", "7", "-tbs", "9", "-e", "3", "-lr", "0.5",
         "-mom", "0.1"]
    )  # fmt: skip
    assert (args.model.model, args.data.dataset) == ("vgg11", "synthetic")
    assert (args.train.batch_size, args.train.test_batch_size) == (7, 9)
    assert (args.train.epochs, args.train.lr, args.train.momentum) == (3, 0.5, 0.1)


def test_every_flag_states_its_default():
    parser = cli.build_parser()
    formatter = parser._get_formatter()
    for action in parser._actions:
        if action.dest == "help":
            continue
        assert "default" in formatter._get_help_string(action), action.option_strings


def test_no_flags_means_a_flipout_run_on_digits():
    args = cli.parse_args([]).options()
    assert (args["model"], args["dataset"], args["prune_criterion"]) == (
        "lenet300", "digits", "flipout",
    )  # fmt: skip
    assert args["device"] == "auto" and args["data_dir"] == "./data"


# Every numeric flag against the kinds of bad value a hostile user or a broken script produces.
# Each flag lists the kinds that are valid for it (0 is a fine weight decay, -1 means "never").
BAD_KINDS = {
    "negative": "-3",
    "zero": "0",
    "nan": "nan",
    "inf": "inf",
    "huge": "1" + "0" * 20,
    "text": "many",
}
NUMERIC_FLAGS = {
    "-bs": (),
    "-tbs": (),
    "-e": (),
    "-lr": (),
    "--momentum": ("zero",),
    "--lambda": ("zero",),
    "--milestones": (),
    "--max_norm": ("huge",),  # no clipping in effect, but not a mistake
    "--prune_freq": (),
    "--prune_rate": (),
    "--stop_pruning_at": (),
    "--flipout_p": (),
    "--magnitude_threshold": ("zero",),
    "--snip_sparsity": ("zero",),
    "--snip_batches": (),
    "--noise_scale_factor": ("zero",),
    "--stop_noise_at": (),
    "--hoyer_lambda": ("zero",),
    "--stop_hoyer_at": ("zero",),
    "--seed": ("zero",),
    "--num_workers": ("zero",),
    "--val_size": (),
    "--limit_batches": (),
    "--dist_timeout": (),
    "--image_size": (),
}
BAD_FLAG_VALUES = [
    (flag, kind) for flag, valid in NUMERIC_FLAGS.items() for kind in BAD_KINDS if kind not in valid
]
OTHER_BAD_FLAGS = [
    ["-m", "alexnet"],
    ["-d", "imagenet"],
    ["--opt", "lbfgs"],
    ["--reg_type", "l3"],
    ["--prune_criterion", "magic"],
    ["--compile_kernels", "maybe"],
    ["--device", "xpu"],
    ["--device", "meta"],
    ["--device", "gpu"],
    ["--prune_criterion", "snip"],  # without --snip_sparsity
    ["--add_hs"],  # Hoyer-Square with lambda 0
    ["--image_size", "64"],  # not synthetic
    ["-d", "synthetic", "-m", "vgg19", "--image_size", "16"],  # too small for VGG's pools
    ["--no_such_flag"],
    ["-lr"],  # a flag without its value
]


@pytest.mark.parametrize(("flag", "kind"), BAD_FLAG_VALUES)
def test_every_numeric_flag_refuses_bad_values_in_one_line(tmp_path, capsys, flag, kind):
    extra = ["-d", "synthetic"] if flag == "--image_size" else []
    argv = quick(tmp_path, *extra, flag, BAD_KINDS[kind])
    assert main.main(argv) == 2
    assert_one_error_line(capsys, flag)
    assert not (tmp_path / "runs").exists()  # refused before a run directory was made


@pytest.mark.parametrize("argv", OTHER_BAD_FLAGS, ids=" ".join)
def test_other_mistakes_are_one_line_and_exit_2(tmp_path, capsys, argv):
    assert main.main(quick(tmp_path, *argv)) == 2
    assert_one_error_line(capsys)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("argv", "warning"),
    [
        (["--milestones", "10"], "--milestones has no effect without --use_scheduler"),
        (["--use_scheduler", "--milestones", "5", "50"], "--milestones 50: at or after the last"),
        (["--val_size", "100"], "--val_size has no effect without --val"),
        (["--hoyer_lambda", "1e-4"], "--hoyer_lambda has no effect without --add_hs"),
        (["--max_norm", "2"], "--max_norm has no effect without --clip_grad"),
        (["--noise_scale_factor", "2"], "--noise_scale_factor has no effect without --noise"),
        (["--opt", "adam", "--momentum", "0.5"], "--momentum has no effect with --opt adam"),
        (["--prune_criterion", "threshold", "--magnitude_threshold", "0"], "prunes nothing"),
        (["--prune_freq", "20"], "this run never prunes"),
        (["--flipout_p", "3", "--prune_criterion", "random"], "--flipout_p has no effect"),
    ],
)
def test_flags_that_change_nothing_are_warned_about(capsys, argv, warning):
    cli.parse_args(argv)
    err = capsys.readouterr().err
    assert err.startswith("warning: ") and warning in err


def test_the_seed_commands_warn_about_nothing(capsys):
    for argv in seed_commands():
        cli.parse_args(argv)
    assert capsys.readouterr().err == ""


# -- training pieces ---------------------------------------------------------------------------


def test_learning_rate_follows_multisteplr_and_anneals():
    args = cli.parse_args(["-lr", "0.1", "--use_scheduler", "--milestones", "3", "5"])
    config = training.TrainConfig.from_options(args.by_name())
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    reference = torch.optim.lr_scheduler.MultiStepLR(optimizer, [3, 5], gamma=0.1)
    for epoch in range(1, 9):
        assert training.learning_rate(config, epoch, 0.0) == pytest.approx(
            optimizer.param_groups[0]["lr"]
        )
        optimizer.step()
        reference.step()
    config = dataclasses.replace(config, anneal_lr=True)
    assert training.learning_rate(config, 1, 0.75) == pytest.approx(0.025)


def test_l1_and_l2_penalties():
    model = nn.Linear(2, 1)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, -2.0]]))
        model.bias.fill_(3.0)

    def config(*argv):
        return training.TrainConfig.from_options(cli.parse_args(list(argv)).by_name())

    l1 = config("--reg_type", "l1", "--lambda", "0.5")
    assert training.regularisation(l1, model).item() == pytest.approx(0.5 * 6)
    l2 = config("--reg_type", "l2", "--lambda", "0.5")
    assert training.regularisation(l2, model).item() == pytest.approx(0.5 * 14)
    assert training.regularisation(config(), model) is None  # wdecay: in the optimizer


def test_run_directories_are_fresh_and_shell_safe(tmp_path):
    first = make_run_dir(str(tmp_path), "a [b]: c")
    second = make_run_dir(str(tmp_path), "a [b]: c")
    assert first != second
    for path in (first, second):
        assert not set(path.name) & set(" :[]()")
        assert path.name.split("_", 2)[-1].startswith("a_b_c")


# -- whole runs --------------------------------------------------------------------------------


def test_synthetic_run_writes_every_artifact(tmp_path):
    argv = quick(
        tmp_path, "-d", "synthetic", "-m", "lenet5", "-e", "3", "--prune_freq", "1",
        "--limit_batches", "3", "-bs", "16", "--comment", "smoke [run]: 1",
    )  # fmt: skip
    assert main.main(argv) == 0
    run_dir = only_run_dir(tmp_path / "runs")
    assert not set(run_dir.name) & set(" :[]") and run_dir.name.endswith("smoke_run_1")

    config = json.loads((run_dir / "config.json").read_text())
    assert config["model"] == "lenet5" and config["lambda"] == 5e-4
    assert config["torch_version"] == torch.__version__ and config["device_resolved"] == "cpu"
    assert set(cli.parse_args([]).options()) - {"resume"} <= set(config)

    records = read_metrics(run_dir)
    assert [r["epoch"] for r in records] == [1, 2, 3]
    keys = {
        "epoch",
        "train_acc",
        "train_loss",
        "test_acc",
        "test_loss",
        "sparsity",
        "lr",
        "seconds",
    }
    for record in records:
        assert keys <= set(record)
        assert 0 <= record["train_acc"] <= 100 and 0 <= record["test_acc"] <= 100
        assert record["seconds"] > 0 and record["lr"] == 0.1
    # prunes after epochs 1 and 2 (never after the last): half, then half of the rest
    assert [r["sparsity"] for r in records] == pytest.approx([0.5, 0.75, 0.75], abs=1e-4)

    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert (summary["model"], summary["dataset"], summary["prune_criterion"]) == (
        "lenet5", "synthetic", "flipout",
    )  # fmt: skip
    assert (summary["seed"], summary["epochs"]) == (0, 3)
    assert summary["final_test_acc"] == records[-1]["test_acc"]
    assert summary["best_test_acc"] == max(r["test_acc"] for r in records)
    assert summary["final_sparsity"] == records[-1]["sparsity"]
    assert summary["wall_seconds"] > 0

    events = EventAccumulator(str(run_dir))
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {
        "acc/train",
        "acc/test",
        "loss/train",
        "loss/test",
        "sparsity/sparsity",
        "lr",
        "flops/train",
    } <= scalars
    assert [e.value for e in events.Scalars("acc/test")] == pytest.approx(
        [r["test_acc"] for r in records]
    )
    assert [e.value for e in events.Scalars("flops/train")] == pytest.approx(
        [r["train_flops"] for r in records]
    )
    assert "config/text_summary" in events.Tags()["tensors"]
    # the HParams dashboard: the run's method and options, and its final metrics as scalars;
    # no experiment summary, so that TensorBoard puts the options that differ first
    hparams = events.PluginTagToContent("hparams")
    assert set(hparams) == {"_hparams_/session_start_info", "_hparams_/session_end_info"}
    start = parse_session_start_info_plugin_data(hparams["_hparams_/session_start_info"])
    assert start.hparams["Method"].string_value == "FlipOut (no noise)"
    assert start.hparams["Schedule"].string_value == "periodic"
    assert start.hparams["noise"].bool_value is False and start.hparams["noise"].HasField(
        "bool_value"
    )
    # another criterion's option, and where the run was written, are no column
    assert not {"snip_batches", "run_dir", "comment", "schedule"} & set(start.hparams)
    assert start.group_name == ""  # TensorBoard names it by its path: two seed0/ stay two rows
    (final,) = events.Scalars("hparam/final_test_acc")
    assert final.value == pytest.approx(summary["final_test_acc"])


def test_hoyer_square_penalty_is_logged_beside_the_data_loss(tmp_path):
    argv = quick(
        tmp_path, "-e", "3", "--limit_batches", "1", "--add_hs", "--hoyer_lambda", "2e-3",
        "--prune_criterion", "threshold", "--prune_freq", "5", "--stop_hoyer_at", "2",
    )  # fmt: skip
    assert main.main(argv) == 0
    run_dir = only_run_dir(tmp_path / "runs")
    records = read_metrics(run_dir)
    # epoch 1's one step sees the initial weights: lambda * HS(conv and linear weights)
    torch.manual_seed(0)
    model = build_model("lenet300", 10, 1, 32)
    weights = [m.weight for m in model.modules() if isinstance(m, nn.Linear)]
    expected = 2e-3 * hoyer_square(weights).item()
    assert records[0]["train_penalty"] == pytest.approx(expected, rel=1e-6)
    # the penalty applies while epoch <= --stop_hoyer_at, and is logged as 0 after
    assert records[1]["train_penalty"] > 0 and records[2]["train_penalty"] == 0
    events = EventAccumulator(str(run_dir))
    events.Reload()
    assert [e.value for e in events.Scalars("loss/penalty")] == pytest.approx(
        [r["train_penalty"] for r in records]
    )


def test_runs_without_a_penalty_log_none(tmp_path):
    assert main.main(quick(tmp_path, "-e", "1", "--limit_batches", "2")) == 0
    assert "train_penalty" not in read_metrics(only_run_dir(tmp_path / "runs"))[0]


def test_digits_run_learns_and_prunes(tmp_path):
    assert main.main(quick(tmp_path, "-e", "4", "--prune_freq", "2")) == 0
    summary = json.loads((only_run_dir(tmp_path / "runs") / "summary.json").read_text())
    assert summary["dataset"] == "digits" and summary["prune_criterion"] == "flipout"
    assert summary["final_sparsity"] == 0.5  # 338,200 prunable weights, halved once
    assert summary["final_test_acc"] > 85  # chance is 10%


def test_evaluate_on_val_looks_at_the_test_set_once(tmp_path):
    argv = quick(tmp_path, "-e", "2", "--evaluate_on_val", "--val_size", "200")
    assert main.main(argv) == 0
    run_dir = only_run_dir(tmp_path / "runs")
    first, last = read_metrics(run_dir)
    assert first["test_acc"] is None and last["test_acc"] is not None
    assert first["val_acc"] is not None and last["val_acc"] is not None
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["best_val_acc"] == max(first["val_acc"], last["val_acc"])
    assert summary["final_test_acc"] == last["test_acc"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_cuda_without_a_gpu_is_a_clear_error(tmp_path, capsys):
    assert main.main(quick(tmp_path, "--device", "cuda")) == 2
    assert "no CUDA GPU is available" in capsys.readouterr().err


def test_missing_dataset_is_one_line_and_exit_2(tmp_path):
    result = subprocess.run(
        [sys.executable, "main.py", "-d", "cifar10", "--data_dir", str(tmp_path), "--no_download"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: CIFAR-10 is missing") and str(tmp_path) in line


# -- a resume that changes the schedule ----------------------------------------------------------

SHORT_RUN = ["--prune_freq", "1", "--limit_batches", "1", "--num_workers", "0", "--quiet"]


def two_epochs(tmp_path, *argv: str) -> Path:
    """A completed two-epoch run, pruned after epoch 1 (not after its last): its directory."""
    run_dir = tmp_path / "run"
    assert main.main([*SHORT_RUN, "-e", "2", *argv, "--run_dir", str(run_dir)]) == 0
    return run_dir


def resume(run_dir: Path, *argv: str) -> int:
    return main.main(["--resume", str(run_dir), "--num_workers", "0", "--quiet", *argv])


@pytest.mark.parametrize(
    ("epochs", "after", "sparsity"),
    [(3, "no prune after that; it ends at 75.00% sparsity", 0.75),
     (4, "then a prune after epoch 3; it ends at 87.50% sparsity", 0.875)],
)  # fmt: skip
def test_a_resume_that_extends_e_says_what_the_schedule_becomes_and_does_it(
    tmp_path, capsys, epochs, after, sparsity
):
    """The issue's case: -e 3 on a finished 2-epoch run printed a schedule that ends at 75% and
    then stopped at 50%: the prune after epoch 2, its old last epoch, never came."""
    run_dir = two_epochs(tmp_path)
    capsys.readouterr()
    assert resume(run_dir, "-e", str(epochs)) == 0
    lines = capsys.readouterr().out.splitlines()
    more = f"{epochs - 2} more epoch{'s' if epochs > 3 else ''} (to epoch {epochs})"
    made_up = "the prune after epoch 2, where the run ended before, is made now"
    assert f"schedule changed by this resume: {more}; {made_up}; {after}" in lines
    assert lines[-1].startswith("done: ") and f"sparsity {sparsity:.4%}" in lines[-1]
    result = json.loads((run_dir / "summary.json").read_text())
    assert result["final_sparsity"] == sparsity
    assert [event["epoch"] for event in result["prune_events"]] == list(range(1, epochs))
    if epochs == 3:  # as a run of -e 3 from the start, to the bit
        straight = tmp_path / "straight"
        assert main.main([*SHORT_RUN, "-e", "3", "--run_dir", str(straight)]) == 0
        assert read_metrics(straight)[-1] == {**read_metrics(run_dir)[-1], "seconds": ANY}


# the first run's extra flags, the resume's, and what its one line names
CHANGES_OF_THE_PAST = [
    ([], ["-e", "4", "--prune_freq", "2"],
     ["after epoch 1: 0.5 of the live weights then, no prune now", "start a new run"]),
    (["--schedule", "gradual", "--target_sparsity", "0.5", "--prune_start", "1"], ["-e", "8"],
     ["the prunes of the 2 epochs it has trained", "after epoch 1: to 50.00% then",
      "give --prune_end"]),
]  # fmt: skip


@pytest.mark.parametrize(("first", "again", "names"), CHANGES_OF_THE_PAST)
def test_a_resume_that_would_change_the_prunes_already_made_is_one_line(
    tmp_path, capsys, first, again, names
):
    run_dir = two_epochs(tmp_path, *first)
    before = (run_dir / "metrics.jsonl").read_text()
    capsys.readouterr()
    assert resume(run_dir, *again) == 2
    # one line: the warning about the changed options only comes once they are accepted
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --resume")
    assert all(name in lines[0] for name in names), lines[0]
    assert (run_dir / "metrics.jsonl").read_text() == before


@pytest.mark.parametrize(
    ("extended", "again", "code", "line"),
    [(None, ["-e", "1"], 2, "error: --resume {run}: -e 1 trains 1 epoch, fewer than the 2 it has "
      "trained, and a run cannot be shortened: leave -e out or give a longer one, or start a new "
      "run"),
     # config.json keeps -e 2, the options the run was started with
     ("3", [], 0, "nothing to train: {run} completed its 3 epochs, at 75.00% sparsity; its files "
      "are left as they are")],
    ids=["a shorter -e", "a plain resume of an extended run"],
)  # fmt: skip
def test_a_resume_with_nothing_left_to_train_leaves_the_run_as_it_is(
    tmp_path, capsys, extended, again, code, line
):
    run_dir = two_epochs(tmp_path)
    if extended:
        assert resume(run_dir, "-e", extended) == 0
    before = {name: (run_dir / name).read_bytes() for name in ("summary.json", "config.json")}
    metrics = read_metrics(run_dir)
    capsys.readouterr()
    assert resume(run_dir, *again) == code
    out, err = capsys.readouterr()
    # not the schedule of these options, which the run did not follow
    assert (out + err).splitlines() == [line.format(run=run_dir)]
    assert read_metrics(run_dir) == metrics
    assert {name: (run_dir / name).read_bytes() for name in before} == before
