"""DenseNet-BC for CIFAR-sized and ImageNet-sized inputs.

Huang, Liu, van der Maaten & Weinberger, "Densely Connected Convolutional Networks", CVPR 2017.
The BC variant uses 1x1 bottlenecks (to 4 * growth channels) and transitions that halve the
channel count. Inputs below 64 pixels get a single 3x3 stem conv so the four dense blocks still
see useful resolutions; larger inputs get the paper's ImageNet stem (7x7/2 conv + 3x3/2 pool),
which makes the 121-layer network parameter-for-parameter equal to torchvision's densenet121.

Initialisation is torchvision's (the paper's DenseNet is `torchvision.models.densenet121`):
Kaiming-normal convolutions, BatchNorm at weight 1 and bias 0, a zero classifier bias. Layers
are built and initialised in torchvision's order, so at the same seed the ImageNet-stem network
starts from torchvision's exact weights.
"""

import torch
import torch.nn.functional as F
from torch import nn


class Bottleneck(nn.Module):
    """BN-ReLU-1x1 conv, BN-ReLU-3x3 conv; the new features are appended to the input."""

    def __init__(self, in_planes: int, growth_rate: int):
        super().__init__()
        inner = 4 * growth_rate
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, inner, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(inner)
        self.conv2 = nn.Conv2d(inner, growth_rate, 3, padding=1, bias=False)

    def forward(self, x):
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(out)))
        return torch.cat([x, out], 1)


class Transition(nn.Module):
    """BN-ReLU-1x1 conv to compress channels, then 2x2 average pooling."""

    def __init__(self, in_planes: int, out_planes: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(in_planes)
        self.conv = nn.Conv2d(in_planes, out_planes, 1, bias=False)

    def forward(self, x):
        return F.avg_pool2d(self.conv(F.relu(self.bn(x))), 2)


class DenseNet(nn.Module):
    def __init__(
        self,
        block_config=(6, 12, 24, 16),
        growth_rate: int = 32,
        reduction: float = 0.5,
        num_classes: int = 10,
        in_channels: int = 3,
        image_size: int = 32,
    ):
        super().__init__()
        planes = 2 * growth_rate
        if image_size < 64:
            # No BN here: the first bottleneck's pre-activation BN normalises the stem output.
            self.stem = nn.Conv2d(in_channels, planes, 3, padding=1, bias=False)
        else:
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, planes, 7, stride=2, padding=3, bias=False),
                nn.BatchNorm2d(planes),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(3, stride=2, padding=1),
            )
        stages: list[nn.Module] = []
        for i, depth in enumerate(block_config):
            for _ in range(depth):
                stages.append(Bottleneck(planes, growth_rate))
                planes += growth_rate
            if i < len(block_config) - 1:
                out_planes = int(planes * reduction)
                stages.append(Transition(planes, out_planes))
                planes = out_planes
        self.features = nn.Sequential(*stages)
        # Pre-activation blocks leave the last output un-normalised, hence the closing BN.
        self.bn = nn.BatchNorm2d(planes)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(planes, num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """torchvision's DenseNet init. PyTorch's default conv init would leave the weights about
        2.4x smaller in std (a = sqrt(5) uniform instead of He-normal), which changes the
        effective learning rate under BatchNorm and weight decay and the first magnitude ranks."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.zeros_(module.bias)

    def forward(self, x):
        out = F.relu(self.bn(self.features(self.stem(x))))
        return self.linear(self.pool(out).flatten(1))


def densenet121(num_classes: int = 10, in_channels: int = 3, image_size: int = 32) -> DenseNet:
    """DenseNet-BC-121 (growth 32); the stem is picked from image_size."""
    return DenseNet((6, 12, 24, 16), 32, 0.5, num_classes, in_channels, image_size)
