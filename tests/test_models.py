"""Shape, gradient and parameter-count checks for the model registry."""

import pytest
import torch
import torchvision

from models import MODELS, build_model


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    ("name", "kwargs", "expected"),
    [
        ("vgg19", {}, 20_040_522),
        ("resnet18", {}, 11_173_962),
        ("densenet121", {"image_size": 32}, 6_956_298),
        ("densenet121", {"image_size": 224}, 6_964_106),
        # 1024*300+300 + 300*100+100 + 100*10+10 = 307_500 + 30_100 + 1_010
        ("lenet300", {"in_channels": 1}, 338_610),
    ],
)
def test_pinned_parameter_counts(name, kwargs, expected):
    assert n_params(build_model(name, num_classes=10, **kwargs)) == expected


@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_forward_backward(name, in_channels):
    torch.manual_seed(0)
    num_classes = 7
    model = build_model(name, num_classes=num_classes, in_channels=in_channels, image_size=32)
    out = model(torch.randn(2, in_channels, 32, 32))
    assert out.shape == (2, num_classes)
    out.sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, missing


@pytest.mark.parametrize("name", ["lenet300", "lenet5", "conv6"])
def test_small_models_follow_image_size(name):
    model = build_model(name, num_classes=10, in_channels=1, image_size=28)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_unknown_name_lists_choices():
    with pytest.raises(ValueError) as err:
        build_model("alexnet")
    for name in MODELS:
        assert name in str(err.value)


def test_densenet224_matches_torchvision():
    ours = build_model("densenet121", num_classes=10, image_size=224)
    ref = torchvision.models.densenet121(num_classes=10)
    assert n_params(ours) == n_params(ref)

    def shapes(m):
        return sorted(tuple(p.shape) for p in m.parameters())

    assert shapes(ours) == shapes(ref)
    ours.eval()
    with torch.no_grad():
        assert ours(torch.randn(1, 3, 224, 224)).shape == (1, 10)


def test_parameters_live_on_plain_layers():
    # Pruning finds Conv2d/Linear by type and keys masks by parameter name, so every parameter
    # must be owned directly by one of these layers (or BN) and none may be shared.
    allowed = (torch.nn.Conv2d, torch.nn.Linear, torch.nn.BatchNorm2d)
    for name in MODELS:
        model = build_model(name)
        for mod_name, module in model.named_modules():
            if any(True for _ in module.parameters(recurse=False)):
                assert isinstance(module, allowed), f"{name}.{mod_name}: {type(module)}"
        assert len(list(model.named_parameters(remove_duplicate=False))) == len(
            list(model.parameters())
        ), name
