"""Small fully connected and convolutional baselines used in the pruning literature.

LeNet-300-100 and LeNet-5 come from LeCun, Bottou, Bengio & Haffner, "Gradient-Based Learning
Applied to Document Recognition", Proc. IEEE 1998. LeNet-300-100 and Conv-6 are used here as
defined for lottery-ticket experiments by Frankle & Carbin, "The Lottery Ticket Hypothesis:
Finding Sparse, Trainable Neural Networks", ICLR 2019. Flatten sizes are derived from
image_size so the same factories serve MNIST (28x28 or padded 32x32) and CIFAR.
"""

from torch import nn


def lenet300(num_classes: int = 10, in_channels: int = 3, image_size: int = 32) -> nn.Sequential:
    """LeNet-300-100: a three-layer MLP on the flattened image."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(in_channels * image_size**2, 300),
        nn.ReLU(inplace=True),
        nn.Linear(300, 100),
        nn.ReLU(inplace=True),
        nn.Linear(100, num_classes),
    )


def lenet5(num_classes: int = 10, in_channels: int = 3, image_size: int = 32) -> nn.Sequential:
    """LeNet-5 with ReLU and max-pooling in place of the original tanh and subsampling."""
    # Each unpadded 5x5 conv trims 4 pixels and each pool halves (flooring), e.g. 32 -> 5.
    side = ((image_size - 4) // 2 - 4) // 2
    return nn.Sequential(
        nn.Conv2d(in_channels, 6, 5),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * side * side, 120),
        nn.ReLU(inplace=True),
        nn.Linear(120, 84),
        nn.ReLU(inplace=True),
        nn.Linear(84, num_classes),
    )


def conv6(num_classes: int = 10, in_channels: int = 3, image_size: int = 32) -> nn.Sequential:
    """Conv-6: three pairs of 3x3 convs (64, 128, 256), each pair followed by a 2x2 max-pool."""
    layers: list[nn.Module] = []
    channels = in_channels
    for width in (64, 128, 256):
        for _ in range(2):
            layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(inplace=True)]
            channels = width
        layers.append(nn.MaxPool2d(2))
    side = image_size // 8
    layers += [
        nn.Flatten(),
        nn.Linear(channels * side * side, 256),
        nn.ReLU(inplace=True),
        nn.Linear(256, 256),
        nn.ReLU(inplace=True),
        nn.Linear(256, num_classes),
    ]
    return nn.Sequential(*layers)
