"""export.weights on the files a real run writes: every format gives back the run's weights and,
where the file has them, its masks; they load into a fresh network; and every file that holds
no usable weights, or weights for another network, ends in one line naming the flag and path."""

import datetime
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

import main
from export import formats as export
from export.weights import Weights, load_weights, read_weights
from models import build_model
from utils.errors import UserError

SPEC = {"name": "lenet300", "num_classes": 10, "in_channels": 1, "image_size": 32}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """LeNet-300-100 on digits, pruned once by half, with model.pt and checkpoint.pt."""
    run = tmp_path_factory.mktemp("runs") / "run"
    argv = ["-m", "lenet300", "-d", "digits", "-e", "2", "--prune_freq", "1"]
    argv += ["--limit_batches", "3", "--num_workers", "0", "--quiet", "--save_model"]
    assert main.main([*argv, "--run_dir", str(run)]) == 0
    return run


@pytest.fixture(scope="module")
def saved(run_dir) -> dict:
    """The run's model.pt, as main.py wrote it."""
    return torch.load(run_dir / "model.pt", weights_only=True)


def same_bits(found: torch.Tensor, expected: torch.Tensor) -> bool:
    return found.dtype == expected.dtype and torch.equal(
        found.flatten().view(torch.uint8), expected.flatten().view(torch.uint8)
    )


def one_line_error(path: Path, call: Callable[[], object], flag: str = "--init_from") -> str:
    with pytest.raises(UserError) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{flag} {path}: ")
    return message


# -- each format, written for real ------------------------------------------------------------


def exported(fmt: str) -> Callable[[Path, dict, Path], Path]:
    def write(run_dir: Path, saved: dict, tmp_path: Path) -> Path:
        export.export(run_dir, fmt, tmp_path / f"{fmt}.pt")
        return tmp_path / f"{fmt}.pt"

    return write


def saved_as(make: Callable[[dict], object]) -> Callable[[Path, dict, Path], Path]:
    def write(run_dir: Path, saved: dict, tmp_path: Path) -> Path:
        torch.save(make(saved), tmp_path / "weights.pt")
        return tmp_path / "weights.pt"

    return write


def without_model_file(run_dir: Path, saved: dict, tmp_path: Path) -> Path:
    shutil.copy(run_dir / "checkpoint.pt", tmp_path / "checkpoint.pt")
    return tmp_path


def data_parallel(saved: dict) -> dict:
    model = build_model(**saved["spec"])
    model.load_state_dict(saved["state_dict"])
    return nn.DataParallel(model).state_dict()


# (how to write it, the kind read_weights names, whether the file carries masks)
SOURCES = {
    "model.pt": (lambda run_dir, saved, tmp: run_dir / "model.pt", "model.pt", True),
    "checkpoint.pt": (lambda run_dir, saved, tmp: run_dir / "checkpoint.pt", "checkpoint", True),
    "run directory": (lambda run_dir, saved, tmp: run_dir, "model.pt", True),
    "run directory without model.pt": (without_model_file, "checkpoint", True),
    "dense": (exported("dense"), "dense export", False),
    "torch_prune": (exported("torch_prune"), "torch_prune export", True),
    "sparse": (exported("sparse"), "sparse export", True),
    "state dict": (saved_as(lambda saved: saved["state_dict"]), "state dict", False),
    "wrapped state dict": (
        saved_as(lambda saved: {"state_dict": saved["state_dict"], "epoch": 2}),
        "state dict",
        False,
    ),
    "DataParallel state dict": (saved_as(data_parallel), "state dict", False),
}


@pytest.mark.parametrize("source", SOURCES)
def test_every_format_gives_the_runs_weights_and_masks(run_dir, saved, tmp_path, source):
    write, kind, has_masks = SOURCES[source]
    path = write(run_dir, saved, tmp_path)
    weights = read_weights(path)
    assert weights.kind == kind
    assert weights.source == str(path)
    assert list(weights.state_dict) == list(saved["state_dict"])
    for name, tensor in saved["state_dict"].items():
        if source == "sparse":
            # CSR stores no pruned weight, so not the sign of a pruned weight's zero either
            assert torch.equal(weights.state_dict[name], tensor)
        else:
            assert same_bits(weights.state_dict[name], tensor), name
    if has_masks:
        # this run pruned every prunable tensor, so the sparse export has all the masks too
        assert weights.masks.keys() == saved["masks"].keys()
        for name, mask in saved["masks"].items():
            assert weights.masks[name].dtype == torch.bool
            assert torch.equal(weights.masks[name], mask)
            assert not weights.state_dict[name][~mask].any()
    else:
        assert weights.masks is None
    assert weights.spec == (None if "state dict" in source else SPEC)


def test_loading_makes_a_fresh_network_the_runs(run_dir, saved):
    model = build_model(**SPEC)
    load_weights(model, read_weights(run_dir / "checkpoint.pt"))
    assert all(torch.equal(model.state_dict()[name], t) for name, t in saved["state_dict"].items())
    trained = build_model(**SPEC)
    trained.load_state_dict(saved["state_dict"])
    inputs = torch.randn(4, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(model(inputs), trained(inputs))


def test_weights_for_another_network_are_named_by_key(tmp_path):
    lenet5 = {**SPEC, "name": "lenet5"}
    path = tmp_path / "lenet5.pt"
    torch.save({"spec": lenet5, "state_dict": build_model(**lenet5).state_dict()}, path)
    weights = read_weights(path)
    assert weights.kind == "dense export"
    message = one_line_error(path, lambda: load_weights(build_model(**SPEC), weights))
    assert message == (
        f"--init_from {path}: its weights are for another network (the file holds a lenet5 for "
        "10 classes of 1x32x32 images): missing 1.weight, 1.bias, 5.weight (and 1 more); "
        "unexpected 0.weight, 0.bias, 7.weight (and 5 more); shape of 3.weight is 16x6x5x5 in "
        "the file, 100x300 here; shape of 3.bias is 16 in the file, 100 here"
    )


def test_other_image_sizes_are_named_by_shape(tmp_path):
    path = tmp_path / "state.pt"
    torch.save(build_model(**SPEC).state_dict(), path)
    small = build_model(**{**SPEC, "image_size": 8})
    message = one_line_error(path, lambda: load_weights(small, read_weights(path)))
    assert message == (
        f"--init_from {path}: its weights are for another network: shape of 1.weight is 300x1024 "
        "in the file, 300x64 here"
    )


@pytest.mark.parametrize(
    ("masks", "reason"),
    [
        ({"1.weight": torch.ones(300, 1024)}, "'1.weight' are torch.float32, not bool"),
        ({"1.weight": torch.ones(300, 64, dtype=torch.bool)}, "'1.weight' has shape (300, 64)"),
        ({"2.weight": torch.ones(300, 1024, dtype=torch.bool)}, "no parameter '2.weight'"),
    ],
)
def test_masks_that_are_not_the_networks_are_refused(masks, reason):
    model = build_model(**SPEC)
    weights = Weights(model.state_dict(), masks, SPEC, "model.pt", source="w.pt")
    message = one_line_error(Path("w.pt"), lambda: load_weights(build_model(**SPEC), weights))
    assert reason in message


# -- files without usable weights -------------------------------------------------------------


def edited(edit: Callable[[dict], None], name: str = "model.pt"):
    """The run's `name` (model.pt, checkpoint.pt or an export format) changed by `edit`."""

    def write(run_dir: Path, tmp_path: Path) -> Path:
        source = run_dir / name
        if name in export.FORMATS:
            source = tmp_path / "export.pt"
            export.export(run_dir, name, source)
        payload = torch.load(source, weights_only=True)
        edit(payload)
        torch.save(payload, tmp_path / "edited.pt")
        return tmp_path / "edited.pt"

    return write


def written(content: object, name: str = "file.pt"):
    """A text file when `content` is a string, else `content` as torch.save writes it."""

    def write(run_dir: Path, tmp_path: Path) -> Path:
        path = tmp_path / name
        if isinstance(content, str):
            path.write_text(content)
        else:
            torch.save(content, path)
        return path

    return write


def truncated(run_dir: Path, tmp_path: Path) -> Path:
    data = (run_dir / "model.pt").read_bytes()
    (tmp_path / "model.pt").write_bytes(data[: len(data) // 2])
    return tmp_path / "model.pt"


def truncated_in_run_dir(run_dir: Path, tmp_path: Path) -> Path:
    truncated(run_dir, tmp_path)
    return tmp_path


def corrupt_csr(payload: dict) -> None:
    payload["sparse"]["1.weight"]["crow_indices"][5] = 10**6


BAD_FILES = {
    "missing": (lambda run_dir, tmp: tmp / "missing.pt", "no such file or directory"),
    "empty directory": (lambda run_dir, tmp: tmp, "no model.pt or checkpoint.pt there"),
    "truncated": (truncated, "unreadable"),
    "truncated in a run directory": (truncated_in_run_dir, ": model.pt: unreadable"),
    "text": (written("epoch 1: 97.5%\n", "notes.txt"), "unreadable"),
    "code": (written({"when": datetime.date(2020, 1, 1)}), "would call or build datetime.date"),
    "a list": (written([torch.zeros(1)]), "it holds a list, which is none of"),
    "dict of non-tensors": (
        written({"lr": 0.1, "model": "lenet300"}),
        "it holds a dict with keys 'lr', 'model', which is none of",
    ),
    "float masks": (
        edited(lambda p: p["masks"].update({"1.weight": p["masks"]["1.weight"].float()})),
        "its masks for '1.weight' are torch.float32, not bool",
    ),
    "mask of no parameter": (
        edited(lambda p: p["masks"].update({"9.weight": torch.ones(3, dtype=torch.bool)})),
        "it has no parameter '9.weight'",
    ),
    "unknown model": (
        edited(lambda p: p["spec"].update(name="lenet301")),
        "is not a network: unknown model 'lenet301'",
    ),
    "weights of another spec": (
        edited(lambda p: p["spec"].update(image_size=28)),
        "its weights do not fit its spec",
    ),
    "damaged checkpoint": (
        edited(lambda p: p["model"].update({"1.bias": 0.5}), "checkpoint.pt"),
        "a damaged checkpoint: its 'model' is not what main.py writes",
    ),
    "torch_prune without a mask": (
        edited(lambda p: p["state_dict"].pop("3.weight_mask"), "torch_prune"),
        "lacks 3.weight_orig or 3.weight_mask",
    ),
    "damaged CSR": (edited(corrupt_csr, "sparse"), "its sparse tensors are damaged"),
    "enormous CSR shape": (
        edited(lambda p: p["sparse"]["1.weight"].update(shape=[10**6, 10**6]), "sparse"),
        "its sparse '1.weight' does not have the shape",
    ),
}


@pytest.mark.parametrize("case", BAD_FILES)
def test_a_file_without_usable_weights_is_one_line(run_dir, tmp_path, case):
    write, reason = BAD_FILES[case]
    path = write(run_dir, tmp_path)
    assert reason in one_line_error(path, lambda: read_weights(path))


def test_the_flag_leads_the_line(tmp_path):
    path = tmp_path / "missing.pt"
    one_line_error(path, lambda: read_weights(path, flag="--teacher"), flag="--teacher")
