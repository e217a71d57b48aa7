"""GraSP, Gradient Signal Preservation (Wang, Zhang & Grosse, "Picking Winning Tickets Before
Training by Preserving Gradient Flow", ICLR 2020).

GraSP prunes at initialisation so that the gradient flow, the squared norm of the loss gradient
g = dL/dθ, suffers least. Removing weight q (θ_q -> 0) changes g·g to first order by
-2 θ_q (Hg)_q, with H the Hessian of the loss; the Hessian-gradient product Hg comes from two
backward passes: g first, without a graph, then the gradient of g·(dL/dθ) with respect to θ.
The loss is the cross-entropy of the logits divided by a temperature T (200 in the authors'
code), which softens the softmax so that its second derivatives do not vanish.
"""

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .criteria import AtInitialisation
from .options import Bounded, option


def hessian_gradient_product(
    model: nn.Module,
    params: dict[str, torch.Tensor],
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    device: torch.device,
    temperature: float,
    all_reduce_sum: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """Hg per prunable tensor, for g and H of the cross-entropy of logits / `temperature` summed
    over `batches`. BatchNorm normalises with batch statistics (train mode), as in the authors'
    code; the model's weights, buffers, `.grad` fields and train/eval mode are left exactly as
    they were. Under torchrun, `all_reduce_sum` adds up g before the second pass (so every rank
    multiplies by the same g) and Hg after it, so that every rank scores (and masks) alike."""
    batches = list(batches)  # both passes see the same batches
    if not batches:
        raise ValueError("GraSP needs at least one training batch")
    weights = list(params.values())
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    was_training = model.training
    model.train()

    def loss_on(inputs, targets):
        logits = model(inputs.to(device)) / temperature
        return F.cross_entropy(logits, targets.to(device))

    try:
        # a caller under torch.no_grad() would otherwise get no graph to differentiate twice
        with torch.enable_grad():
            gradient = [torch.zeros_like(w) for w in weights]
            for inputs, targets in batches:
                for total, grad in zip(
                    gradient, torch.autograd.grad(loss_on(inputs, targets), weights), strict=True
                ):
                    total += grad
            if all_reduce_sum is not None:
                for total in gradient:
                    all_reduce_sum(total)

            # z = g · dL/dθ with g held constant, so that dz/dθ = H g; autograd.grad rather than
            # backward() keeps the weights' .grad fields out of it
            product = [torch.zeros_like(w) for w in weights]
            for inputs, targets in batches:
                grads = torch.autograd.grad(loss_on(inputs, targets), weights, create_graph=True)
                z = sum((g * grad).sum() for g, grad in zip(gradient, grads, strict=True))
                for total, hg in zip(product, torch.autograd.grad(z, weights), strict=True):
                    total += hg
            if all_reduce_sum is not None:
                for total in product:
                    all_reduce_sum(total)
    finally:
        with torch.no_grad():
            for name, b in model.named_buffers():
                b.copy_(buffers[name])
        model.train(was_training)
    return dict(zip(params, product, strict=True))


@dataclass
class GraSP(AtInitialisation):
    """Gradient Signal Preservation (Wang et al., 2020): score θ ⊙ Hg on a few training batches,
    ranked across the network. By default once, before training, to `init_sparsity`; on another
    schedule it scores afresh at each prune.

    Sign convention. The authors' pruner/GraSP.py, function `GraSP`, scores -θ ⊙ Hg
    (`-layer.weight.data * layer.weight.grad  # -theta_q Hg`), divides by |sum of all scores| +
    eps, takes the `num_params_to_rm` largest with `torch.topk` and keeps the weights with
    `score <= threshold`: the largest -θ ⊙ Hg go, i.e. the weights whose removal raises the
    gradient flow most (or lowers it least), to first order. Here scores are "higher = keep" and
    the lowest go (pruning/select.py), so the score is +θ ⊙ Hg: the same weights go. It is the
    sign of the SynFlow authors' re-implementation (ganguli-lab/Synaptic-Flow,
    Pruners/pruners.py, class GraSP, `p.grad * p.data`, lowest pruned). The division by a
    positive number changes no ranking and is left out.

    Batches. The authors draw `samples_per_class` images of every class (GraSP_fetch_data),
    `num_iters` times, and split each draw in two halves; both passes run over those
    2 * num_iters half-batches of num_classes * samples_per_class / 2 images (a draw is sorted by
    class, so each half holds half of the classes; CIFAR: 10 per class, one draw, two batches of
    50). Here `batches` is the number of training batches taken from the loader as they come (of
    `-bs` images, not class-balanced): their setting corresponds to `batches = 2 * num_iters` at
    that batch size.

    Deliberate differences from their `GraSP`: it scores a deep copy whose linear layers are
    re-initialised (xavier_normal, `reinit=True`) and then masks the original weights; this scores
    the weights that then train, as Snip does. Their threshold is the smallest of the
    int(ratio * N) scores `topk` picks, and `<= threshold` keeps it along with every weight tied
    with it, so they remove int(ratio * N) - 1 weights, fewer still where others tie with it;
    here exactly the target is met (round), ties broken by position. The model's .grad fields
    are left alone (theirs accumulate on the copy).
    As in theirs, BatchNorm normalises with batch statistics while scoring: their network comes
    fresh from its constructor, in train mode (the `.eval()` after their deepcopy is commented
    out); here the model is put in train mode and its mode and statistics restored afterwards.
    """

    temperature: float = option(
        "grasp_temperature",
        Bounded(float, above=0),
        200.0,
        "GraSP divides the logits by this before the cross-entropy",
    )
    batches: int = option(
        "grasp_batches",
        Bounded(int, low=1, high=10_000),
        1,
        "training batches GraSP scores on (the authors' 2 * num_iters half-batches of "
        "samples_per_class images per class)",
    )

    label = "GraSP"

    def batches_needed(self):
        return self.batches

    def scores(self, inputs):
        product = hessian_gradient_product(
            inputs.model,
            inputs.params,
            inputs.batches,
            inputs.device,
            self.temperature,
            inputs.all_reduce_sum,
        )
        return {name: w.detach() * product[name] for name, w in inputs.params.items()}
