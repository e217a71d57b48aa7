"""The library on networks it was not written for: timm's and torchvision's, pruned in a loop of
their own with `step_hooks=True`.

For each network: the prunable set holds every weight matrix the forward pass multiplies with
(found by watching the calls, not by a type list), each prune reaches exactly the sparsity the
schedule asks for across the whole network, and every pruned weight is exactly zero after every
optimizer step that follows it (momentum and weight decay would move it otherwise).
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from pruning import Periodic, Pruner, prunable_parameters

timm = pytest.importorskip("timm")
torchvision = pytest.importorskip("torchvision")

# the calls in which a parameter is a factor of a product with the input
PRODUCTS = {
    F.linear, F.bilinear, F.conv1d, F.conv2d, F.conv3d, F.conv_transpose1d, F.conv_transpose2d,
    F.conv_transpose3d, torch.matmul, torch.mm, torch.bmm, torch.addmm, torch.einsum,
    torch.Tensor.matmul, torch.Tensor.__matmul__, torch.Tensor.mm, torch.Tensor.bmm,
    F.multi_head_attention_forward, torch._native_multi_head_attention,
}  # fmt: skip


class Multiplied(TorchFunctionMode):
    """Records the parameters with two or more dimensions passed to a product."""

    def __init__(self, params: set[int]):
        super().__init__()
        self.params, self.seen = params, set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in PRODUCTS:
            for value in [*args, *kwargs.values()]:
                for item in value if isinstance(value, list | tuple) else [value]:
                    if torch.is_tensor(item) and item.dim() >= 2 and id(item) in self.params:
                        self.seen.add(id(item))
        return func(*args, **kwargs)


def multiplied_weights(model: nn.Module, inputs: torch.Tensor) -> set[str]:
    """The names of the parameters the forward pass on `inputs` multiplies with."""
    names = {id(p): name for name, p in model.named_parameters()}
    watch = Multiplied(set(names))
    with watch, torch.no_grad():
        model(inputs)
    return {names[i] for i in watch.seen}


def tiny_vit_torchvision(**kwargs) -> nn.Module:
    from torchvision.models import VisionTransformer

    shape = dict(image_size=32, patch_size=4, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64)
    return VisionTransformer(**shape, num_classes=10)


ZOO = {
    "timm:resnet18": lambda: timm.create_model("resnet18", num_classes=10),
    "timm:convnext_atto": lambda: timm.create_model("convnext_atto", num_classes=10),
    "timm:efficientnet_b0": lambda: timm.create_model("efficientnet_b0", num_classes=10),
    "timm:deit_tiny": lambda: timm.create_model(
        "deit_tiny_patch16_224", num_classes=10, img_size=32, patch_size=4, depth=2
    ),
    "torchvision:vit (nn.MultiheadAttention)": tiny_vit_torchvision,
}


@pytest.mark.parametrize("name", list(ZOO))
def test_every_weight_matrix_the_network_multiplies_with_is_prunable(name):
    torch.manual_seed(0)
    model = ZOO[name]().eval()
    prunable = set(prunable_parameters(model))
    multiplied = multiplied_weights(model, torch.randn(2, 3, 32, 32))
    assert multiplied, "the watch saw no product: it is blind, not the network"
    assert multiplied <= prunable, f"skipped: {sorted(multiplied - prunable)}"
    # and nothing that is not a product's factor: no norm, embedding or token
    assert all(prunable_parameters(model)[n].dim() >= 2 for n in prunable)


@pytest.mark.parametrize("name", list(ZOO))
def test_flipout_with_step_hooks_prunes_exactly_and_pruned_weights_stay_zero(name):
    torch.manual_seed(0)
    model = ZOO[name]().train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    pruner = Pruner(model, "flipout", Periodic(rate=0.5, every=1), noise_scale=1.0, seed=1)
    pruner.attach_optimizer(optimizer, step_hooks=True)
    inputs, targets = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    total = pruner.masks.num_total
    live = total
    for epoch in range(2):
        for _step in range(2):
            optimizer.zero_grad()
            F.cross_entropy(model(inputs), targets).backward()
            optimizer.step()  # the pruner's hooks run inside
            for param_name, param in pruner.params.items():
                dead = ~pruner.masks[param_name]
                assert not param[dead].any(), f"{param_name}: a pruned weight moved"
        # the weights that flipped are the first to go, so look before the first prune
        assert epoch or pruner.flips.total() > 0, "no flip was counted"
        event = pruner.end_of_epoch()
        live -= int(0.5 * live)  # Periodic: rate of the live weights, rounded down
        assert event is not None and event.live == live == pruner.masks.num_live
        assert pruner.sparsity == 1 - live / total


def test_multihead_attention_with_other_key_sizes_prunes_its_three_projections():
    attention = nn.MultiheadAttention(16, 2, kdim=8, vdim=4)
    names = set(prunable_parameters(attention))
    assert names == {"q_proj_weight", "k_proj_weight", "v_proj_weight", "out_proj.weight"}
    packed = nn.MultiheadAttention(16, 2)
    assert set(prunable_parameters(packed)) == {"in_proj_weight", "out_proj.weight"}
    assert set(prunable_parameters(packed, prune_bias=True)) == {
        "in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias"
    }  # fmt: skip
