"""Fixtures that write tiny datasets in the real on-disk formats, so the real loading code runs
(the writers: tests/support/datasets.py), and a pruned run that tests read."""

from pathlib import Path

import pytest

from tests.support.datasets import write_cifar, write_imagenette, write_mnist


@pytest.fixture
def cifar_dir(tmp_path):
    """A data_dir holding CIFAR-10's batches (write_cifar)."""
    write_cifar(tmp_path)
    return tmp_path


@pytest.fixture
def mnist_dir(tmp_path):
    """A data_dir holding MNIST's IDX files (write_mnist)."""
    write_mnist(tmp_path)
    return tmp_path


@pytest.fixture
def imagenette_dir(tmp_path):
    """A data_dir holding Imagenette's class folders of JPEGs (write_imagenette)."""
    write_imagenette(tmp_path)
    return tmp_path


@pytest.fixture(scope="session")
def pruned_run(tmp_path_factory) -> Path:
    """LeNet-300-100 on digits pruned 7 times by half: 99.2% sparse. Read only: a test that
    changes its files works on a copy."""
    import main

    logdir = tmp_path_factory.mktemp("runs")
    argv = ["-e", "8", "--prune_freq", "1", "--num_workers", "0", "--quiet"]
    assert main.main([*argv, "--logdir", str(logdir)]) == 0
    (run,) = logdir.iterdir()
    return run
