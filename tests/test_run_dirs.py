"""What main.py does to a directory it is pointed at (issue 30): a new run never writes over files
it did not make, and a resume with nothing to train leaves its run as it was, to the byte; a
resume says that its options changed only once its checkpoint is accepted, and a path in the way
of --run_dir is named for what it is."""

import hashlib
import os
import shutil
from pathlib import Path

import pytest
import torch

import main
from tests.support.damage import BYTE_DAMAGE
from tests.support.hostile import Call, creates
from tests.support.runs import assert_one_error_line, summary
from utils.lock import RunLock

FAST = ["--limit_batches", "1", "--num_workers", "0", "--quiet"]
# two epochs of these prune half the weights after the first
QUICK = ["--prune_freq", "1", *FAST]


def new_run(run_dir: Path, *argv: str) -> int:
    return main.main([*FAST, "-e", "1", *argv, "--run_dir", str(run_dir)])


def resume(run_dir: Path, *argv: str) -> int:
    return main.main(["--resume", str(run_dir), "--num_workers", "0", "--quiet", *argv])


def digests(folder: Path) -> dict[str, str]:
    """Every file of `folder` but the lock, which each process that takes it rewrites."""
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.iterdir())
        if path.name != ".lock"
    }


# -- a new run in a directory that holds no run ---------------------------------------------------

OTHERS_FILES = ["summary.json", "metrics.jsonl", "checkpoint.pt", "model.pt",
                "events.out.tfevents.1700000000.host.1.0"]  # fmt: skip


@pytest.mark.parametrize("name", OTHERS_FILES)
def test_a_new_run_never_writes_over_a_file_it_did_not_make(tmp_path, capsys, name):
    # the case: a user's summary.json replaced, metrics.jsonl appended to, exit 0
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / name).write_text('{"mine": 1}\n')
    assert new_run(folder, "--save_model") == 2
    assert_one_error_line(capsys, f"--run_dir {folder} holds {name} but no run", "write over it")
    assert os.listdir(folder) == [name] and (folder / name).read_text() == '{"mine": 1}\n'


def test_what_a_launcher_puts_in_the_run_directory_first_does_not_stop_the_run(tmp_path):
    # experiments/runs.py start_main claims the directory and opens output.log before main.py
    # starts; a Slurm task has written slurm.json there
    folder = tmp_path / "swept"
    folder.mkdir()
    (folder / "output.log").write_text("launched\n")
    (folder / "slurm.json").write_text('{"job": 1}\n')
    (folder / ".notes.txt.tmp").write_text("someone's\n")  # not a temporary file of a run's
    with RunLock(folder, ".launch.lock"):
        assert new_run(folder) == 0
    assert summary(folder)["status"] == "completed"
    assert (folder / "output.log").read_text() == "launched\n"
    assert (folder / "slurm.json").read_text() == '{"job": 1}\n'
    assert (folder / ".notes.txt.tmp").read_text() == "someone's\n"


def test_without_run_dir_a_run_never_takes_a_directory_that_exists(tmp_path, monkeypatch):
    monkeypatch.setattr("utils.logging.run_name", lambda comment, start=None: "taken")
    taken = tmp_path / "runs" / "taken"
    taken.mkdir(parents=True)
    (taken / "summary.json").write_text('{"mine": 1}\n')
    argv = [*FAST, "-e", "1", "--logdir", str(tmp_path / "runs")]
    assert main.main(argv) == 0
    assert os.listdir(taken) == ["summary.json"]
    assert summary(tmp_path / "runs" / "taken-1")["status"] == "completed"


@pytest.mark.parametrize("inside", ["", "run"], ids=["the FIFO itself", "a folder in it"])
def test_a_fifo_in_the_way_of_run_dir_is_named_a_fifo(tmp_path, capsys, inside):
    os.mkfifo(tmp_path / "ff.pt")
    assert new_run(tmp_path / "ff.pt" / inside) == 2
    line = assert_one_error_line(capsys, f"{tmp_path / 'ff.pt'} is a FIFO, not a directory")
    assert "a file" not in line


# -- a resume with nothing to train ---------------------------------------------------------------


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A completed two-epoch run, pruned after epoch 1: copy it before resuming it."""
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    assert main.main([*QUICK, "-e", "2", "--run_dir", str(run_dir)]) == 0
    return run_dir


@pytest.fixture
def extended(finished, tmp_path) -> Path:
    """The finished run, resumed with -e 3 to a third epoch: its config.json keeps -e 2."""
    run_dir = shutil.copytree(finished, tmp_path / "extended")
    assert resume(run_dir, "-e", "3") == 0
    return run_dir


NOTHING_TO_TRAIN = {
    "a plain --resume": [],
    "the same -e": ["-e", "2"],
    "other options": ["-lr", "0.5", "--noise"],
    "the command that started it, again": ["--run_dir"],
}


@pytest.mark.parametrize("case", NOTHING_TO_TRAIN)
def test_a_resume_of_a_completed_run_leaves_every_file_as_it_was(finished, tmp_path, capsys, case):
    # the case: summary.json rewritten with the resume's -e, config.json with a record
    run_dir = shutil.copytree(finished, tmp_path / "run")
    before = digests(run_dir)
    capsys.readouterr()
    argv = NOTHING_TO_TRAIN[case]
    if argv == ["--run_dir"]:
        assert main.main([*QUICK, "-e", "2", "--run_dir", str(run_dir)]) == 0
    else:
        assert resume(run_dir, *argv) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == [
        f"nothing to train: {run_dir} completed its 2 epochs, at 50.00% sparsity; its files are "
        "left as they are"
    ]
    assert err == ""  # no word of options that change nothing
    assert digests(run_dir) == before


def test_a_plain_resume_of_a_run_a_resume_extended_leaves_it_as_it_is(extended, capsys):
    before = digests(extended)
    capsys.readouterr()
    assert resume(extended) == 0
    assert "nothing to train: " in capsys.readouterr().out
    assert digests(extended) == before and summary(extended)["epochs"] == 3


@pytest.mark.parametrize("which", ["finished", "extended"])
def test_a_resume_is_never_shorter_than_the_run(request, tmp_path, capsys, which):
    run_dir = request.getfixturevalue(which)
    if which == "finished":
        run_dir = shutil.copytree(run_dir, tmp_path / "run")
    before = digests(run_dir)
    capsys.readouterr()
    assert resume(run_dir, "-e", "1") == 2
    assert_one_error_line(capsys, f"--resume {run_dir}: -e 1 trains 1 epoch, fewer than the",
                          "cannot be shortened")  # fmt: skip
    assert digests(run_dir) == before


def test_an_extended_run_stopped_before_its_summary_asks_for_its_e(extended, capsys):
    # killed after the checkpoint of its last epoch, before summary.json said it completed
    record = summary(extended)
    (extended / "summary.json").write_text('{"status": "running"}')
    before = digests(extended)
    capsys.readouterr()
    assert resume(extended) == 2
    assert_one_error_line(capsys, "it has trained 3 epochs, more than the 2", "give -e")
    assert digests(extended) == before
    assert resume(extended, "-e", "3") == 0
    assert summary(extended)["status"] == "completed"
    assert summary(extended)["final_sparsity"] == record["final_sparsity"]


def test_save_model_on_a_completed_run_writes_model_pt_alone(finished, tmp_path, capsys):
    run_dir = shutil.copytree(finished, tmp_path / "run")
    before = digests(run_dir)
    capsys.readouterr()
    assert resume(run_dir, "--save_model") == 0
    assert "model.pt is written, as --save_model asks" in capsys.readouterr().out
    after = digests(run_dir)
    assert after.pop("model.pt") and after == before
    saved = torch.load(run_dir / "model.pt", weights_only=True)
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert all(torch.equal(saved["state_dict"][k], v) for k, v in checkpoint["model"].items())


# -- the warning about changed options comes once the checkpoint is accepted ----------------------


def hostile_pickle(marker: Path):
    def damage(path: Path) -> None:
        torch.save({"model": Call(exec, creates(marker))}, path)

    return damage


@pytest.mark.parametrize("damage", ["first half only", "random bytes", "a pickle that runs code"])
def test_a_refused_checkpoint_is_one_line_without_the_overrides_warning(
    finished, tmp_path, capsys, damage
):
    run_dir = shutil.copytree(finished, tmp_path / "run")
    marker = tmp_path / "ran"
    spoil = BYTE_DAMAGE.get(damage) or hostile_pickle(marker)
    spoil(run_dir / "checkpoint.pt")
    capsys.readouterr()
    assert resume(run_dir, "-e", "3") == 2
    assert_one_error_line(capsys, f"--resume {run_dir}: ")
    assert not marker.exists()


def test_a_resume_with_changed_options_still_says_so(finished, tmp_path, capsys):
    run_dir = shutil.copytree(finished, tmp_path / "run")
    capsys.readouterr()
    assert resume(run_dir, "-e", "3") == 0
    err = capsys.readouterr().err
    assert (
        err == f"warning: resuming {run_dir} with changed options, for this resume only: epochs\n"
    )
