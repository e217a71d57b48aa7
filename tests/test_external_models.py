"""Models by name from timm and torchvision (-m timm:NAME, -m torchvision:NAME): built for the
run's classes, channels and image size, shaped by --model_kwargs, trained and resumed by main.py,
started from a state dict those libraries saved (--init_from), and every mistake one line. No
test reaches a hub: timm's is offline with an empty cache, torchvision's download is refused as
it is without a network."""

import socket
import sys
import time
import urllib.error
from types import SimpleNamespace

import pytest
import timm
import torch
import torchvision
from safetensors.torch import save_file

import cli
import main
import models
import models.__main__ as listing
from models import build_for_run, build_model, check_input_size, external
from tests.support.runs import (
    assert_identical,
    assert_one_error_line,
    only_run_dir,
    quick,
    summary,
)
from utils.checkpoint import CHECKPOINT
from utils.errors import UserError

TIMM_VIT = ["-m", "timm:vit_tiny_patch16_224", "--model_kwargs", "patch_size=4", "depth=2"]
TORCHVISION_VIT = ["-m", "torchvision:vit_b_16", "--model_kwargs", "patch_size=2",
                   "num_layers=2", "num_heads=2", "hidden_dim=32", "mlp_dim=64"]  # fmt: skip
# one epoch of two batches on digits (1x32x32, 10 classes)
SHORT = ["-d", "digits", "-e", "1", "--limit_batches", "2"]


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    import huggingface_hub.constants as hub

    def refuse(url, *args, **kwargs):
        raise urllib.error.URLError("no network in tests")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("timm:resnet18", None),
        ("timm:vit_tiny_patch16_224", {"patch_size": 4, "depth": 2}),
        ("torchvision:resnet18", None),
        ("torchvision:vit_b_16", {"patch_size": 4, "num_layers": 1, "num_heads": 2,
                                  "hidden_dim": 16, "mlp_dim": 32}),
    ],
)  # fmt: skip
@pytest.mark.parametrize("in_channels", [1, 3])
def test_a_network_for_the_runs_classes_channels_and_images(name, kwargs, in_channels):
    spec = {"name": name, "num_classes": 7, "in_channels": in_channels, "image_size": 16}
    if kwargs:
        spec["model_kwargs"] = kwargs
    check_input_size(spec)
    model = build_model(**spec)
    assert model(torch.randn(2, in_channels, 16, 16)).shape == (2, 7)


def digits_spec(name: str, **model_kwargs) -> dict:
    spec = {"name": name, "num_classes": 10, "in_channels": 1, "image_size": 32}
    return {**spec, "model_kwargs": model_kwargs} if model_kwargs else spec


def test_a_network_that_reshapes_by_the_batch_size_is_checked_on_a_real_batch():
    # levit reshapes to (batch, ..., -1): a batch of no images cannot tell its -1
    check_input_size(digits_spec("timm:levit_128s"))


@pytest.mark.parametrize("name", ["torchvision:swin_t", "torchvision:maxvit_t"])
def test_a_network_with_index_tables_is_accepted_or_refused_in_one_line(name):
    # their relative position tables would be read uninitialised on the meta device
    try:
        check_input_size(digits_spec(name))
    except UserError as error:
        assert str(error).startswith(f"-m {name} cannot take 32x32 images: ")
        assert "\n" not in str(error)


def test_checking_a_network_leaves_its_initial_weights_as_they_were():
    spec = digits_spec("timm:vit_tiny_patch16_224", patch_size=4, depth=2)
    torch.manual_seed(0)
    unchecked = build_model(**spec).state_dict()
    torch.manual_seed(0)
    check_input_size(spec)
    assert_identical(build_model(**spec).state_dict(), unchecked)


def test_a_run_checks_its_network_on_itself_and_leaves_it_as_built():
    """build_for_run builds once: the check's training pass leaves BatchNorm's statistics, the
    mode and the random streams as they were, so the run starts from the network a plain build
    gives."""
    spec = digits_spec("timm:resnet18")
    torch.manual_seed(0)
    plain = build_model(**spec).state_dict()
    after_plain = torch.get_rng_state()
    torch.manual_seed(0)
    model = build_for_run(spec)
    assert torch.equal(torch.get_rng_state(), after_plain)
    assert model.training
    assert_identical(model.state_dict(), plain)  # running means and counts included


# torchvision's notice that a future release initialises googlenet otherwise is not shown
@pytest.mark.filterwarnings("always")
def test_a_network_with_auxiliary_logits_in_training_trains_without_them(tmp_path, capsys):
    googlenet = ["-m", "torchvision:googlenet", *SHORT]
    assert main.main(quick(tmp_path, *googlenet)) == 2
    assert_one_error_line(capsys, "returns GoogLeNetOutputs in training, not logits",
                          "--model_kwargs aux_logits=False")  # fmt: skip
    assert not (tmp_path / "runs").exists()
    assert main.main(quick(tmp_path, *googlenet, "--model_kwargs", "aux_logits=False")) == 0
    assert summary(only_run_dir(tmp_path / "runs"))["status"] == "completed"


def test_model_kwargs_shape_torchvisions_vit():
    reduced = build_model("torchvision:vit_b_16", 10, 1, 8, {"patch_size": 2, "num_layers": 2,
                          "num_heads": 2, "hidden_dim": 32, "mlp_dim": 64})  # fmt: skip
    assert (reduced.patch_size, reduced.hidden_dim, len(reduced.encoder.layers)) == (2, 32, 2)
    assert reduced.conv_proj.in_channels == 1


def test_model_kwargs_are_literals_kept_in_a_canonical_spelling():
    given = ["drop_rate=0.1", "act_layer=gelu", "global_pool='avg'", "img=(8, 8)"]
    args = cli.parse_args(["-m", "timm:resnet18", "--model_kwargs", *given])
    # sorted, so that the same arguments in another order are the same run on resume
    assert args.model.model_kwargs == ["act_layer='gelu'", "drop_rate=0.1", "global_pool='avg'",
                                       "img=(8, 8)"]  # fmt: skip
    assert cli.keyword_arguments(args.model.model_kwargs) == {
        "act_layer": "gelu", "drop_rate": 0.1, "global_pool": "avg", "img": (8, 8)
    }  # fmt: skip


def test_a_timm_vit_trains_saves_and_resumes_as_the_same_network(tmp_path, capsys):
    run_dir = tmp_path / "vit"
    argv = quick(tmp_path, *TIMM_VIT, *SHORT, "--save_model", "--run_dir", str(run_dir))
    assert main.main(argv) == 0
    spec = torch.load(run_dir / "model.pt", weights_only=True)["spec"]
    assert spec["model_kwargs"] == {"depth": 2, "patch_size": 4}
    assert len(build_model(**spec).blocks) == 2
    # a plain --resume rebuilds the same network from config.json's options
    assert main.main(["--resume", str(run_dir), "-e", "2", "--num_workers", "0", "--quiet"]) == 0
    assert summary(run_dir)["status"] == "completed"
    assert torch.load(run_dir / CHECKPOINT, weights_only=True)["model_spec"] == spec
    capsys.readouterr()
    # and refuses another one, like another -m
    other = ["--resume", str(run_dir), "--model_kwargs", "patch_size=8", "depth=2"]
    assert main.main(other) == 2
    assert_one_error_line(capsys, "that run has --model_kwargs depth=2 patch_size=4")


def test_a_shape_reduced_torchvision_vit_trains(tmp_path):
    assert main.main(quick(tmp_path, *TORCHVISION_VIT, *SHORT)) == 0
    run = summary(only_run_dir(tmp_path / "runs"))
    assert run["status"] == "completed" and run["model"] == "torchvision:vit_b_16"


def test_a_built_in_spec_is_as_before_model_kwargs():
    splits = SimpleNamespace(num_classes=10, in_channels=1, image_size=32)
    spec = main.model_spec(cli.parse_args(["-m", "lenet5"]).model, splits)
    assert spec == {"name": "lenet5", "num_classes": 10, "in_channels": 1, "image_size": 32}


# a command line -> what its one error line names
MISTAKES = [
    (["-m", "timm:vit_tiny_patch16_224", "--model_kwargs", "patch_size=5", "depth=1"],
     ["patch size 5", "32x32", "--model_kwargs patch_size=N", "1, 2, 4, 8, 16, 32",
      "--image_size"]),
    (["-m", "torchvision:vit_b_16", "-d", "synthetic", "--image_size", "24"],
     ["patch size 16", "24x24", "--model_kwargs patch_size=N", "a multiple of 16"]),
    (["-m", "timm:vit_tiny_patch16"], ["timm:vit_tiny_patch16_224", "python -m models list"]),
    (["-m", "alexnet"], ["unknown model 'alexnet'", "timm:NAME", "python -m models list"]),
    (["-m", "torchvision:maxvit_t"], ["-m torchvision:maxvit_t cannot take 32x32 images"]),
    (["-m", "timm:resnet18", "--model_kwargs", "no_such_argument=1"], ["no_such_argument"]),
    (["-m", "timm:resnet18", "--model_kwargs", "in_chans=3"], ["in_chans", "dataset"]),
    (["-m", "timm:resnet18", "--model_kwargs", "depth"], ["not KEY=VALUE"]),
    (["-m", "lenet5", "--model_kwargs", "depth=2"], ["built-in", "--model_kwargs"]),
    (["-m", "lenet5", "--pretrained"], ["built-in", "no pretrained weights"]),
    (["-m", "timm:resnet18", "--pretrained", "--init_from", "x.pth"], ["give one"]),
    # timm would read the file itself, unchecked, and print its own line when it is not there
    (["-m", "timm:resnet18", "--model_kwargs", "checkpoint_path=x.pth"],
     ["cannot set checkpoint_path", "--init_from FILE"]),
]  # fmt: skip


@pytest.mark.parametrize(("argv", "names"), MISTAKES, ids=[" ".join(a) for a, _ in MISTAKES])
def test_mistakes_are_one_line(tmp_path, capsys, argv, names):
    assert main.main(quick(tmp_path, *argv, "-e", "1")) == 2
    assert_one_error_line(capsys, *names)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("name", ["timm:resnet18", "torchvision:resnet18"])
def test_pretrained_weights_out_of_reach_are_one_line_that_points_to_init_from(
    tmp_path, capsys, name
):
    assert main.main(quick(tmp_path, "-m", name, *SHORT, "--pretrained")) == 2
    assert_one_error_line(capsys, "--pretrained", name, "could not be downloaded", "--init_from")


def test_pretrained_weights_offline_are_one_line_at_once_without_the_hubs_retries(
    tmp_path, capsys, monkeypatch
):
    """Offline, the hub retried each file for a minute, printing 22 lines before the error."""
    import huggingface_hub.constants as hub

    def offline(*args, **kwargs):
        raise socket.gaierror(-2, "Name or service not known")

    def retried(seconds):
        raise AssertionError(f"the hub waits {seconds} s to retry")

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(socket, "create_connection", offline)
    monkeypatch.setattr(time, "sleep", retried)
    assert main.main(quick(tmp_path, "-m", "timm:resnet18", *SHORT, "--pretrained")) == 2
    offline = "huggingface.co cannot be reached (offline?)"
    assert_one_error_line(capsys, "--pretrained", "timm:resnet18", offline, "--init_from FILE")


def test_torchs_downloading_line_is_not_shown_before_a_failed_download(
    tmp_path, capsys, monkeypatch
):
    # the host answers, but the download fails (the fixture refuses it)
    monkeypatch.setattr(external, "reachable", lambda url: True)
    assert main.main(quick(tmp_path, "-m", "torchvision:resnet18", *SHORT, "--pretrained")) == 2
    line = assert_one_error_line(capsys, "--pretrained", "could not be downloaded or loaded")
    assert "Downloading" not in line


def test_without_timm_the_line_says_how_to_install_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm fails
    assert main.main(quick(tmp_path, "-m", "timm:resnet18", *SHORT)) == 2
    assert_one_error_line(capsys, "pip install timm==1.0.31")


def test_init_from_timms_state_dict_for_1000_classes_of_rgb_images(tmp_path, capsys):
    published = timm.create_model("resnet18")  # 1,000 classes, 3 channels
    torch.save(published.state_dict(), tmp_path / "resnet18.pth")
    spec = {"name": "timm:resnet18", "num_classes": 10, "in_channels": 1, "image_size": 32}
    model = build_model(**spec)
    fresh_fc = model.fc.weight.clone()
    main.init_from(str(tmp_path / "resnet18.pth"), model, spec)
    line = capsys.readouterr().out.splitlines()[0]
    assert line.endswith("fc.weight, fc.bias left at initialisation")
    # timm's adapt_input_conv: the RGB filters summed for one channel
    assert torch.equal(model.conv1.weight, published.conv1.weight.sum(dim=1, keepdim=True))
    assert torch.equal(model.layer4[1].conv2.weight, published.layer4[1].conv2.weight)
    assert torch.equal(model.fc.weight, fresh_fc)


def test_init_from_a_safetensors_file_resamples_a_vits_position_embedding(tmp_path, capsys):
    # timm's hub format, for 224x224 images and 1,000 classes: 56x56 patches of 4 pixels
    published = timm.create_model("vit_tiny_patch16_224", patch_size=4, depth=2)
    save_file(published.state_dict(), tmp_path / "model.safetensors")
    argv = quick(tmp_path, *TIMM_VIT, *SHORT, "--init_from", str(tmp_path / "model.safetensors"))
    assert main.main([*argv, "--prune_criterion", "none", "--save_model"]) == 0
    out = capsys.readouterr().out
    assert "head.weight, head.bias left at initialisation" in out
    assert "(state dict)" in out
    spec = torch.load(only_run_dir(tmp_path / "runs") / "model.pt", weights_only=True)["spec"]
    assert build_model(**spec).pos_embed.shape == (1, 1 + 8 * 8, 192)


def test_init_from_torchvisions_state_dict_adapts_the_first_convolution(tmp_path, capsys):
    published = torchvision.models.resnet18()
    torch.save(published.state_dict(), tmp_path / "resnet18.pth")
    spec = {"name": "torchvision:resnet18", "num_classes": 10, "in_channels": 1, "image_size": 32}
    model = build_model(**spec)
    main.init_from(str(tmp_path / "resnet18.pth"), model, spec)
    assert "fc.weight, fc.bias left at initialisation" in capsys.readouterr().out
    assert torch.equal(model.conv1.weight, published.conv1.weight.sum(dim=1, keepdim=True))


def test_init_from_a_state_dict_of_another_depth_is_one_line(tmp_path, capsys):
    torch.save(timm.create_model("vit_tiny_patch16_224", patch_size=4, depth=3).state_dict(),
               tmp_path / "deeper.pth")  # fmt: skip
    argv = quick(tmp_path, *TIMM_VIT, *SHORT, "--init_from", str(tmp_path / "deeper.pth"))
    assert main.main(argv) == 2
    assert_one_error_line(capsys, "--init_from", "another network", "blocks.2")


def test_list_names_matching_a_glob(capsys):
    assert listing.main(["list", "vit_tiny*"]) == 0
    names = capsys.readouterr().out.splitlines()
    assert "timm:vit_tiny_patch16_224" in names
    assert all(name.startswith("timm:vit_tiny") for name in names)
    assert listing.main(["list", "torchvision:vit_b*"]) == 0
    assert capsys.readouterr().out.splitlines() == ["torchvision:vit_b_16", "torchvision:vit_b_32"]
    assert listing.main(["list", "vgg1?"]) == 0
    names = capsys.readouterr().out.splitlines()
    assert names[:5] == ["vgg11", "vgg13", "vgg16", "vgg19", "timm:vgg11"]  # the built-ins first


# -- what the network's constructor shows before any of its memory exists --------------------


@pytest.fixture
def never_built(monkeypatch):
    """A network that would be built (on the CPU, with its memory) fails the test."""

    def built(spec, *args, **kwargs):
        raise AssertionError(f"{spec['name']} was built")

    monkeypatch.setattr(models, "checked_build", built)


def test_a_network_whose_patches_do_not_tile_the_images_is_refused_unbuilt(
    tmp_path, capsys, never_built
):
    # 632 million parameters, 2.5 GB, for 224x224 images in patches of 14: digits are 32x32
    assert main.main(quick(tmp_path, "-m", "timm:vit_huge_patch14_224", *SHORT)) == 2
    assert_one_error_line(capsys, "-m timm:vit_huge_patch14_224 cannot take 32x32 images",
                          "patch size 14")  # fmt: skip


@pytest.mark.parametrize(
    ("argv", "memory", "names"),
    [(["-m", "timm:vit_tiny_patch16_224", "--model_kwargs", "embed_dim=1200000"], None,
      ["--model_kwargs embed_dim=1200000 would take 829.4 TB",
       "207,360,517,200,010 parameters alone", "of memory available"]),
     (["-m", "timm:resnet18"], 10**6,
      ["-m timm:resnet18 would take 44.7 MB", "more than the 1.0 MB of memory available"])],
)  # fmt: skip
def test_a_network_larger_than_memory_is_refused_unbuilt(
    tmp_path, capsys, monkeypatch, never_built, argv, memory, names
):
    if memory is not None:
        monkeypatch.setattr(models, "available_memory", lambda: memory)
    assert main.main(quick(tmp_path, *argv, *SHORT)) == 2
    assert_one_error_line(capsys, *names)
    assert not (tmp_path / "runs").exists()


def test_a_network_of_more_layers_than_any_is_refused_as_it_is_built(
    tmp_path, capsys, monkeypatch, never_built
):
    """depth=100000 would take minutes to build even on the meta device: the layers are
    counted as they are registered (a limit of 50 here, for speed) and the build stops there."""
    monkeypatch.setattr(models, "MOST_LAYERS", 50)
    argv = ["-m", "timm:vit_tiny_patch16_224", "--model_kwargs", "patch_size=4", "depth=100000"]
    assert main.main(quick(tmp_path, *argv, *SHORT)) == 2
    assert_one_error_line(capsys, "depth=100000", "has more than 50 layers")
