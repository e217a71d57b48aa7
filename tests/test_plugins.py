"""Plugins: a researcher's own module, imported by `--plugins` or the entry-point group
`flipout.plugins` before the command line is built, registers what the commands then offer
(utils/plugins.py). Each test writes its module into the current directory under a name of its
own and leaves the registries, sys.path and sys.modules as it found them."""

import importlib.machinery
import json
import sys
import textwrap
import uuid

import pytest

import main
from data import DATASETS
from experiments import __main__ as experiments
from experiments import sweeps
from models import MODELS
from pruning import CRITERIA, SCHEDULES
from tests.support import ROOT
from tests.support.runs import assert_one_error_line, summary
from training import OPTIMIZERS
from utils import plugins

REGISTRIES = (CRITERIA, SCHEDULES, MODELS, DATASETS, OPTIMIZERS, sweeps.SWEEPS)
QUICK = ["--limit_batches", "1", "--num_workers", "0", "--quiet"]

CUBED = """
from dataclasses import dataclass

import torch

from pruning import CRITERIA, Criterion
from pruning.options import Bounded, option
from training import OPTIMIZERS, OptimizerKind


@dataclass
class Cubed(Criterion):
    power: float = option("cubed_power", Bounded(float, above=0), 3.0, "score |w|^power")
    label = "Cubed"

    def scores(self, inputs):
        return {name: w.detach().abs() ** self.power for name, w in inputs.params.items()}


CRITERIA["cubed"] = Cubed
OPTIMIZERS["nadam"] = OptimizerKind(torch.optim.NAdam, takes_momentum=False)
"""


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """write(source) puts a module of `source` in the current directory, tmp_path, which is not
    on sys.path: its name, new in this process."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    kept = [(registry, dict(registry)) for registry in REGISTRIES]
    written = []

    def write(source: str, folder=tmp_path) -> str:
        name = f"plugin_{uuid.uuid4().hex[:8]}"
        (folder / f"{name}.py").write_text(textwrap.dedent(source))
        written.append(name)
        return name

    yield write
    for registry, entries in kept:
        registry.clear()
        registry.update(entries)
    for name in written:
        sys.modules.pop(name, None)


def help_text(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as ended:
        main.main([*argv, "--help"])
    assert ended.value.code == 0
    return capsys.readouterr().out


def test_a_plugin_s_criterion_and_optimizer_are_choices_its_option_a_flag_and_it_runs(
    plugin, tmp_path, capsys
):
    name = plugin(CUBED)
    assert "--cubed_power" not in help_text(capsys)
    shown = help_text(capsys, "--plugins", name)
    assert "--cubed_power" in shown and "cubed" in shown and "nadam" in shown
    run_dir = tmp_path / "run"
    argv = ["--plugins", name, "--prune_criterion", "cubed", "--cubed_power", "2", "--opt", "nadam"]
    assert (
        main.main([*argv, "-e", "2", "--prune_freq", "1", *QUICK, "--run_dir", str(run_dir)]) == 0
    )
    done = summary(run_dir)
    assert done["criterion"] == {"name": "cubed", "label": "Cubed", "cubed_power": 2.0}
    assert done["final_sparsity"] == 0.5  # its scores chose the half that went after epoch 1
    assert done["method"] == "Cubed" and done["options"]["opt"] == "nadam"
    assert json.loads((run_dir / "config.json").read_text())["plugins"] == [name]


@pytest.mark.parametrize("again", [["--resume", "{run}", "-e", "2"], ["--run_dir", "{run}"]])
def test_a_run_started_with_plugins_resumes_only_with_them_given_again(
    plugin, tmp_path, capsys, again
):
    """A run directory never makes main.py import a module by itself (its config.json could
    come from anywhere): the resume names the plugins to give, and runs once they are given."""
    name = plugin(CUBED)
    run_dir = tmp_path / "run"
    started = ["--prune_criterion", "cubed", "-e", "1", *QUICK, "--run_dir", str(run_dir)]
    assert main.main(["--plugins", name, *started]) == 0
    # as a new process finds it: nothing of the plugin imported or registered
    del sys.modules[name], CRITERIA["cubed"], OPTIMIZERS["nadam"]
    argv = [word.format(run=run_dir) for word in again]
    argv = argv if again[0] == "--resume" else [*started[:-2], *argv]
    capsys.readouterr()
    assert main.main(argv) == 2
    assert_one_error_line(
        capsys,
        f"{again[0]} {run_dir}: the run was started with --plugins {name}; give "
        f"--plugins {name} to continue it",
    )
    assert name not in sys.modules
    assert main.main([*argv, "--plugins", name]) == 0
    assert name in sys.modules and summary(run_dir)["criterion"]["name"] == "cubed"
    capsys.readouterr()


@pytest.mark.parametrize(
    ("source", "given", "expected"),
    [
        (None, "{name}", "no module {name} in the current directory or the installed packages"),
        ("x = 1\nraise ValueError('no GPU here')\n", "{name}",
         "importing it raised ValueError: no GPU here ({name}.py:2)"),
        ("import not_installed_anywhere\n", "{name}",
         "importing it raised ModuleNotFoundError: No module named 'not_installed_anywhere'"),
        ("def broken(:\n", "{name}", "importing it raised SyntaxError: "),
        ("", "{name}.py", "not a module's name: give {name}, without the folder and .py"),
    ],
    ids=["missing", "raises", "imports a missing module", "syntax error", "a file's name"],
)  # fmt: skip
def test_a_plugin_that_cannot_be_imported_is_one_line_and_exit_2(
    plugin, capsys, source, given, expected
):
    name = plugin(source) if source is not None else f"plugin_{uuid.uuid4().hex[:8]}"
    module = given.format(name=name)
    assert main.main(["--plugins", module, "-e", "1"]) == 2
    line = assert_one_error_line(capsys, f"--plugins {module}: ")
    assert expected.format(name=name) in line
    assert experiments.main(["--plugins", module, "list"]) == 2
    assert_one_error_line(capsys, f"--plugins {module}: ", expected.format(name=name))


def test_a_resumed_run_whose_plugin_is_gone_says_so(plugin, tmp_path, capsys):
    name = plugin(CUBED)
    run_dir = tmp_path / "run"
    assert main.main(["--plugins", name, "-e", "1", *QUICK, "--run_dir", str(run_dir)]) == 0
    (tmp_path / f"{name}.py").unlink()
    del sys.modules[name]
    assert main.main(["--resume", str(run_dir), "-e", "2", "--plugins", name]) == 2
    assert_one_error_line(capsys, f"--plugins {name}: no module {name}")


def test_a_plugin_is_imported_once_however_often_it_is_named(plugin, tmp_path, capsys):
    name = plugin("with open('imported', 'a') as file:\n    file.write('x')\n")
    help_text(capsys, "--plugins", name, name, "--plugins", name)
    plugins.load({name: "--plugins"})
    assert (tmp_path / "imported").read_text() == "x"


def test_the_current_directory_comes_after_the_tree(plugin, tmp_path):
    """A folder of the user's called models (or data) never hides the tree's own package."""
    plugins.load({plugin(""): "--plugins"})
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "__init__.py").write_text("raise ImportError('a folder of the user')\n")
    assert str(tmp_path) in sys.path  # where plugins are looked for
    found = importlib.machinery.PathFinder.find_spec("models", sys.path)
    assert found.origin == str(ROOT / "models" / "__init__.py")


def entry_point(site, module: str, distribution: str = "flipout-demo") -> None:
    """An installed distribution in `site` naming `module` in the group flipout.plugins."""
    info = site / f"{distribution.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {distribution}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[flipout.plugins]\ndemo = {module}\n")


def test_the_entry_point_group_is_imported_without_being_named(
    plugin, tmp_path, monkeypatch, capsys
):
    site = tmp_path / "site"
    site.mkdir()
    name = plugin(CUBED, folder=site)
    entry_point(site, name)
    monkeypatch.syspath_prepend(str(site))
    assert "--cubed_power" in help_text(capsys)


def test_an_entry_point_that_raises_is_one_line_naming_it(plugin, tmp_path, monkeypatch, capsys):
    site = tmp_path / "site"
    site.mkdir()
    name = plugin("raise RuntimeError('half installed')\n", folder=site)
    entry_point(site, name, "broken-plugin")
    monkeypatch.syspath_prepend(str(site))
    assert main.main(["-e", "1"]) == 2
    assert_one_error_line(
        capsys,
        f"flipout.plugins entry point demo = {name} (of broken-plugin): importing it raised "
        "RuntimeError: half installed",
    )


SWEEP = """
from experiments.sweeps import SWEEPS, Sweep


def commands(seeds):
    return [["-d", "digits", "-e", "1", "--prune_criterion", "cubed", "--seed", str(seed),
             "--logdir", "mine"] for seed in seeds]


SWEEPS["mine"] = Sweep("mine", "my own sweep, of my own criterion", commands, default_seeds=(0,))
"""


def test_a_plugin_sweep_is_listed_and_its_runs_import_the_plugin(plugin, monkeypatch, capsys):
    # the paper's sweeps aside: listing them takes seconds, and this one is what is tested
    own = {}
    monkeypatch.setattr(sweeps, "SWEEPS", own)
    monkeypatch.setattr(experiments, "SWEEPS", own)
    cubed = plugin(CUBED)
    name = plugin(f"import {cubed}\n{SWEEP}")
    assert experiments.main(["run", "mine", "--dry-run"]) == 2
    assert_one_error_line(capsys, "unknown sweep 'mine'")
    assert experiments.main(["--plugins", name, "list"]) == 0
    assert "my own sweep, of my own criterion" in capsys.readouterr().out
    assert experiments.main(["--plugins", name, "run", "mine", "--dry-run"]) == 0
    (command,) = capsys.readouterr().out.splitlines()
    assert f"--prune_criterion cubed --seed 0 --logdir mine --plugins {name} --run_dir " in command
