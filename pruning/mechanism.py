"""What FlipOut's ranking is made of, measured per prunable tensor while a run trains
(`Pruner(..., mechanism=True)`, `main.py --log_mechanism`; docs/noise.md reads them).

Each epoch, per tensor:

- `flip_rate`: the sign flips of the epoch per live weight and optimizer step (live as the epoch
  began);
- `noise_to_step`: at the epoch's first step, how much the noise moved the weights against how far
  the optimizer moved them, ||step - clean step|| / ||clean step|| over the live weights. The step
  is the one taken; the clean step, the one the optimizer would have taken from the same state
  without the noise, taken on a copy of the optimizer (so the run itself is not changed). 0 when
  no noise was added. Gradient clipping is not redone on the clean gradients;
- `noise_dominated`: at the same step, the share of live weights whose noise moved them further
  than the clean step did;
- `step_rms` and `clean_step_rms`: the root-mean-square of the step taken and of the clean step
  over the live weights (the same without noise). An adaptive optimizer's clean step shrinks when
  noise in its gradients has raised its second-moment estimates: set beside a run without noise,
  it shows what the noise does to the optimizer's state, which the ratio at one step cannot;
- `history_to_step` and `shadow_step_rms`, where the noise goes into the gradients: the step
  taken against the shadow's, ||step - shadow step|| / ||shadow step||, and the shadow step's
  RMS. The shadow is a copy of the optimizer stepped at every step from the run's weights with
  the gradients before the noise: its state (momentum, Adam's moments) is the run's without the
  noise's history, so the ratio counts the noise of this step and of every earlier one that the
  state still carries. It starts at the first step the process measures (after a resume, from
  the resumed state), and costs an optimizer step per step. `signal_kept`: the step's component
  along the shadow step, as a share of the shadow step, <step, shadow> / ||shadow||²: 1 where
  the noise only adds to the optimizer's steps (SGD, whose steps are linear in the gradients),
  below 1 where it also shrinks them, as an adaptive optimizer does when the noise has raised
  its second-moment estimates.

At each prune, per tensor, the flips per step since the start (what FlipOut ranks by, before the
prune clears the counters of the weights it removes) of the weights the prune removes,
`flip_rate_removed`, and of those it keeps, `flip_rate_kept`.
"""

import copy

import torch


def rms(values: torch.Tensor) -> float:
    return float(values.double().square().mean().sqrt()) if values.numel() else 0.0


# the optimizer's hooks, which a copy must not run (they call the Pruner that owns the original)
HOOKS = ("_optimizer_step_pre_hooks", "_optimizer_step_post_hooks")


def twin_of(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """A copy of the optimizer, its parameters and state copied too, without its hooks."""
    twin = copy.deepcopy(optimizer)
    for name in HOOKS:
        getattr(twin, name, {}).clear()
    return twin


def params_of(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [p for group in optimizer.param_groups for p in group["params"]]


class Mechanism:
    def __init__(self, params: dict[str, torch.Tensor], masks, flips):
        self.params, self.masks, self.flips = params, masks, flips
        self.stats: dict[str, dict[str, float]] = {}
        self._epoch = None  # the epoch whose flips are being counted
        self._start: dict[str, int] = {}  # flips counted and live weights as it began
        self._live: dict[str, int] = {}
        self._steps = 0
        self._probe: dict | None = None  # the probe step's weights before it and clean step
        self._shadow: torch.optim.Optimizer | None = None  # stepped without the noise's history

    # -- the Pruner's calls ---------------------------------------------------------------------

    def epoch_started(self, epoch: int) -> bool:
        """Called at every step before the noise; whether this step is the epoch's first (its
        probe), which begins the epoch's count."""
        if epoch == self._epoch:
            return False
        self._epoch, self._steps = epoch, 0
        self._start = self.flips.counted_by_tensor()
        self._live = {name: int(mask.sum()) for name, mask in self.masks.items()}
        return True

    def before_noise(self, optimizer, epoch: int, noisy: bool, into_gradients: bool) -> None:
        """Called at every step, after the gradients are masked and before the noise: the
        probe's clean step at the epoch's first step, and, where the noise goes into the
        gradients, the shadow optimizer's step at every step."""
        if self.epoch_started(epoch):
            self.clean_step(optimizer, noisy)
        if into_gradients and optimizer is not None:
            self.shadow_step(optimizer)

    @torch.no_grad()
    def shadow_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Step the shadow, a copy of the optimizer made at the first step measured, from the
        run's weights with the gradients before the noise: its state is the run's as it would be
        without the noise's history. At the probe step, keep its step."""
        if self._shadow is None:
            self._shadow = twin_of(optimizer)
        own, copies = params_of(optimizer), params_of(self._shadow)
        for group, shadow_group in zip(
            optimizer.param_groups, self._shadow.param_groups, strict=True
        ):
            shadow_group.update({k: v for k, v in group.items() if k != "params"})
        torch._foreach_copy_(copies, [p.detach() for p in own])
        steps = self._stepped(optimizer, self._shadow)
        if self._probe is not None:
            self._probe["shadow"] = steps

    @torch.no_grad()
    def clean_step(self, optimizer: torch.optim.Optimizer | None, noisy: bool) -> None:
        """At the probe step, before the noise: the step the optimizer would take without it,
        taken on a copy (None without an optimizer or noise: nothing to compare)."""
        self._probe = {"before": {n: p.detach().clone() for n, p in self.params.items()}}
        if optimizer is None or not noisy:
            return
        self._probe["clean"] = self._stepped(optimizer, twin_of(optimizer))

    def _stepped(self, optimizer, twin) -> dict[str, torch.Tensor]:
        """Step `twin` with the optimizer's gradients as they are now; at the probe step, each
        prunable tensor's step from the probe's weights before it (else nothing)."""
        own, copies = params_of(optimizer), params_of(twin)
        for p, c in zip(own, copies, strict=True):
            c.grad = None if p.grad is None else p.grad.detach().clone()
        twin.step()
        if self._probe is None:
            return {}
        by_id = {id(p): c for p, c in zip(own, copies, strict=True)}
        before = self._probe["before"]
        return {
            name: by_id[id(p)].detach() - before[name]
            for name, p in self.params.items()
            if id(p) in by_id
        }

    @torch.no_grad()
    def step_taken(self) -> None:
        """After the step (and any noise on it, and re-masking)."""
        self._steps += 1
        probe, self._probe = self._probe, None
        if probe is None:
            return
        for name, p in self.params.items():
            live = self.masks[name]
            step = (p.detach() - probe["before"][name])[live]
            clean = probe.get("clean", {}).get(name)
            entry = self.stats.setdefault(name, {})
            entry["step_rms"] = rms(step)
            shadow = probe.get("shadow", {}).get(name)
            if shadow is not None:  # (none without noise in the optimizer's state)
                shadow = shadow[live]
                entry["history_to_step"] = float(
                    (step - shadow).norm() / shadow.norm().clamp_min(1e-30)
                )
                entry["shadow_step_rms"] = rms(shadow)
                # the step's component along the shadow's, as a share of it: 1 where the noise
                # only adds to the steps, below 1 where it also shrinks them (a second moment
                # raised by the noise divides the signal too)
                energy = shadow.double().square().sum().clamp_min(1e-60)
                entry["signal_kept"] = float((step.double() * shadow.double()).sum() / energy)
            if clean is None:
                ratio, dominated = 0.0, 0.0
                entry["clean_step_rms"] = entry["step_rms"]
            else:
                clean = clean[live]
                noise = step - clean
                ratio = float(noise.norm() / clean.norm().clamp_min(1e-30))
                dominated = float((noise.abs() > clean.abs()).float().mean()) if live.any() else 0.0
                entry["clean_step_rms"] = rms(clean)
            entry["noise_to_step"], entry["noise_dominated"] = ratio, dominated

    @torch.no_grad()
    def pruned(self, remove: dict[str, torch.Tensor], steps: int) -> None:
        """Before a prune removes `remove` (name -> bool, True: removed) and clears their flip
        counters."""
        counts = self.flips.counts
        for name, removed in remove.items():
            live = self.masks[name]
            kept = live & ~removed
            removed = live & removed
            count = counts[name].double() / max(steps, 1)
            entry = self.stats.setdefault(name, {})
            entry["flip_rate_removed"] = float(count[removed].mean()) if removed.any() else 0.0
            entry["flip_rate_kept"] = float(count[kept].mean()) if kept.any() else 0.0

    def take(self) -> dict[str, dict[str, float]]:
        """The epoch's measurements, tensor by tensor, and a fresh start for the next."""
        if self._epoch is not None and self._steps:
            counted = self.flips.counted_by_tensor()
            for name in self.params:
                live = max(self._live[name], 1)
                rate = (counted[name] - self._start[name]) / (live * self._steps)
                self.stats.setdefault(name, {})["flip_rate"] = rate
        stats, self.stats = self.stats, {}
        return {name: dict(sorted(entry.items())) for name, entry in stats.items()}
