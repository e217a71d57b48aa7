"""VGG networks for small-image classification.

Simonyan & Zisserman, "Very Deep Convolutional Networks for Large-Scale Image Recognition",
ICLR 2015. The convolutional trunk follows the paper's configurations A/B/D/E; the head is the
CIFAR variant common in pruning work (batch norm after every conv, one linear classifier), so
the bulk of the prunable weights sits in the convolutions.
"""

from torch import nn

# Channel counts of the 3x3 convs per configuration; "M" is a 2x2 max-pool.
# fmt: off
cfg: dict[str, list[int | str]] = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
              512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512, "M"],
}
# fmt: on


class VGG(nn.Module):
    def __init__(self, cfg: list[int | str], num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for item in cfg:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [
                    nn.Conv2d(channels, item, 3, padding=1),
                    nn.BatchNorm2d(item),
                    nn.ReLU(inplace=True),
                ]
                channels = item
        self.features = nn.Sequential(*layers)
        # Pooling to 1x1 keeps the classifier at 512 inputs whatever the image size.
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x):
        return self.classifier(self.pool(self.features(x)).flatten(1))


def _factory(name: str):
    def build(num_classes: int = 10, in_channels: int = 3, image_size: int = 32) -> VGG:
        return VGG(cfg[name], num_classes, in_channels)

    build.__name__ = build.__qualname__ = name
    build.__doc__ = f"{name.upper()} (CIFAR variant); any image_size >= 32 survives the 5 pools."
    return build


vgg11 = _factory("vgg11")
vgg13 = _factory("vgg13")
vgg16 = _factory("vgg16")
vgg19 = _factory("vgg19")
