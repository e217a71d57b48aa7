"""The fast paths change speed, never results: compiled kernels against eager ones, k-th value
selection against a full sort, channels-last and bf16 autocast against the plain path."""

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import main
from pruning import Pruner, PruningConfig
from pruning.kernels import Kernels
from pruning.select import lowest_k
from utils.runtime import autocast, batchnorm_in_fp32


def small_convnet() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4),
    )  # fmt: skip


def train(mode: str, memory_format=torch.contiguous_format, noise=False, steps=12):
    """A few SGD steps with a prune in the middle; returns the final pruner state and weights."""
    model = small_convnet().to(memory_format=memory_format)
    config = PruningConfig(prune_criterion="flipout", prune_freq=1, epochs=3, noise=noise)
    config.compile_kernels = mode
    pruner = Pruner(model, config)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9, weight_decay=5e-4)
    data = torch.Generator().manual_seed(1)
    for step in range(steps):
        inputs = torch.randn(16, 3, 8, 8, generator=data).to(memory_format=memory_format)
        targets = torch.randint(0, 4, (16,), generator=data)
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(inputs), targets).backward()
        pruner.after_backward(epoch=1)
        optimizer.step()
        pruner.after_step()
        if step == steps // 2:
            pruner.end_of_epoch(1)
    weights = {n: p.detach().contiguous() for n, p in pruner.params.items()}
    return pruner, weights


def test_mask_and_flip_kernels_compiled_equal_eager():
    eager, compiled = Kernels("off"), Kernels("on")
    generator = torch.Generator().manual_seed(0)
    trajectory = [torch.randn(5000, generator=generator) * 0.01 for _ in range(6)]
    trajectory[3][:100] = 0.0  # exact zeros: flips to and from 0 count too
    mask = torch.rand(5000, generator=generator) > 0.3
    results = []
    for kernels in (eager, compiled):
        signs = torch.zeros(5000, dtype=torch.int8)
        counts = torch.zeros(5000, dtype=torch.int32)
        for values in trajectory:
            weight = values.clone()
            kernels.mask_and_count_flips([weight], [mask], [signs], [counts])
        results.append((weight, signs, counts))
    for ours, theirs in zip(*results, strict=True):
        assert torch.equal(ours, theirs)
    assert int(results[0][2].sum()) > 0


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_compiled_training_bookkeeping_equals_eager(memory_format):
    (eager, eager_weights) = train("off", memory_format)
    (compiled, compiled_weights) = train("on", memory_format)
    for name in eager.params:
        assert torch.equal(eager.masks[name], compiled.masks[name])
        assert torch.equal(eager.flips.counts[name], compiled.flips.counts[name])
        assert torch.equal(eager_weights[name], compiled_weights[name])
    assert 0 < eager.sparsity < 1 and eager.flips.total() > 0


def test_channels_last_pairs_weights_with_their_own_masks_and_counters():
    (plain, plain_weights) = train("on", torch.contiguous_format)
    (nhwc, nhwc_weights) = train("on", torch.channels_last)
    assert nhwc.params["0.weight"].is_contiguous(memory_format=torch.channels_last)
    for name in plain.params:
        torch.testing.assert_close(nhwc_weights[name], plain_weights[name], rtol=1e-4, atol=1e-5)
        assert torch.equal(plain.masks[name], nhwc.masks[name])
    # a channels-last weight is zero exactly where its own mask says pruned
    weight, mask = nhwc.params["0.weight"].detach(), nhwc.masks["0.weight"]
    assert mask.is_contiguous(memory_format=torch.channels_last)
    assert torch.all(weight[~mask] == 0) and not torch.equal(mask, torch.ones_like(mask))


def test_compiled_noise_keeps_pruned_gradients_zero_and_matches_eager():
    eager, _ = train("off", noise=True)
    compiled, _ = train("on", noise=True)
    for name in eager.params:
        assert torch.equal(eager.masks[name], compiled.masks[name])
        grad = compiled.params[name].grad
        assert torch.all(grad[~compiled.masks[name]] == 0)


def test_kth_value_selection_equals_a_stable_full_sort():
    generator = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 50, (20000,), generator=generator).float()  # many ties
    for k in (1, 37, 10000, 19999):
        order = torch.argsort(scores, stable=True)
        expected = torch.zeros_like(scores, dtype=torch.bool)
        expected[order[:k]] = True
        assert torch.equal(lowest_k(scores, k), expected)


def test_batchnorm_runs_in_fp32_under_autocast():
    model = small_convnet()
    batchnorm_in_fp32(model)
    seen = {}
    model[1].register_forward_hook(lambda m, i, o: seen.update(bn=o.dtype))
    model[0].register_forward_hook(lambda m, i, o: seen.update(conv=o.dtype))
    with autocast(torch.device("cpu"), True):
        model(torch.randn(2, 3, 8, 8))
    assert seen == {"conv": torch.bfloat16, "bn": torch.float32}
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_amp_training_prunes_to_the_exact_target(tmp_path):
    argv = ["-e", "3", "--prune_freq", "1", "--amp", "--noise", "--num_workers", "0", "--quiet"]
    assert main.main([*argv, "--logdir", str(tmp_path)]) == 0
    (run_dir,) = tmp_path.iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    # 338,200 prunable weights halved twice: exactly 84,550 live
    assert summary["final_sparsity"] == 1 - 84550 / 338200
    assert summary["final_test_acc"] > 50
