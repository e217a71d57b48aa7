"""A flag of several values given twice (issue 30): its values add up or the command is refused in
one line, never does the last occurrence win unnoticed; and what config.json keeps, which a
resume parses again and the launcher hashes into a run's name, is spelled as before."""

import json

import pytest

import cli
import main
from record import key_of
from tests.support.runs import assert_one_error_line, quick

# argv -> the option's value: every occurrence's values, in order, each once
ADDED_UP = [
    (["--prune_exclude", "1", "--prune_exclude", "3"], "prune_exclude", ["1", "3"]),
    (["--prune_include", "1", "3", "--prune_include", "3", "5", "5"], "prune_include",
     ["1", "3", "5"]),
    (["--nm", "2:4", "--nm_exclude", "1.weight", "--nm_exclude", "5.weight"], "nm_exclude",
     ["1.weight", "5.weight"]),
    (["-m", "timm:resnet18", "--model_kwargs", "drop_rate=0.1", "--model_kwargs",
      "global_pool=avg"], "model_kwargs", ["drop_rate=0.1", "global_pool='avg'"]),
    # the same argument twice is the same argument
    (["-m", "timm:resnet18", "--model_kwargs", "drop_rate=0.1", "--model_kwargs",
      "drop_rate=0.1"], "model_kwargs", ["drop_rate=0.1"]),
    (["-m", "timm:resnet18", "--model_kwargs", "drop_rate=0.1", "drop_rate=0.1"], "model_kwargs",
     ["drop_rate=0.1"]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("argv", "dest", "value"), ADDED_UP, ids=[" ".join(a) for a, _, _ in ADDED_UP]
)
def test_values_given_twice_add_up(argv, dest, value):
    assert cli.parse_args(argv).value(key_of(dest)) == value


# argv -> what the one error line names
REFUSED = [
    (["--use_scheduler", "--milestones", "150", "250", "--milestones", "300"],
     ["--milestones", "given twice", "--milestones 150 250 300"]),
    (["-m", "timm:resnet18", "--model_kwargs", "drop_rate=0.1", "--model_kwargs",
      "drop_rate=0.2"], ["--model_kwargs", "drop_rate is given twice, as 0.1 and 0.2"]),
    (["-m", "timm:resnet18", "--model_kwargs", "drop_rate=0.1", "drop_rate=0.2"],
     ["drop_rate is given twice"]),
]  # fmt: skip


@pytest.mark.parametrize(("argv", "names"), REFUSED, ids=[" ".join(a) for a, _ in REFUSED])
def test_values_given_twice_that_disagree_are_one_line(tmp_path, capsys, argv, names):
    assert main.main(quick(tmp_path, *argv, "-e", "1")) == 2
    assert_one_error_line(capsys, *names)
    assert not (tmp_path / "runs").exists()


def test_every_flag_of_several_values_adds_up_or_refuses_a_second_time():
    # the criteria's and schedules' own flags included: a new one of several values must choose
    several = [a for a in cli.build_parser()._actions if a.nargs in ("+", "*")]
    assert {a.dest for a in several} >= {"model_kwargs", "milestones", "nm_exclude",
                                         "prune_include", "prune_exclude"}  # fmt: skip
    assert all(isinstance(action, cli.SEVERAL_VALUES) for action in several)


def test_a_flag_of_several_values_that_could_be_overridden_is_a_bug(monkeypatch):
    def with_a_plain_list(parser):
        parser.add_argument("--layers", nargs="+")

    monkeypatch.setattr(cli, "speed_flags", with_a_plain_list)
    with pytest.raises(TypeError, match="--layers takes several values"):
        cli.build_parser()


@pytest.mark.parametrize(
    ("once", "twice"),
    [
        (["--prune_exclude", "1", "3"], ["--prune_exclude", "1", "--prune_exclude", "3"]),
        (["-m", "timm:resnet18", "--model_kwargs", "global_pool=avg", "drop_rate=0.1"],
         ["-m", "timm:resnet18", "--model_kwargs", "drop_rate=0.1", "--model_kwargs",
          "global_pool=avg"]),
    ],
)  # fmt: skip
def test_config_json_keeps_the_spelling_of_one_occurrence(once, twice):
    stored = cli.parse_args(once).options()
    assert cli.parse_args(twice).options() == stored
    # and it reads back to the same options, as a resume reads them
    again = cli.record_from_config(cli.build_parser(), stored)
    assert again.options() == stored


def test_one_occurrence_is_stored_as_given_so_old_runs_parse_as_they_did():
    # repeated patterns in one occurrence were kept before a second occurrence was allowed
    given = ["--prune_exclude", "3", "1", "3"]
    assert cli.parse_args(given).prune.prune_exclude == ["3", "1", "3"]


def saved_run(tmp_path, **options) -> str:
    """A run directory with only the config.json of a run of these options."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    config = {**cli.parse_args([]).options(), **options}
    (run_dir / "config.json").write_text(json.dumps(config))
    return str(run_dir)


KWARGS = {"model": "timm:resnet18", "model_kwargs": ["drop_rate=0.1", "global_pool='avg'"]}


def test_a_resume_given_the_runs_model_kwargs_in_two_occurrences_is_the_same_run(tmp_path):
    run_dir = saved_run(tmp_path, **KWARGS)
    argv = ["--model_kwargs", "global_pool=avg", "--model_kwargs", "drop_rate=0.1"]
    args = cli.parse_args(["--resume", run_dir, *argv])
    assert args.model.model_kwargs == KWARGS["model_kwargs"] and args.resume_overrides == {}
    # --run_dir with the run's own options continues it, however they are spelled
    args = cli.parse_args(["-m", "timm:resnet18", *argv, "--run_dir", run_dir])
    assert args.run.resume == run_dir


def test_a_resume_that_adds_a_model_kwarg_in_a_second_occurrence_is_refused(tmp_path, capsys):
    run_dir = saved_run(tmp_path, **KWARGS)
    argv = ["--model_kwargs", "drop_rate=0.1", "global_pool=avg", "--model_kwargs", "depth=2"]
    assert main.main(["--resume", run_dir, *argv]) == 2
    assert_one_error_line(capsys, "that run has --model_kwargs drop_rate=0.1 global_pool='avg'")
