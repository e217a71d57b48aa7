"""GraSP (pruning/grasp.py): its scores against a closed form and against a Hessian built by
torch.autograd.functional (not by double backward), the weights it removes against the gradient
flow measured after removing each one, its exact sparsity, a model left as it was, sums over
ranks under torchrun, and a run from the command line."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pruning import Masks, PruneInputs, Pruner, prunable_parameters
from pruning.grasp import GraSP
from tests.support.nets import CPU


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)


def prune_inputs(model, batches, all_reduce_sum=lambda t: t) -> PruneInputs:
    params = prunable_parameters(model)
    return PruneInputs(
        params=params,
        masks=Masks(params),
        flip_counts={name: torch.zeros_like(p, dtype=torch.int32) for name, p in params.items()},
        generator=torch.Generator().manual_seed(0),
        model=model,
        batches=batches,
        device=CPU,
        all_reduce_sum=all_reduce_sum,
    )


def test_scores_of_one_linear_layer_match_the_closed_form():
    # logits z = W x / T, L = CE(z, y=0), p = softmax(z), r = p - e_0 = (-p1, p1):
    #   g = r x^T / T,  H = (diag(p) - p p^T) ⊗ x x^T / T^2,
    #   Hg = (diag(p) - p p^T) r x^T |x|^2 / T^3 = 2 p0 p1^2 (-1, +1)^T x^T |x|^2 / T^3,
    # so the score θ ⊙ Hg of row i is 2 p0 p1^2 |x|^2 / T^3 * (∓ W_ij x_j).
    temperature = 2.0
    model = nn.Linear(3, 2, bias=False).double()
    x = torch.tensor([[1.0, 2.0, -1.0]], dtype=torch.float64)
    y = torch.tensor([0])
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.5, 0.3, -0.25], [0.4, -0.1, -0.35]]))
        p0, p1 = torch.softmax(model(x)[0] / temperature, dim=0)
    c = 2 * p0 * p1**2 * x.square().sum() / temperature**3
    signs = torch.tensor([[-1.0], [1.0]], dtype=torch.float64)
    expected = c * signs * model.weight.detach() * x

    scores = GraSP(temperature=temperature).scores(prune_inputs(model, [(x, y)]))
    torch.testing.assert_close(scores["weight"], expected, rtol=1e-12, atol=0)


def test_scores_of_a_two_layer_network_match_an_independent_hessian():
    temperature = 3.0
    model = nn.Sequential(nn.Linear(2, 2, bias=False), nn.Linear(2, 2, bias=False)).double()
    batches = [
        (torch.randn(2, 2, dtype=torch.float64), torch.tensor([0, 1])),
        (torch.randn(2, 2, dtype=torch.float64), torch.tensor([1, 1])),
    ]
    w1, w2 = (m.weight.detach().clone() for m in model)
    theta = torch.cat([w1.flatten(), w2.flatten()])

    def loss(flat):  # the summed loss as a function of the flattened weights
        a, b = flat[:4].view(2, 2), flat[4:].view(2, 2)
        return sum(F.cross_entropy(x @ a.T @ b.T / temperature, y) for x, y in batches)

    # g by hand: dL/dz = (softmax - onehot) / (N T) per batch, z = x W1^T W2^T / T
    g1, g2 = torch.zeros_like(w1), torch.zeros_like(w2)
    for x, y in batches:
        dz = (torch.softmax(x @ w1.T @ w2.T / temperature, 1) - F.one_hot(y, 2)) / (2 * temperature)
        g2 += dz.T @ (x @ w1.T)
        g1 += (dz @ w2).T @ x
    g = torch.cat([g1.flatten(), g2.flatten()])
    hessian = torch.autograd.functional.hessian(loss, theta)
    expected = theta * (hessian @ g)

    scores = GraSP(temperature=temperature).scores(prune_inputs(model, batches))
    got = torch.cat([scores["0.weight"].flatten(), scores["1.weight"].flatten()])
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-15)


def gradient_flow(model, x, y, temperature) -> float:
    """|dL/dW|^2 of the model as it is, by one ordinary backward pass in float64."""
    weight = model.weight.detach().double().requires_grad_()
    loss = F.cross_entropy(x.double() @ weight.T / temperature, y)
    (grad,) = torch.autograd.grad(loss, weight)
    return float(grad.square().sum())


def test_removes_the_weight_whose_removal_raises_gradient_flow_most():
    # One linear layer, one sample of class 0: |g|^2 = 2 p1^2 |x|^2 / T^2 grows with z1 - z0, and
    # zeroing W_0j raises z1 - z0 by W_0j x_j, zeroing W_1j by -W_1j x_j: (0.5, 0.6, 0.25) and
    # (-0.4, 0.2, 0.35). W_01 (|w| = 0.3, not the smallest) is the one whose removal raises the
    # gradient flow most, i.e. contributes least to it: the authors remove it first.
    model = nn.Linear(3, 2, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.5, 0.3, -0.25], [0.4, -0.1, -0.35]]))
    x, y = torch.tensor([[1.0, 2.0, -1.0]]), torch.tensor([0])
    criterion = GraSP(init_sparsity=1 / 6)  # default temperature 200, float32

    flows = torch.empty(2, 3, dtype=torch.float64)
    for i, j in torch.cartesian_prod(torch.arange(2), torch.arange(3)).tolist():
        removed = nn.Linear(3, 2, bias=False)
        with torch.no_grad():
            removed.weight.copy_(model.weight)
            removed.weight[i, j] = 0
        flows[i, j] = gradient_flow(removed, x, y, criterion.temperature)
    assert flows.flatten().argmax().item() == 1
    # every weight ranks as the gradient flow after its removal says (highest flow lowest score)
    scores = criterion.scores(prune_inputs(model, [(x, y)]))["weight"]
    assert torch.equal(scores.flatten().argsort(), flows.flatten().argsort(descending=True))

    pruner = Pruner(model, criterion, data=[(x, y)])
    pruner.before_training()
    assert pruner.masks["weight"].tolist() == [[True, False, True], [True, True, True]]


class ConvBnNet(nn.Sequential):
    def __init__(self):
        super().__init__(
            nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(64, 3)
        )


def image_batches(n: int, size: int = 8):
    return [(torch.randn(size, 1, 6, 6), torch.randint(0, 3, (size,))) for _ in range(n)]


@pytest.mark.parametrize("training", [True, False], ids=["train_mode", "eval_mode"])
@pytest.mark.parametrize("sparsity", [0.5, 0.9])
def test_exact_sparsity_and_the_model_left_as_it_was(sparsity, training):
    model = ConvBnNet()
    # non-trivial BatchNorm statistics and .grad fields, so that "unchanged" is not "default"
    with torch.no_grad():
        model(torch.randn(32, 1, 6, 6) * 3 + 1)
    x, y = image_batches(1)[0]
    F.cross_entropy(model(x), y).backward()
    model.train(training)
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    buffers = {n: b.clone() for n, b in model.named_buffers()}

    def assert_untouched(weights_too: bool):
        for name, p in model.named_parameters():
            assert torch.equal(p.grad, grads[name])
            if weights_too or name not in pruner.params:
                assert torch.equal(p.detach(), params[name])
        for name, b in model.named_buffers():
            assert torch.equal(b, buffers[name])
        assert model.training == training

    batches = image_batches(3)
    pruner = Pruner(model, GraSP(init_sparsity=sparsity, batches=2), data=batches)
    total = pruner.masks.num_total
    assert total == 36 + 192
    scores = pruner.criterion.scores(pruner.prune_inputs())
    assert_untouched(weights_too=True)
    flat = torch.cat([s.flatten() for s in scores.values()])
    assert bool(flat.isfinite().all()) and bool(flat.ne(0).any())

    event = pruner.before_training()
    keep = round((1 - sparsity) * total)
    assert pruner.masks.num_live == keep and event.live == keep and event.epoch == 0
    assert_untouched(weights_too=False)
    # the highest scores are the ones kept, and their weights are the initial ones
    kept = torch.zeros(total, dtype=torch.bool)
    kept[flat.argsort(descending=True)[:keep]] = True
    assert torch.equal(torch.cat([m.flatten() for m in pruner.masks.masks.values()]), kept)
    for name, p in pruner.params.items():
        m = pruner.masks[name]
        assert torch.equal(p.detach()[m], params[name][m])
        assert bool(p.detach()[~m].eq(0).all())
    assert all(pruner.end_of_epoch(e) is None for e in range(1, 5))


def test_sums_the_gradient_and_the_product_over_ranks():
    # Two ranks with the same batch: g sums to 2g before the second pass, each rank's Hg is then
    # H (2g), and their sum 4 Hg; reducing only one of the two would give 2 Hg.
    model = ConvBnNet()
    batches = image_batches(1)
    alone = GraSP().scores(prune_inputs(model, batches))
    calls = []

    def two_ranks(tensor):
        calls.append(tensor.shape)
        return tensor.mul_(2)

    summed = GraSP().scores(prune_inputs(model, batches, two_ranks))
    assert len(calls) == 2 * len(alone)
    for name, score in alone.items():
        torch.testing.assert_close(summed[name], 4 * score, rtol=1e-6, atol=0)


def test_options_are_checked():
    with pytest.raises(ValueError, match="temperature"):
        GraSP(init_sparsity=0.9, temperature=0.0)
    with pytest.raises(ValueError, match="batches"):
        GraSP(init_sparsity=0.9, batches=0)
    with pytest.raises(ValueError, match="init_sparsity"):
        Pruner(ConvBnNet(), GraSP())
