"""Gradient noise, FlipOut's exploration term (Apostol, Stol & Forré, 2020, Sec. 3).

After the backward pass each gradient tensor g gains Gaussian noise with standard deviation
||g||_2 / sqrt(numel(g)) * scale: the noise is as large as the tensor's root-mean-square gradient,
so it perturbs every layer in proportion to how fast that layer is moving. Weights near zero then
flip sign often, and the sign-flip counter can tell them from weights that carry signal.
"""

import math

import torch


class GradientNoise:
    def __init__(self, params: list[torch.Tensor], scale: float, generator: torch.Generator):
        self.params = list(params)
        self.scale = scale
        self.generator = generator

    @torch.no_grad()
    def add(self) -> None:
        for p in self.params:
            grad = p.grad
            if grad is None:
                continue
            # The std stays a device tensor: no host synchronisation per step.
            std = torch.linalg.vector_norm(grad) * (self.scale / math.sqrt(grad.numel()))
            noise = torch.randn(
                grad.shape, generator=self.generator, device=grad.device, dtype=grad.dtype
            )
            grad.add_(noise * std)
