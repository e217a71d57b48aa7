"""The library installs on its own: `pip install .` gives pruning/ as the package `flipout` and
nothing else, and the README's own-loop example runs against the installed package, from another
directory, with the repository nowhere on the path."""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.support import ROOT
from tests.support.blocks import README, code_block

# left out of the copy the wheel is built from: the build writes into its source tree
NOT_SOURCES = shutil.ignore_patterns(
    ".git", ".venv", "runs", "build", "dist", "*.egg-info", "__pycache__", ".*_cache"
)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel `pip install .` would install, built offline from a copy of the working tree."""
    work = tmp_path_factory.mktemp("wheel")
    shutil.copytree(ROOT, work / "source", ignore=NOT_SOURCES)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
         "--wheel-dir", str(work / "dist"), str(work / "source")],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    (built,) = (work / "dist").glob("flipout-*.whl")
    return built


def test_the_wheel_holds_the_library_and_nothing_else(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    code = sorted(name for name in names if ".dist-info/" not in name)
    library = sorted(f"flipout/{path.name}" for path in (ROOT / "pruning").glob("*.py"))
    assert code == library
    metadata = zipfile.ZipFile(wheel).read(
        next(name for name in names if name.endswith(".dist-info/METADATA"))
    )
    assert b"Requires-Dist: torch" in metadata


def test_the_readme_example_runs_against_the_installed_package(wheel, tmp_path):
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--target", str(site),
         str(wheel)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    example = code_block(README, "## FlipOut in your own training loop")
    assert "from flipout import" in example
    check = (
        "\nimport flipout, importlib.util\n"
        f"assert flipout.__file__.startswith({str(site)!r}), flipout.__file__\n"
        "for generic in ('pruning', 'utils', 'models', 'data', 'export', 'cli', 'main'):\n"
        "    assert importlib.util.find_spec(generic) is None, generic\n"
        "print('sparsity', round(pruner.masks.sparsity, 4))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    done = subprocess.run(
        [sys.executable, "-c", example + check],
        cwd=elsewhere, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "sparsity 0.75" in done.stdout
