"""ResNet for small images (CIFAR-style stem: 3x3 conv, no max-pool).

He, Zhang, Ren & Sun, "Deep Residual Learning for Image Recognition", CVPR 2016. The 18-layer
network keeps the ImageNet widths (64-512) and stage depths, but drops the 7x7 stride-2 stem and
the max-pool so 32x32 inputs are not downsampled before the first stage.
"""

import torch.nn.functional as F
from torch import nn


class BasicBlock(nn.Module):
    """Two 3x3 convs with an identity or 1x1-projection shortcut."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        out_planes = planes * self.expansion
        # A projection is needed only when the residual cannot be added as-is.
        if stride != 1 or in_planes != out_planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_planes),
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(self, block, num_blocks, num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        self.in_planes = 64
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, 64, 3, padding=1, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
        )
        stages = []
        for planes, blocks, stride in zip(
            (64, 128, 256, 512), num_blocks, (1, 2, 2, 2), strict=True
        ):
            stages.append(self._stage(block, planes, blocks, stride))
        self.layers = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(512 * block.expansion, num_classes)

    def _stage(self, block, planes: int, blocks: int, stride: int) -> nn.Sequential:
        # Only the first block of a stage changes resolution.
        layers = []
        for s in [stride] + [1] * (blocks - 1):
            layers.append(block(self.in_planes, planes, s))
            self.in_planes = planes * block.expansion
        return nn.Sequential(*layers)

    def forward(self, x):
        return self.linear(self.pool(self.layers(self.stem(x))).flatten(1))


def resnet18(num_classes: int = 10, in_channels: int = 3, image_size: int = 32) -> ResNet:
    """ResNet-18; image_size is accepted for a uniform factory signature."""
    return ResNet(BasicBlock, (2, 2, 2, 2), num_classes, in_channels)
