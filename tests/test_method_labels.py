"""A method's label comes from one function, pruning.registry.method_label, for the report, the
paper comparison and a run's summary alike; these are the labels the report gave before it had
one home, which must not change (a label is how a table row and a plot's curve are named)."""

import contextlib
import io
import itertools

import pytest

from cli import parse_args
from experiments.sweeps import SWEEPS
from pruning.registry import method_label


def paper_table(hoyer_lambda: str) -> list[tuple[str, int]]:
    """The seed README's table: one run of each method at 99.9%."""
    return [("FlipOut", 1), ("GlobalMagnitude", 1), ("Random", 1),
            ("SNIP (Xavier copy, NLL)", 1), (f"Hoyer-Square (λ={hoyer_lambda})", 1)]  # fmt: skip


def figures(hoyer_lambda: str) -> list[tuple[str, int]]:
    """The paper's figures: the unpruned network, each method at the ladder's five levels, the
    noise ablation's other arm, Hoyer-Square."""
    return [("Dense", 1), ("FlipOut", 5), ("GlobalMagnitude", 5), ("Random", 5),
            ("SNIP (Xavier copy, NLL)", 5), ("FlipOut (no noise)", 5),
            ("GlobalMagnitude + noise", 5), (f"Hoyer-Square (λ={hoyer_lambda})", 1)]  # fmt: skip


# FlipOut and GlobalMagnitude at each of the sparsity sweep's five levels, and the dynamic sparse
# methods beside them
DYNAMIC = [("RigL", 1), ("SET", 1), ("GraNet", 1)]
LADDER_PAIRS = [("FlipOut", 1), ("GlobalMagnitude", 1), *DYNAMIC] * 5
# each sweep's labels, in the order of its commands (seed 0), as (label, repeated)
SWEEP_LABELS = {
    "vgg19_cifar10": paper_table("6e-5"),
    "resnet18_cifar10": paper_table("1e-4"),
    "densenet121_imagenette": paper_table("3e-4"),
    "vgg19_cifar10_sweep": LADDER_PAIRS,
    "resnet18_cifar10_sweep": LADDER_PAIRS,
    "densenet121_imagenette_sweep": LADDER_PAIRS,
    "vgg19_cifar10_figures": figures("6e-5"),
    "resnet18_cifar10_figures": figures("1e-4"),
    "densenet121_imagenette_figures": figures("3e-4"),
    "digits_demo": [
        ("FlipOut", 1),
        ("GlobalMagnitude", 1),
        ("Random", 1),
        ("SNIP", 1),
        ("Hoyer-Square (λ=5e-3)", 1),
        ("FlipOut", 1),
        ("GlobalMagnitude", 1),
        ("FlipOut", 1),
        ("GlobalMagnitude", 1),
        ("FlipOut", 1),
        ("GlobalMagnitude", 1),
    ],
    "digits_baselines": [
        ("FlipOut", 1),
        ("GlobalMagnitude", 1),
        ("SNIP", 1),
        ("SynFlow", 1),
        ("GraSP", 1),
        ("GMP", 1),
        ("GMP (global)", 1),
        ("IMP (rewind to epoch 1)", 1),
    ],
    "digits_dynamic": [
        *[("FlipOut", 1), ("GlobalMagnitude", 1), *DYNAMIC] * 2,
        ("RigL", 1),
        ("SET", 1),
    ],
    "digits_zoo": [
        ("FlipOut", 1),
        ("GlobalMagnitude", 1),
        ("FlipOut (no noise)", 1),
        ("Dense", 1),
        ("FlipOut", 1),
        ("GlobalMagnitude", 1),
        ("FlipOut (no noise)", 1),
        ("Dense", 1),
    ],
    "smoke": [("FlipOut", 1), ("GlobalMagnitude", 1), ("Random", 1), ("SNIP", 1)],
}


@pytest.mark.parametrize("sweep", sorted(SWEEP_LABELS))
def test_every_sweep_command_keeps_its_label(sweep):
    labels = []
    for argv in SWEEPS[sweep].commands((0,)):
        with contextlib.redirect_stderr(io.StringIO()):  # warnings about inert flags
            options = parse_args(argv).options()
        labels.append(method_label(options["prune_criterion"], options))
    assert [(label, len(list(same))) for label, same in itertools.groupby(labels)] == (
        SWEEP_LABELS[sweep]
    )


@pytest.mark.parametrize(
    ("criterion", "options", "label"),
    [
        ("flipout", {"nm": "2:4", "noise": False}, "FlipOut 2:4 (no noise)"),
        ("flipout", {"schedule": "gradual", "noise": False}, "FlipOut (gradual) (no noise)"),
        ("global_magnitude", {"schedule": "gradual"}, "GMP (global)"),
        ("magnitude", {"schedule": "gradual"}, "GMP"),
        ("imp", {"rewind_epoch": 2, "imp_optimizer": "fresh"},
         "IMP (rewind to epoch 2, fresh optimizer)"),
        ("imp", {"rewind_epoch": 0}, "IMP"),
        ("snip", {"snip_bn": "eval", "schedule": "periodic"},
         "SNIP (periodic, BatchNorm in eval mode)"),
        ("threshold", {"add_hs": True, "hoyer_lambda": 2.5e-4}, "Hoyer-Square (λ=2.5e-4)"),
        ("threshold", {"add_hs": False}, "Threshold"),
        ("flipout", {"add_hs": True, "hoyer_lambda": 1e-4, "noise": True, "noise_scale_factor": 1},
         "FlipOut + HS (λ=1e-4)"),
        ("random", {"noise": True, "noise_scale_factor": float("nan")}, "Random + noise"),
        ("mine", {"nm": "2:4", "noise": True}, "mine + noise"),  # a criterion this version lacks
        ("none", {}, "Dense"),
    ],
)  # fmt: skip
def test_a_label_names_every_departure(criterion, options, label):
    assert method_label(criterion, options) == label
