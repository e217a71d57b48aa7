"""The pruning engine the training loop talks to: masks, sign-flip counters, the criterion, the
schedule, gradient noise and the Hoyer-Square penalty behind five calls.

    pruner.attach_optimizer(optimizer)       # once: lets pruning clear the optimizer's state
    pruner.before_training(model, batches)   # SNIP prunes here
    loss = loss + pruner.penalty(epoch)      # Hoyer-Square, when enabled
    pruner.after_backward(epoch)             # mask gradients, add gradient noise
    pruner.after_step()                      # count sign flips (re-mask weights if needed)
    pruner.end_of_epoch(epoch)               # prune when the schedule says so

so the loop has no per-criterion branches.

How pruned weights stay exactly zero: their gradients are masked before every step, and when they
are pruned, the optimizer's per-weight state (momentum, Adam's moments) is zeroed with them. SGD,
RMSprop, Adam and AdamW then compute an update of exactly zero for them, weight decay included,
so the weights need no re-masking after the step. For any other optimizer, or with none attached,
after_step re-masks the weights as well, which costs one more pass over them.
"""

from dataclasses import dataclass, fields

import torch
from torch import nn

from pruning.criteria import build_criterion
from pruning.flips import FlipCounter
from pruning.hoyer import hoyer_square
from pruning.kernels import Kernels
from pruning.mask import Masks, layer_table, prunable_parameters
from pruning.noise import GradientNoise
from pruning.schedule import is_prune_epoch
from utils.distributed import Distributed

# Optimizers whose update is exactly zero for a weight whose value, gradient and per-weight state
# are all zero. Exact types only: a subclass may change the update.
KEEP_ZEROS = (torch.optim.SGD, torch.optim.RMSprop, torch.optim.Adam, torch.optim.AdamW)


@dataclass
class PruningConfig:
    """The pruning options of the CLI; field names match the argparse destinations."""

    prune_criterion: str = "flipout"
    prune_rate: float = 0.5
    prune_freq: int = 4
    epochs: int = 20
    stop_pruning_at: int = -1
    flipout_p: float = 2.0
    magnitude_threshold: float = 1e-4
    snip_sparsity: float | None = None
    snip_batches: int = 1
    prune_bias: bool = False
    prune_bnorm: bool = False
    noise: bool = False
    noise_scale_factor: float = 1.0
    stop_noise_at: int = -1
    noise_only_prunable: bool = False
    add_hs: bool = False
    hoyer_lambda: float = 0.0
    stop_hoyer_at: int = -1
    seed: int = 0
    compile_kernels: str = "auto"

    @classmethod
    def from_args(cls, args) -> "PruningConfig":
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls)})


@dataclass
class PruneEvent:
    epoch: int
    pruned: int
    live: int
    total: int
    sparsity: float
    collapsed: list[str]

    def as_dict(self) -> dict:
        return dict(self.__dict__)


class Pruner:
    """`sync` is the process group under torchrun (utils.distributed.Distributed): SNIP's scores
    are summed over ranks, and every prune checks that all ranks hold the same state."""

    def __init__(self, model: nn.Module, config: PruningConfig, sync: Distributed | None = None):
        self.config = config
        self.sync = sync or Distributed()
        self.params = prunable_parameters(model, config.prune_bias, config.prune_bnorm)
        self.masks = Masks(self.params)
        self.device = next(iter(self.params.values())).device
        self.kernels = Kernels(config.compile_kernels, self.device)
        self.flips = FlipCounter(self.params, self.kernels)
        self.criterion = build_criterion(config.prune_criterion, config)
        # Separate streams, so that switching noise on does not change which weights Random picks.
        self.random_generator = torch.Generator(self.device).manual_seed(config.seed)
        self.noise = None
        if config.noise:
            targets = {
                name: p
                for name, p in model.named_parameters()
                if p.requires_grad and (name in self.params or not config.noise_only_prunable)
            }
            self.noise = GradientNoise(
                list(targets.values()),
                config.noise_scale_factor,
                config.seed + 1,
                masks=[self.masks.masks.get(name) for name in targets],
                kernels=self.kernels,
            )
        # the masks as the step takes them; updated only in place, so the references stay valid
        self._masks = list(self.masks.masks.values())
        self.optimizer: torch.optim.Optimizer | None = None
        self.remask_weights = True
        self.events: list[PruneEvent] = []

    def attach_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """The optimizer that steps these weights. From now on every prune zeroes its state for
        the pruned weights, and, for an optimizer in KEEP_ZEROS, after_step skips re-masking.
        A replacement optimizer must be attached in turn."""
        self.optimizer = optimizer
        self.remask_weights = type(optimizer) not in KEEP_ZEROS
        self._clear_optimizer_state()

    # -- the training loop's hooks ------------------------------------------------------------

    def before_training(self, model: nn.Module, batches) -> PruneEvent | None:
        remove = self.criterion.before_training(self, model, batches)
        return None if remove is None else self._apply(remove, epoch=0)

    def penalty(self, epoch: int) -> torch.Tensor | None:
        cfg = self.config
        if not cfg.add_hs or (cfg.stop_hoyer_at != -1 and epoch > cfg.stop_hoyer_at):
            return None
        return cfg.hoyer_lambda * hoyer_square(self.params.values())

    @torch.no_grad()
    def after_backward(self, epoch: int) -> None:
        if self.masks.any_pruned:
            pairs = [(p.grad, self.masks[n]) for n, p in self.params.items() if p.grad is not None]
            if pairs:
                self.kernels.mask_gradients([g for g, _ in pairs], [m for _, m in pairs])
        if self.noise is not None and (
            self.config.stop_noise_at == -1 or epoch < self.config.stop_noise_at
        ):
            # the noise std comes from the masked gradient; pruned entries are re-zeroed with it
            self.noise.add()

    @torch.no_grad()
    def after_step(self) -> None:
        self.flips.update(self._masks if self.remask_weights and self.masks.any_pruned else None)

    def end_of_epoch(self, epoch: int) -> PruneEvent | None:
        cfg = self.config
        if not self.criterion.scheduled or not is_prune_epoch(
            epoch, cfg.prune_freq, cfg.epochs, cfg.stop_pruning_at
        ):
            return None
        return self._apply(self.criterion.select(self), epoch)

    # -- bookkeeping --------------------------------------------------------------------------

    def _apply(self, remove: dict[str, torch.Tensor], epoch: int) -> PruneEvent:
        live_before = self.masks.num_live
        for name, chosen in remove.items():
            self.masks.prune(name, chosen)
        self.masks.apply_to_weights()
        self.flips.forget_pruned(self.masks)
        self._clear_optimizer_state()
        self.sync.check_identical(
            self.state_tensors(), f"after the prune at epoch {epoch}, weights, masks or flip counts"
        )
        counts = self.masks.live_counts()
        live = sum(n for n, _ in counts.values())
        event = PruneEvent(
            epoch=epoch,
            pruned=live_before - live,
            live=live,
            total=self.masks.num_total,
            sparsity=1.0 - live / self.masks.num_total,
            collapsed=[name for name, (n, _) in counts.items() if n == 0],
        )
        self.events.append(event)
        return event

    @torch.no_grad()
    def _clear_optimizer_state(self) -> None:
        """Zero the optimizer's per-weight state (tensors shaped like the weight) where pruned."""
        if self.optimizer is None or not self.masks.any_pruned:
            return
        for name, p in self.params.items():
            for value in self.optimizer.state.get(p, {}).values():
                if torch.is_tensor(value) and value.shape == p.shape:
                    value.mul_(self.masks[name])

    def state_tensors(self) -> list[torch.Tensor]:
        """What must be identical on every rank: weights, masks and flip counters."""
        return [*self.params.values(), *self.masks.masks.values(), *self.flips.counts.values()]

    def state_dict(self) -> dict:
        return {
            "masks": self.masks.state_dict(),
            "flip_counts": self.flips.state_dict(),
            "events": [event.as_dict() for event in self.events],
            "random_generator": self.random_generator.get_state(),
            "noise_generator": None if self.noise is None else self.noise.get_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore after the model's weights and the optimizer were loaded (the flip counter reads
        the weights' signs; the optimizer's state is cleared where pruned, as at a prune)."""
        self.masks.load_state_dict(state["masks"])
        self._clear_optimizer_state()
        self.flips.load_state_dict(state["flip_counts"])
        self.events = [PruneEvent(**event) for event in state["events"]]
        self.random_generator.set_state(state["random_generator"])
        if self.noise is not None and state["noise_generator"] is not None:
            self.noise.set_state(state["noise_generator"])

    @property
    def sparsity(self) -> float:
        return self.masks.sparsity

    def collapsed_layers(self) -> list[str]:
        return [name for name, (live, _) in self.masks.live_counts().items() if live == 0]

    def layer_table(self, flops: dict[str, tuple[int, int]] | None = None) -> str:
        """Per-layer live / total (and MACs, when given), as printed at each prune."""
        return layer_table(self.masks.live_counts(), flops)
