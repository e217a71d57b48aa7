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


@pytest.mark.parametrize("seed", [0, 3])
def test_densenet224_starts_from_torchvisions_exact_weights(seed):
    # The paper's DenseNet is torchvision.models.densenet121(num_classes=10): same layers, built
    # and initialised in the same order, so the same seed gives the same tensors, buffers too.
    torch.manual_seed(seed)
    ours = build_model("densenet121", num_classes=10, image_size=224).state_dict()
    torch.manual_seed(seed)
    ref = torchvision.models.densenet121(num_classes=10).state_dict()
    assert len(ours) == len(ref)
    for (name, mine), (ref_name, theirs) in zip(ours.items(), ref.items(), strict=True):
        assert mine.shape == theirs.shape and torch.equal(mine, theirs), (name, ref_name)


def test_densenet_cifar_stem_has_torchvisions_init_too():
    torch.manual_seed(0)
    model = build_model("densenet121", num_classes=10, image_size=32)
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d):
            # He-normal: std sqrt(2 / fan_in)
            fan_in = module.weight[0].numel()
            assert module.weight.std().item() == pytest.approx((2 / fan_in) ** 0.5, rel=0.1)
        elif isinstance(module, torch.nn.BatchNorm2d):
            assert torch.all(module.weight == 1) and torch.all(module.bias == 0)
    assert torch.all(model.linear.bias == 0)


@pytest.mark.parametrize("name", ["vgg19", "resnet18"])
def test_vgg_and_resnet_keep_pytorchs_default_init_as_the_original(name):
    # The original's CIFAR VGG and ResNet set no init of their own: every conv and linear layer
    # keeps PyTorch's default, uniform within 1 / sqrt(fan_in) (std = bound / sqrt(3)).
    torch.manual_seed(0)
    for module in build_model(name).modules():
        if isinstance(module, torch.nn.Conv2d | torch.nn.Linear):
            bound = 1 / module.weight[0].numel() ** 0.5
            assert module.weight.abs().max().item() <= bound
            if module.weight.numel() >= 10_000:
                assert module.weight.std().item() == pytest.approx(bound / 3**0.5, rel=0.05)
            if module.bias is not None:
                assert module.bias.abs().max().item() <= bound
                assert module.bias.abs().max().item() > 0


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
