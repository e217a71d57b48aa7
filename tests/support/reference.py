"""A small, plain FlipOut run, written to be read: the semantics the refactor guard holds the
engine to (tests/test_golden.py).

It shares nothing with the engine but the datasets and the network definitions: no Pruner, no
masks or flip-counter classes, no kernels, no schedules, no training loop, no command line. Every
rule is spelled out where it applies, in the way the paper's original code did it: the gradients
of pruned weights are masked and the weights re-masked after every optimizer step (the engine
clears the optimizer's state instead, which must give the same weights); a flip is a change of
the sign bit between two steps; a prune removes the lowest scores of the live weights, ties going
in parameter order (a stable sort).

The arithmetic is the engine's operation for operation, so that, run in the same process as the
engine (the same CPU, the same threads), both give the same bits; in float64 the rounding of any
CPU is far below what the recorded results are compared at.
"""

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from data import build_datasets
from models import build_model

NOISE_STREAMS = 4  # on the CPU: each gradient is cut into 4 slices, one per random stream
MILESTONE_GAMMA = 0.1


@dataclass(frozen=True)
class Recipe:
    """What one run does, stated without the command line."""

    model: str = "lenet300"
    dataset: str = "digits"
    image_size: int | None = None
    seed: int = 3
    epochs: int = 4
    batch_size: int = 32
    test_batch_size: int = 256
    batches_per_epoch: int = 6  # at most this many training batches per epoch
    # optimizer: "sgd" (with momentum) or "adam"; weight decay is the optimizer's
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    milestones: tuple[int, ...] = ()  # lr times 0.1 after each
    anneal_lr: bool = False  # lr times (1 - sparsity) at the start of every epoch
    anneal_weight_decay: bool = False  # weight decay times (1 - sparsity) likewise
    # pruning: "none", "flipout", "global_magnitude", "magnitude", "random", "snip", "threshold"
    criterion: str = "none"
    prune_bias: bool = False  # biases of conv and linear layers are prunable too
    # periodic prunes: after every `every`-th epoch but the last (None: none), removing `rate`
    # of the live weights (threshold: every live weight with |w| < threshold)
    every: int | None = None
    rate: float = 0.0
    oneshot_sparsity: float | None = None  # snip: once, before training, to this sparsity
    flipout_p: float = 2.0
    threshold: float = 0.0
    # gradient noise of std ||g|| / sqrt(n) * noise on each trainable tensor (None: off)
    noise: float | None = None
    noise_only_prunable: bool = False
    # Hoyer-Square penalty of this strength, while epoch <= hoyer_until
    hoyer: float = 0.0
    hoyer_until: int = 0


@dataclass
class Outcome:
    epochs: list[dict] = field(default_factory=list)
    weights: dict[str, torch.Tensor] = field(default_factory=dict)  # the model's state_dict
    masks: dict[str, torch.Tensor] = field(default_factory=dict)  # True = live
    flip_counts: dict[str, torch.Tensor] = field(default_factory=dict)


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """The noise's norms are reduced on one thread, as the engine's stream workers do: a
    reduction split between threads adds in another order."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def prunable(model: nn.Module, prune_bias: bool) -> dict[str, nn.Parameter]:
    """Conv and linear weights (and their biases), in named_parameters order."""
    wanted = set()
    for module in model.modules():
        if isinstance(module, nn.Conv2d | nn.Linear):
            wanted.add(id(module.weight))
            if prune_bias and module.bias is not None:
                wanted.add(id(module.bias))
    return {name: p for name, p in model.named_parameters() if id(p) in wanted}


def lowest(scores: torch.Tensor, count: int) -> torch.Tensor:
    """Bool mask of the `count` lowest of a 1-D `scores`, ties in order of position."""
    chosen = torch.zeros_like(scores, dtype=torch.bool)
    chosen[torch.argsort(scores, stable=True)[:count]] = True
    return chosen


class Run:
    def __init__(self, recipe: Recipe, dtype: torch.dtype):
        self.recipe, self.dtype = recipe, dtype
        torch.manual_seed(recipe.seed)
        self.splits = build_datasets(recipe.dataset, "./data", False, recipe.image_size)
        with default_dtype(dtype):  # float64: the initial weights drawn in float64
            self.model = build_model(
                recipe.model,
                self.splits.num_classes,
                self.splits.in_channels,
                self.splits.image_size,
            )
        self.params = prunable(self.model, recipe.prune_bias)
        self.masks = {n: torch.ones_like(p, dtype=torch.bool) for n, p in self.params.items()}
        self.flips = {n: torch.zeros_like(p, dtype=torch.int32) for n, p in self.params.items()}
        self.negative = {n: p.detach() < 0 for n, p in self.params.items()}
        self.total = sum(p.numel() for p in self.params.values())
        options = {"lr": recipe.lr, "weight_decay": recipe.weight_decay}
        if recipe.optimizer == "sgd":
            self.optimizer = torch.optim.SGD(
                self.model.parameters(), momentum=recipe.momentum, **options
            )
        else:
            self.optimizer = torch.optim.Adam(self.model.parameters(), **options)
        # data order: a shuffling DataLoader seeded with the run's seed
        self.train_loader = DataLoader(
            self.splits.train,
            batch_size=recipe.batch_size,
            shuffle=True,
            generator=torch.Generator().manual_seed(recipe.seed),
        )
        self.test_loader = DataLoader(self.splits.test, batch_size=recipe.test_batch_size)
        # Random's choices and the noise have generators of their own: seed and seed + 1, the
        # noise's split into streams, each seeded by one draw below 2^62
        self.choice_generator = torch.Generator().manual_seed(recipe.seed)
        stream_seeds = torch.randint(
            2**62, (NOISE_STREAMS,), generator=torch.Generator().manual_seed(recipe.seed + 1)
        )
        self.streams = [torch.Generator().manual_seed(int(s)) for s in stream_seeds]
        self.noisy = {
            name: p
            for name, p in self.model.named_parameters()
            if p.requires_grad and (name in self.params or not recipe.noise_only_prunable)
        }

    # -- pruning --------------------------------------------------------------------------

    def live(self) -> int:
        return sum(int(m.sum()) for m in self.masks.values())

    def sparsity(self) -> float:
        return 1.0 - self.live() / self.total

    def scores(self) -> dict[str, torch.Tensor]:
        recipe = self.recipe
        if recipe.criterion == "flipout":
            return {
                n: p.detach().abs().pow(recipe.flipout_p) / (self.flips[n] + 1)
                for n, p in self.params.items()
            }
        if recipe.criterion in ("global_magnitude", "magnitude"):
            return {n: p.detach().abs() for n, p in self.params.items()}
        if recipe.criterion == "random":
            return {
                n: torch.rand(p.shape, generator=self.choice_generator)
                for n, p in self.params.items()
            }
        if recipe.criterion == "snip":
            return self.connection_sensitivity()
        raise ValueError(recipe.criterion)

    def connection_sensitivity(self) -> dict[str, torch.Tensor]:
        """|dL/dw * w| on the first training batch, which is drawn from the training loader
        (so that the epochs then see the data order after that draw)."""
        inputs, targets = next(iter(self.train_loader))
        loss = F.cross_entropy(self.model(inputs.to(self.dtype)), targets)
        grads = torch.autograd.grad(loss, list(self.params.values()))
        return {
            n: (g * p.detach()).abs() for (n, p), g in zip(self.params.items(), grads, strict=True)
        }

    def choose(self, live_to_keep: int | None = None) -> dict[str, torch.Tensor]:
        """The weights a prune removes, as name -> bool."""
        recipe = self.recipe
        if recipe.criterion == "threshold":
            return {
                n: self.masks[n] & (p.detach().abs() < recipe.threshold)
                for n, p in self.params.items()
            }
        inf = torch.tensor(float("inf"))
        scores = {n: torch.where(self.masks[n], s, inf) for n, s in self.scores().items()}
        if recipe.criterion == "magnitude":  # each layer loses `rate` of its own live weights
            return {
                n: lowest(s.flatten(), int(recipe.rate * int(self.masks[n].sum()))).view_as(s)
                for n, s in scores.items()
            }
        live = self.live()
        keep = live - int(recipe.rate * live) if live_to_keep is None else live_to_keep
        flat = lowest(torch.cat([s.flatten() for s in scores.values()]), live - keep)
        pieces = flat.split([s.numel() for s in scores.values()])
        return {n: c.view_as(s) for (n, s), c in zip(scores.items(), pieces, strict=True)}

    def prune(self, live_to_keep: int | None = None) -> None:
        chosen = self.choose(live_to_keep)  # SNIP's scores need gradients
        with torch.no_grad():
            for name, removed in chosen.items():
                self.masks[name] &= ~removed
                self.params[name].mul_(self.masks[name])
                self.flips[name].mul_(self.masks[name])
                self.negative[name] = self.params[name] < 0

    # -- one step -------------------------------------------------------------------------

    @torch.no_grad()
    def add_noise(self) -> None:
        """g += N(0, 1) * ||g||_2 / sqrt(n) * scale, then re-masked. Stream k draws the k-th of
        four slices of every gradient, in parameter order; the norm is taken from the slices'."""
        grads = [(n, p.grad.view(-1)) for n, p in self.noisy.items() if p.grad is not None]

        def piece(flat: torch.Tensor, k: int) -> torch.Tensor:
            n = flat.numel()
            return flat[n * k // NOISE_STREAMS : n * (k + 1) // NOISE_STREAMS]

        with one_thread():
            partial = torch.stack(
                [
                    torch.stack([torch.linalg.vector_norm(piece(g, k)) for _, g in grads])
                    for k in range(NOISE_STREAMS)
                ]
            )
            norms = torch.linalg.vector_norm(partial, dim=0)
        for (name, grad), norm in zip(grads, norms, strict=True):
            factor = torch.tensor(self.recipe.noise / math.sqrt(grad.numel()), dtype=self.dtype)
            std = norm * factor
            mask = self.masks[name].view(-1) if name in self.masks else None
            for k, stream in enumerate(self.streams):
                target = piece(grad, k)
                noise = torch.empty(target.numel(), dtype=self.dtype).normal_(generator=stream)
                target.addcmul_(noise, std)
                if mask is not None:
                    target.mul_(piece(mask, k))

    def penalty(self) -> torch.Tensor:
        """Hoyer-Square: the sum over prunable tensors of (sum |w|)^2 / sum w^2."""
        total = None
        for w in self.params.values():
            l1, squares = w.abs().sum(), w.pow(2).sum()
            term = l1.pow(2) / torch.where(squares > 0, squares, torch.ones_like(squares))
            total = term if total is None else total + term
        return self.recipe.hoyer * total

    def train_epoch(self, epoch: int, penalty_scale: float) -> dict:
        recipe = self.recipe
        self.model.train()
        loss_sum = torch.zeros((), dtype=self.dtype)
        correct = seen = 0
        for step, (inputs, targets) in enumerate(self.train_loader):
            if step == recipe.batches_per_epoch:
                break
            logits = self.model(inputs.to(self.dtype))
            data_loss = F.cross_entropy(logits, targets)
            loss = data_loss
            if recipe.hoyer and epoch <= recipe.hoyer_until:
                loss = loss + penalty_scale * self.penalty()
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            with torch.no_grad():
                for name, p in self.params.items():
                    p.grad.mul_(self.masks[name])
            if recipe.noise is not None:
                self.add_noise()
            self.optimizer.step()
            with torch.no_grad():
                for name, p in self.params.items():
                    p.mul_(self.masks[name])
                    negative = p < 0
                    self.flips[name] += (negative != self.negative[name]).to(torch.int32)
                    self.negative[name] = negative
            loss_sum += data_loss.detach() * len(targets)
            correct += int((logits.argmax(1) == targets).sum())
            seen += len(targets)
        return {"train_loss": float(loss_sum) / seen, "train_acc": 100.0 * correct / seen}

    @torch.no_grad()
    def evaluate(self) -> dict:
        self.model.eval()
        loss_sum = torch.zeros((), dtype=self.dtype)
        correct = seen = 0
        for inputs, targets in self.test_loader:
            logits = self.model(inputs.to(self.dtype))
            loss_sum += F.cross_entropy(logits, targets, reduction="sum")
            correct += int((logits.argmax(1) == targets).sum())
            seen += len(targets)
        return {"test_loss": float(loss_sum) / seen, "test_acc": 100.0 * correct / seen}

    def flip_total(self) -> int:
        return sum(int(f.sum(dtype=torch.int64)) for f in self.flips.values())

    def run(self) -> Outcome:
        recipe = self.recipe
        if recipe.oneshot_sparsity is not None:
            self.prune(live_to_keep=round((1.0 - recipe.oneshot_sparsity) * self.total))
        outcome = Outcome()
        for epoch in range(1, recipe.epochs + 1):
            sparsity = self.sparsity()
            scale = 1.0 - sparsity if recipe.anneal_weight_decay else 1.0
            lr = recipe.lr
            if recipe.milestones:
                lr *= MILESTONE_GAMMA ** sum(epoch - 1 >= m for m in recipe.milestones)
            if recipe.anneal_lr:
                lr *= 1.0 - sparsity
            for group in self.optimizer.param_groups:
                group["lr"] = lr
                group["weight_decay"] = recipe.weight_decay * scale
            flips_before = self.flip_total()
            record = self.train_epoch(epoch, scale)
            record["lr"] = lr
            record["flips"] = self.flip_total() - flips_before
            record.update(self.evaluate())
            every = recipe.every
            if every is not None and epoch % every == 0 and epoch != recipe.epochs:
                self.prune()
            record["sparsity"] = self.sparsity()
            outcome.epochs.append(record)
        outcome.weights = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        outcome.masks = {n: m.clone() for n, m in self.masks.items()}
        outcome.flip_counts = {n: f.clone() for n, f in self.flips.items()}
        return outcome


def run(recipe: Recipe, dtype: torch.dtype = torch.float32) -> Outcome:
    return Run(recipe, dtype).run()
