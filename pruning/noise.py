"""Gradient noise, FlipOut's exploration term (Apostol, Stol & Forré, 2020, Sec. 3).

After the backward pass each gradient tensor g gains Gaussian noise with standard deviation
||g||_2 / sqrt(numel(g)) * scale: the noise is as large as the tensor's root-mean-square gradient,
so it perturbs every layer in proportion to how fast that layer is moving. Weights near zero then
flip sign often, and the sign-flip counter can tell them from weights that carry signal.
"""

import math

import torch

from pruning.kernels import Kernels


class GradientNoise:
    """Noise for `params`; where `masks` gives a tensor's mask (None for unprunable tensors),
    pruned entries of its gradient are zeroed again in the same pass."""

    def __init__(
        self,
        params: list[torch.Tensor],
        scale: float,
        generator: torch.Generator,
        masks: list[torch.Tensor | None] | None = None,
        kernels: Kernels | None = None,
    ):
        self.params = list(params)
        self.masks = list(masks) if masks is not None else [None] * len(self.params)
        self.scale = scale
        self.generator = generator
        self.kernels = kernels or Kernels("off")

    @torch.no_grad()
    def add(self) -> None:
        for p, mask in zip(self.params, self.masks, strict=True):
            grad = p.grad
            if grad is None:
                continue
            # The std stays a device tensor: no host synchronisation per step.
            std = torch.linalg.vector_norm(grad) * (self.scale / math.sqrt(grad.numel()))
            # empty_like keeps the gradient's memory layout, like the mask's
            noise = torch.empty_like(grad).normal_(generator=self.generator)
            if mask is None:
                self.kernels.add_noise(grad, noise, std)
            else:
                self.kernels.add_masked_noise(grad, noise, std, mask)
