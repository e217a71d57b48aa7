"""The fast paths change speed, never results: compiled kernels against eager ones, k-th value
selection against a full sort, channels-last and bf16 autocast against the plain path."""

import json
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import main
from pruning import Periodic, Pruner
from pruning import kernels as kernel_module
from pruning.kernels import Kernels
from pruning.select import lowest_k
from utils.logging import library_warnings_as_lines
from utils.runtime import autocast, batchnorm_in_fp32


def small_convnet() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4),
    )  # fmt: skip


OPTIMIZERS = {
    "sgd": lambda params: torch.optim.SGD(params, lr=0.5, momentum=0.9, weight_decay=5e-4),
    "nesterov": lambda params: torch.optim.SGD(
        params, lr=0.3, momentum=0.9, weight_decay=5e-4, nesterov=True
    ),
    "rmsprop": lambda params: torch.optim.RMSprop(
        params, lr=1e-2, momentum=0.9, weight_decay=5e-4, centered=True
    ),
    "adam": lambda params: torch.optim.Adam(params, lr=5e-2, weight_decay=5e-4, amsgrad=True),
    "adamw": lambda params: torch.optim.AdamW(params, lr=5e-2, weight_decay=5e-2),
}


def train(
    mode: str,
    memory_format=torch.contiguous_format,
    noise=False,
    steps=12,
    opt="sgd",
    attach=True,
):
    """A few optimizer steps with a prune in the middle; returns the final pruner state and
    weights. `attach=False` leaves the pruner without the optimizer: it re-masks every step."""
    model = small_convnet().to(memory_format=memory_format)
    pruner = Pruner(
        model,
        "flipout",
        Periodic(rate=0.5, every=1, epochs=3),
        noise_scale=1.0 if noise else None,
        compile_kernels=mode,
    )
    optimizer = OPTIMIZERS[opt](model.parameters())
    if attach:
        pruner.attach_optimizer(optimizer)
        assert not pruner.remask_weights
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


def reference_flips(trajectory: list[torch.Tensor], start: torch.Tensor) -> torch.Tensor:
    """Flips per element along `trajectory`, counted the plain way: sign bits compared."""
    previous, counts = start < 0, torch.zeros(start.shape, dtype=torch.int32)
    for values in trajectory:
        counts += (values < 0) != previous
        previous = values < 0
    return counts


@pytest.mark.parametrize("remask", [False, True], ids=["count", "remask_and_count"])
def test_mask_and_flip_kernels_compiled_equal_eager_and_a_plain_count(remask):
    eager, compiled = Kernels("off"), Kernels("on")
    generator = torch.Generator().manual_seed(0)
    trajectory = [torch.randn(5000, generator=generator) * 0.01 for _ in range(6)]
    trajectory[3][:100] = 0.0  # exact zeros, and negative zeros: both count as not negative
    trajectory[4][:50] = -0.0
    mask = torch.rand(5000, generator=generator) > 0.3
    results = []
    for kernels in (eager, compiled):
        packed = torch.zeros(5000, dtype=torch.uint8)  # start: all not negative, none pending
        for values in trajectory:
            weight = values.clone()
            if remask:
                kernels.mask_weights_and_count_flips([weight], [mask], [packed])
            else:
                kernels.count_flips([weight], [packed])
        results.append((weight, packed))
    for ours, theirs in zip(*results, strict=True):
        assert torch.equal(ours, theirs)
    weight, packed = results[0]
    masked = [values * mask for values in trajectory] if remask else trajectory
    assert torch.equal((packed >> 1).int(), reference_flips(masked, torch.zeros(5000)))
    assert torch.equal(packed & 1, (weight < 0).to(torch.uint8))
    assert int((packed >> 1).sum()) > 0


def test_eager_kernels_write_through_channels_last_scratch():
    """Scratch views take each tensor's strides: a channels-last layer pairs element for element."""
    kernels = Kernels("off")
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(4, 3, 5, 5, generator=generator).to(memory_format=torch.channels_last)
    small = torch.randn(7, generator=generator)  # shares the scratch buffers with `weight`
    packed = [torch.zeros_like(weight, dtype=torch.uint8), torch.zeros(7, dtype=torch.uint8)]
    kernels.count_flips([weight, small], packed)
    for values, byte in zip((weight, small), packed, strict=True):
        # every negative weight flipped once from the all-not-negative start: bits 0 and 1 set
        assert torch.equal(byte, (values < 0).to(torch.uint8) * 3)
    assert kernels.scratch.like(weight, torch.bool).stride() == weight.stride()
    assert kernels.scratch.like(weight, torch.uint8).stride() == weight.stride()
    assert packed[0].is_contiguous(memory_format=torch.channels_last)
    grad, mask = torch.randn_like(weight), torch.rand_like(weight) > 0.5
    expected = grad * mask
    kernels.mask_gradients([grad], [mask])
    assert torch.equal(grad, expected)


@pytest.mark.parametrize(
    ("memory_format", "attach"),
    [
        (torch.contiguous_format, True),
        (torch.channels_last, True),
        (torch.contiguous_format, False),
    ],
    ids=["contiguous", "channels_last", "remasking"],
)
def test_compiled_training_bookkeeping_equals_eager(memory_format, attach):
    (eager, eager_weights) = train("off", memory_format, attach=attach)
    (compiled, compiled_weights) = train("on", memory_format, attach=attach)
    for name in eager.params:
        assert torch.equal(eager.masks[name], compiled.masks[name])
        assert torch.equal(eager.flips.counts[name], compiled.flips.counts[name])
        assert torch.equal(eager_weights[name], compiled_weights[name])
    assert 0 < eager.sparsity < 1 and eager.flips.total() > 0


@pytest.mark.parametrize("opt", sorted(OPTIMIZERS))
def test_clearing_optimizer_state_equals_remasking_weights_every_step(opt):
    """The default path (gradients masked, optimizer state zeroed at each prune, no re-masking)
    gives the same weights, masks and flip counts as re-masking the weights after every step."""
    (cleared, cleared_weights) = train("off", noise=True, steps=16, opt=opt)
    (remasked, remasked_weights) = train("off", noise=True, steps=16, opt=opt, attach=False)
    assert remasked.remask_weights and 0 < cleared.sparsity < 1
    for name in cleared.params:
        assert torch.equal(cleared.masks[name], remasked.masks[name])
        assert torch.equal(cleared.flips.counts[name], remasked.flips.counts[name])
        assert torch.equal(cleared_weights[name], remasked_weights[name])
        assert torch.all(cleared_weights[name][~cleared.masks[name]] == 0)
    assert cleared.flips.total() > 0


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


def test_bench_epoch_section_trains_one_timed_epoch(tmp_path):
    from bench import __main__ as bench_main
    from bench import epoch

    # one short step: bf16 autocast is slow on CPUs without bf16 instructions
    result = epoch.run(torch.device("cpu"), images=32, model_name="conv6")
    assert result["steps"] == 1 and result["images_per_second"] > 0
    assert result["loss"] == result["loss"]  # finite training, not NaN
    table = bench_main.epoch_table(result)
    assert any("350 CIFAR-10 epochs" in row for row in table)


def test_bench_inference_reports_accuracy_and_limit_and_flags_a_network_at_chance(
    tmp_path, monkeypatch
):
    from bench import __main__ as bench_main
    from bench import inference
    from utils.rundir import read_summary, write_summary

    monkeypatch.setattr(inference, "cache_dir", lambda: tmp_path)
    cpu = torch.device("cpu")
    # half the weights pruned before one batch of training: the code path in a second
    options = "-m lenet5 -d digits -e 1 --schedule oneshot --target_sparsity 0.5 -bs 32 -tbs 64"
    recipe = inference.Recipe((*options.split(), "--limit_batches", "1", "--quiet", "--save_model"))
    (row,) = inference.run(cpu, repeats=1, recipes=[recipe])
    run_dir = recipe.run_dir(cpu)
    summary = read_summary(run_dir)
    assert (row["accuracy"], row["limit"]) == (
        summary["final_test_acc"],
        summary["theoretical_speedup"],
    )

    # the cached run is read back, never trained again
    def train(argv):
        raise AssertionError(f"trained again: {argv}")

    monkeypatch.setattr(inference.training_cli, "main", train)
    for accuracy, flagged in ((97.5, False), (15.0, True)):
        write_summary(run_dir, {**summary, "final_test_acc": accuracy})
        table = bench_main.inference_table(inference.run(cpu, repeats=1, recipes=[recipe]))
        assert "| test accuracy | limit (MACs dense / live) |" in table[4]
        rows = [line for line in table if line.startswith("| lenet5 |")]
        head = f"| lenet5 | 50.00% | {accuracy:.2f}% | {summary['theoretical_speedup']:.1f}x |"
        assert all(line.startswith(head) for line in rows)
        if flagged:
            assert len(rows) == 1 and "**does not classify**: not timed" in rows[0]
        else:
            assert [line.split(" | ")[5] for line in rows] == ["1", "64"]
            assert "| dense | compact | sparse | onnxruntime |" in table[4]
            # three exports, each at its faster thread count
            assert all(line.count("of the limit)") == 3 for line in rows)
            assert all(line.count(" thread") == 4 for line in rows)


def test_bench_bookkeeping_section_runs_and_reports_every_row():
    from bench import __main__ as bench_main
    from bench import bookkeeping

    result = bookkeeping.run(torch.device("cpu"), 1, "lenet5", batch=4, with_compiled=False)
    assert set(result["alone"]) == {"ours", "eager", "remasking", "noise", "original"}
    assert result["state_bytes"] == 6.0 and result["original_state_bytes"] == 9.0
    table = "\n".join(bench_main.step_table(result))
    assert "original style / ours" in table and "compiled kernels" not in table
    # a warm-up and one repetition: each timed step of the update rows updated the masks, and
    # none of the RigL timed between updates did
    dynamic = result["dynamic"]
    assert dynamic["updates"] == {"rigl": 0, "rigl_update": 2, "set_update": 2}
    steps, work = result["steps"], dynamic["work"]
    mean = (steps["rigl_update"] + 99 * steps["rigl"]) / 100
    mean_work = (work["rigl_update"] + 99 * work["rigl"]) / 100
    rows = {
        "RigL, a step between mask updates": (steps["rigl"], work["rigl"]),
        "RigL, an update step": (steps["rigl_update"], work["rigl_update"]),
        "RigL, mean step over one update cycle of ΔT = 100: (update + 99 others) / 100": (
            mean,
            mean_work,
        ),
        "SET, an update step": (steps["set_update"], work["set_update"]),
    }
    lines = table.splitlines()
    for label, (step, pruning) in rows.items():
        (line,) = [line for line in lines if line.startswith(f"| {label}")]
        figures = line.split(" | ")[1:]
        assert figures[:2] == [bench_main.ms(step), f"{step / steps['dense']:.3f}"]
        assert figures[2] == bench_main.ms(pruning)
    assert "90% sparsity" in table and "autograd computes every weight's gradient" in table


def test_a_compiler_that_fails_falls_back_to_eager_with_one_warning_line(monkeypatch, capsys):
    def no_compiler(*args):
        raise RuntimeError("no C++ compiler found")

    monkeypatch.setattr(
        kernel_module, "_COMPILED", dict.fromkeys(kernel_module.FUNCTIONS, no_compiler)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        library_warnings_as_lines()
        library_warnings_as_lines()  # main() runs many times in one process: installed once
        chosen = Kernels("auto", device="cuda")  # auto compiles where the device is not the CPU
        grad, noise = torch.zeros(6), torch.ones(6)
        chosen.add_noise(grad, noise, torch.tensor(0.5))
    assert chosen.eager and torch.equal(grad, torch.full((6,), 0.5))  # same result, eagerly
    assert capsys.readouterr().err == (
        "warning: compiling the pruning kernels failed (RuntimeError: no C++ compiler found); "
        "running them eagerly (same results, slower)\n"
    )
