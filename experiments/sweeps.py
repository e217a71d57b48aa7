"""The paper's experiments as data: each sweep is a named grid of main.py command lines.

The commands are the seed README's (Apostol, Stol & Forré, 2020): the optimisation recipe of every
table, FlipOut, GlobalMagnitude, Random and SNIP at 99.9% sparsity and Hoyer-Square with the
table's λ. The `*_figures` sweeps make every published number of one network
(experiments/published.py): each method of the accuracy-vs-sparsity figure at each sparsity of
the ladder, the unpruned network, the noise ablation and the Hoyer-Square row, one command per
published row and seed. `python -m experiments run NAME --dry-run` prints them; the launcher, the
status view, the report and the tests all read them from here.

Where the authors' code made a choice that this implementation does not make by default, the
paper's sweeps make theirs, since the published numbers come from it (docs/baselines.md):
Hoyer-Square penalises every trainable parameter (`--hoyer_scope all`), and SNIP scores a Xavier
re-initialised copy with NLL on the raw logits (`--snip_score xavier_nll`). The seed README's
commands, and the demos on digits, keep the defaults.

Every sweep runs seeds 0, 1 and 2 unless told otherwise (`--seeds`). The authors ran 42, 43 and 44,
but a seed names a random stream only within one code base: this one builds its networks, draws
its gradient noise and shuffles and augments its data in other orders than the original, so seed
42 here is no closer to their seed 42 than seed 0 is, and the sweeps keep one numbering for all.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from experiments import published

# The optimisation recipe shared by every command of the paper; 350 epochs, 500 for Hoyer-Square.
RECIPE = ["-bs", "128", "-lr", "0.1", "--opt", "sgd", "--momentum", "0.9", "--reg_type", "wdecay",
          "--lambda", "5e-4", "--use_scheduler", "--milestones", "150", "250"]  # fmt: skip
NOISE = ["--noise", "--noise_scale_factor", "1"]  # the gradient noise of FlipOut's λ = 1
FLIPOUT = ["--prune_criterion", "flipout", "--flipout_p", "2", "--prune_rate", "0.5", *NOISE]
GLOBAL_MAGNITUDE = ["--prune_criterion", "global_magnitude", "--prune_rate", "0.5"]
RANDOM_PRUNING = ["--prune_criterion", "random", "--prune_rate", "0.5"]
# The seed README's ladder for 350 epochs at a rate of 0.5: prune_freq -> sparsity
LADDER = {117: "75%", 70: "93.75%", 50: "98.44%", 39: "99.61%", 32: "99.9%"}
# ... and the exact fraction each reaches, 1 - (1/4)^k, which SNIP is given (as the authors did)
LADDER_SPARSITY = {117: "0.75", 70: "0.9375", 50: "0.984375", 39: "0.99609375", 32: "0.9990234375"}
# SNIP as the authors' code scored (pruning/snip.py), with which the paper's SNIP rows were made
AUTHORS_SNIP = ["--prune_criterion", "snip", "--snip_score", "xavier_nll"]
# the periodic methods of the figures without their noise: --noise adds it
PERIODIC = {"flipout": FLIPOUT[:-3], "global_magnitude": GLOBAL_MAGNITUDE, "random": RANDOM_PRUNING}


@dataclass(frozen=True)
class Sweep:
    name: str
    description: str
    # seeds -> the command lines, each the argv of main.py (without "main.py")
    commands: Callable[[Sequence[int]], list[list[str]]]
    default_seeds: tuple[int, ...] = (0, 1, 2)
    paper: bool = False  # its report is set beside the paper's numbers (report --paper)


def hoyer_square(hoyer_lambda: str) -> list[str]:
    """The seed README's Hoyer-Square: 500 epochs, the penalty until epoch 350, then pruned by
    threshold once; the penalty over every trainable parameter, as the authors' code summed it."""
    return ["-e", "500", "--add_hs", "--hoyer_lambda", hoyer_lambda, "--hoyer_scope", "all",
            "--prune_criterion", "threshold", "--magnitude_threshold", "1e-4",
            "--prune_freq", "350", "--stop_hoyer_at", "350"]  # fmt: skip


def paper_table(model: str, dataset: str, hoyer_lambda: str, logdir: str) -> Callable:
    """Every method of one results table, every seed, as the seed README runs them."""

    def commands(seeds: Sequence[int]) -> list[list[str]]:
        grid = []
        for seed in seeds:
            common = ["-m", model, "-d", dataset, *RECIPE, "--seed", str(seed), "--logdir", logdir]
            grid += [
                [*common, "-e", "350", *FLIPOUT, "--prune_freq", "32",
                 "--comment", f"flipout seed {seed}"],
                [*common, "-e", "350", *GLOBAL_MAGNITUDE, "--prune_freq", "32",
                 "--comment", f"global magnitude seed {seed}"],
                [*common, "-e", "350", *RANDOM_PRUNING, "--prune_freq", "32",
                 "--comment", f"random seed {seed}"],
                [*common, "-e", "350", *AUTHORS_SNIP, "--snip_sparsity", "0.999",
                 "--comment", f"snip seed {seed}"],
                [*common, *hoyer_square(hoyer_lambda), "--comment", f"hoyer-square seed {seed}"],
            ]  # fmt: skip
        return grid

    return commands


def dynamic_sparse(sparsity: str, granet_end: str) -> dict[str, list[str]]:
    """RigL, SET and GraNet at `sparsity` (a fraction), the authors' defaults otherwise: RigL and
    SET start there and keep it (ERK densities, an update every 100 steps dropping 0.3 of each
    layer's live weights, cosine-annealed to none at 75% of training); GraNet prunes from
    density 0.5 down to it, its cubic schedule reaching it at `granet_end` of training."""
    return {
        "rigl": ["--prune_criterion", "rigl", "--init_sparsity", sparsity],
        "set": ["--prune_criterion", "set", "--init_sparsity", sparsity],
        "granet": ["--prune_criterion", "granet", "--init_sparsity", "0.5",
                   "--granet_sparsity", sparsity, "--granet_prune_end", granet_end],
    }  # fmt: skip


# GraNet's authors end its pruning at their recipe's first learning-rate drop (epoch 80 of 160);
# the paper's recipe drops first at epoch 150 of 350
PAPER_GRANET_END = f"{150 / 350:.6g}"


def sparsity_ladder(model: str, dataset: str) -> Callable:
    """FlipOut and GlobalMagnitude at each sparsity of the seed README's ladder, and beside them
    the dynamic sparse methods at the same sparsities, trained by the same recipe."""

    def commands(seeds: Sequence[int]) -> list[list[str]]:
        logdir = f"{model}_{dataset}_sweep"
        grid = []
        for seed in seeds:
            for freq, level in LADDER.items():
                common = ["-m", model, "-d", dataset, *RECIPE, "-e", "350", "--seed", str(seed),
                          "--logdir", logdir]  # fmt: skip
                periodic = [*common, "--prune_freq", str(freq)]
                grid += [
                    [*periodic, *FLIPOUT, "--comment", f"flipout freq {freq} seed {seed}"],
                    [*periodic, *GLOBAL_MAGNITUDE,
                     "--comment", f"global magnitude freq {freq} seed {seed}"],
                ]  # fmt: skip
                methods = dynamic_sparse(LADDER_SPARSITY[freq], PAPER_GRANET_END)
                grid += [[*common, *flags, "--comment", f"{name} {level} seed {seed}"]
                         for name, flags in methods.items()]  # fmt: skip
        return grid

    return commands


def ladder_step(sparsity: float) -> int:
    """The prune_freq of the ladder's level at `sparsity` (percent)."""
    for freq, fraction in LADDER_SPARSITY.items():
        if abs(100 * float(fraction) - sparsity) < 1e-9:
            return freq
    raise ValueError(f"{sparsity}% is not a level of the ladder")


def published_command(row: published.Published, seed: int, logdir: str) -> list[str]:
    """main.py's arguments for one seed of a published row: the seed README's recipe and its
    method's flags at the row's level of the ladder (SNIP given the level's exact sparsity), with
    the authors' code's choices for SNIP and Hoyer-Square."""
    common = ["-m", row.model, "-d", row.dataset, *RECIPE, "--seed", str(seed), "--logdir", logdir]
    if row.hoyer_square:
        return [*common, *hoyer_square(f"{row.hoyer_lambda:g}"),
                "--comment", f"hoyer-square seed {seed}"]  # fmt: skip
    common += ["-e", "350"]
    if row.criterion == "none":
        return [*common, "--prune_criterion", "none", "--comment", f"unpruned seed {seed}"]
    freq = ladder_step(row.sparsity)
    level = LADDER[freq].rstrip("%")
    if row.criterion == "snip":
        flags = [*AUTHORS_SNIP, "--snip_sparsity", LADDER_SPARSITY[freq]]
    else:
        flags = [*PERIODIC[row.criterion], "--prune_freq", str(freq)]
    name = row.criterion.replace("_", " ")
    if row.noise:
        flags += NOISE
        name += "" if row.criterion == "flipout" else " noise"
    elif row.criterion == "flipout":
        name += " no noise"
    return [*common, *flags, "--comment", f"{name} {level} seed {seed}"]


def paper_figures(model: str) -> Callable:
    """Every published row of one network (experiments/paper_results.json), every seed."""

    def commands(seeds: Sequence[int]) -> list[list[str]]:
        rows = published.load().of(model)
        logdir = f"{model}_{rows[0].dataset}_figures"
        return [published_command(row, seed, logdir) for seed in seeds for row in rows]

    return commands


def digits_run(seed: int, logdir: str, epochs: int = 20) -> list[str]:
    """The demos' training: LeNet-300-100 on digits, 20 epochs of SGD at lr 0.05."""
    return ["-m", "lenet300", "-d", "digits", "-e", str(epochs), "-bs", "128", "-lr", "0.05",
            "--opt", "sgd", "--momentum", "0.9", "--reg_type", "wdecay", "--lambda", "5e-4",
            "--seed", str(seed), "--num_workers", "0", "--quiet", "--logdir", logdir]  # fmt: skip


def digits_demo(seeds: Sequence[int]) -> list[list[str]]:
    """The paper's table in miniature on scikit-learn's digits (no download): LeNet-300-100, 20
    epochs, every method at 99.8% (Hoyer-Square about 99.5%), plus FlipOut and GlobalMagnitude at
    75%, 93.75% and 98.44% for the plot. lr 0.05: at 0.1 FlipOut's gradient noise made about one
    seed in eight diverge before the first prune (seeds 0-7 checked); at 0.05 none did."""
    grid = []
    for seed in seeds:
        common = digits_run(seed, "demo")
        # 20 epochs, half of the live weights every 2 epochs: 9 prunes, 99.80% sparsity
        grid += [
            [*common, *FLIPOUT, "--prune_freq", "2", "--comment", f"flipout seed {seed}"],
            [*common, *GLOBAL_MAGNITUDE, "--prune_freq", "2",
             "--comment", f"global magnitude seed {seed}"],
            [*common, *RANDOM_PRUNING, "--prune_freq", "2", "--comment", f"random seed {seed}"],
            [*common, "--prune_criterion", "snip", "--snip_sparsity", "0.998",
             "--comment", f"snip seed {seed}"],
            # Hoyer-Square's sparsity follows from lambda and the threshold: about 99.5% here
            [*common, "--add_hs", "--hoyer_lambda", "5e-3", "--clip_grad", "--max_norm", "5",
             "--prune_criterion", "threshold", "--magnitude_threshold", "0.15",
             "--prune_freq", "5", "--stop_hoyer_at", "15",
             "--comment", f"hoyer-square seed {seed}"],
        ]  # fmt: skip
        # the sparsity ladder for the plot: 2, 4 and 6 prunes -> 75%, 93.75%, 98.44%
        for freq in (7, 4, 3):
            grid += [
                [*common, *FLIPOUT, "--prune_freq", str(freq),
                 "--comment", f"flipout freq {freq} seed {seed}"],
                [*common, *GLOBAL_MAGNITUDE, "--prune_freq", str(freq),
                 "--comment", f"global magnitude freq {freq} seed {seed}"],
            ]  # fmt: skip
    return grid


# 1 - 0.5^6: FlipOut's six prunes of half the live weights in 20 epochs; every other method aims
# at exactly this sparsity
BASELINES_SPARSITY = "0.984375"


def digits_baselines(seeds: Sequence[int]) -> list[list[str]]:
    """FlipOut next to the baselines a reviewer asks for, all at 98.44% sparsity on digits:
    global magnitude and FlipOut pruned every 3 of 20 epochs; SNIP, SynFlow and GraSP at
    initialisation; gradual magnitude pruning (Zhu & Gupta), layer-wise and global, from epoch 0
    to 14; and iterative magnitude pruning with rewinding to epoch 1, 4 rounds of 8 epochs
    (29 in all) removing 3/4 of the live weights after each of the first three."""
    target = ["--init_sparsity", BASELINES_SPARSITY]
    gradual = ["--schedule", "gradual", "--target_sparsity", BASELINES_SPARSITY,
               "--prune_start", "0", "--prune_end", "14", "--prune_freq", "2"]  # fmt: skip
    grid = []
    for seed in seeds:
        common = digits_run(seed, "baselines")
        grid += [
            [*common, *FLIPOUT, "--prune_freq", "3", "--comment", f"flipout seed {seed}"],
            [*common, *GLOBAL_MAGNITUDE, "--prune_freq", "3",
             "--comment", f"global magnitude seed {seed}"],
            [*common, "--prune_criterion", "snip", *target, "--comment", f"snip seed {seed}"],
            [*common, "--prune_criterion", "synflow", *target,
             "--comment", f"synflow seed {seed}"],
            [*common, "--prune_criterion", "grasp", *target, "--comment", f"grasp seed {seed}"],
            [*common, "--prune_criterion", "magnitude", *gradual,
             "--comment", f"gmp seed {seed}"],
            [*common, "--prune_criterion", "global_magnitude", *gradual,
             "--comment", f"global gmp seed {seed}"],
            [*common, "--prune_criterion", "imp", "-e", "8", "--rounds", "4", "--rewind_epoch",
             "1", "--prune_rate", "0.75", "--comment", f"imp seed {seed}"],
        ]  # fmt: skip
    return grid


# two levels of the paper's ladder, each reached by FlipOut and global magnitude halving the live
# weights periodically, the last prune at epoch 16 of 20: prune_freq, its last epoch, sparsity
DYNAMIC_LEVELS = {"93.75%": ("4", "17", "0.9375"), "99.61%": ("2", "17", "0.99609375")}


def digits_dynamic(seeds: Sequence[int]) -> list[list[str]]:
    """Dynamic sparse training beside FlipOut in miniature: FlipOut, global magnitude, RigL, SET
    and GraNet on digits at 93.75% and 99.61%, LeNet-300-100 (338,200 weights: 1,319 live at
    99.61%) in the demos' 20 epochs; at 99.61% RigL and SET also 5 times as long (100 epochs),
    as the RigL authors' "RigL 5x". The digits' 12 batches an epoch make the authors' update
    intervals (100 steps for RigL and SET, 1,000 for GraNet) one or no update in 240 steps: here
    every 10 steps; GraNet reaches its sparsity at half the run, its authors' default."""
    often = {"rigl": ["--rigl_update_every", "10"], "set": ["--rigl_update_every", "10"],
             "granet": ["--granet_update_every", "10"]}  # fmt: skip
    grid = []
    for seed in seeds:
        common = digits_run(seed, "dynamic")
        for level, (freq, stop, sparsity) in DYNAMIC_LEVELS.items():
            periodic = ["--prune_freq", freq, "--stop_pruning_at", stop]
            methods = {name: [*flags, *often[name]]
                       for name, flags in dynamic_sparse(sparsity, "0.5").items()}  # fmt: skip
            grid += [
                [*common, *FLIPOUT, *periodic, "--comment", f"flipout {level} seed {seed}"],
                [*common, *GLOBAL_MAGNITUDE, *periodic,
                 "--comment", f"global magnitude {level} seed {seed}"],
            ]  # fmt: skip
            grid += [[*common, *flags, "--comment", f"{name} {level} seed {seed}"]
                     for name, flags in methods.items()]  # fmt: skip
        longer = digits_run(seed, "dynamic", epochs=100)
        grid += [[*longer, *methods[name], "--comment", f"{name} 5x {level} seed {seed}"]
                 for name in ("rigl", "set")]  # fmt: skip
    return grid


# Beyond the paper's networks, built by timm from their names: a small vision transformer (timm's
# ViT-Tiny cut to 4 blocks of width 64, 4 heads, on 4x4 patches of the 32x32 digits: 64 tokens) and
# a modern CNN with depthwise convolutions (ConvNeXt-Atto, 3.4M parameters, as timm defines it)
ZOO = {
    "vit": ["-m", "timm:vit_tiny_patch16_224", "--model_kwargs", "patch_size=4", "depth=4",
            "embed_dim=64", "num_heads=4"],
    "convnext": ["-m", "timm:convnext_atto"],
}  # fmt: skip
# 1 - 0.5^4: four prunes of half the live weights, every 4 of 20 epochs
ZOO_SPARSITY = "93.75%"


def digits_zoo(seeds: Sequence[int]) -> list[list[str]]:
    """FlipOut (with its gradient noise, and without) and global magnitude on a small ViT and on
    ConvNeXt-Atto, both on digits at 93.75% sparsity, and each network unpruned: 20 epochs of
    AdamW at lr 1e-3 and weight decay 0.05 (the optimiser these networks are trained with), half
    the live weights pruned every 4 epochs."""
    grid = []
    for seed in seeds:
        for name, network in ZOO.items():
            common = [*network, "-d", "digits", "-e", "20", "-bs", "128", "--opt", "adamw",
                      "-lr", "1e-3", "--reg_type", "wdecay", "--lambda", "5e-2",
                      "--prune_freq", "4", "--seed", str(seed), "--num_workers", "0", "--quiet",
                      "--logdir", "zoo"]  # fmt: skip
            grid += [
                [*common, *FLIPOUT, "--comment", f"{name} flipout seed {seed}"],
                [*common, *GLOBAL_MAGNITUDE, "--comment", f"{name} global magnitude seed {seed}"],
                # the paper's noise ablation: FlipOut by sign flips alone
                [*common, *FLIPOUT[:-3], "--comment", f"{name} flipout without noise seed {seed}"],
                # the same training unpruned, for scale
                [*common, "--prune_criterion", "none", "--comment", f"{name} dense seed {seed}"],
            ]
    return grid


# FlipOut's noise beyond SGD (docs/noise.md): each network with the optimizer it is trained with,
# 20 epochs, a prune every 4 (four prunes, the last at epoch 16) at a rate that reaches the level
NOISE_NETWORKS = {
    "vit": [*ZOO["vit"], "--opt", "adamw", "-lr", "1e-3", "--reg_type", "wdecay",
            "--lambda", "5e-2"],
    "convnext": [*ZOO["convnext"], "--opt", "adamw", "-lr", "1e-3", "--reg_type", "wdecay",
                 "--lambda", "5e-2"],
    "lenet5": ["-m", "lenet5", "--opt", "sgd", "-lr", "0.05", "--momentum", "0.9",
               "--reg_type", "wdecay", "--lambda", "5e-4"],
}  # fmt: skip
# 1 - (1 - rate)^4: 93.75% at rate 0.5; 99.00% at 0.6838 (0.3162^4 = 0.0100)
NOISE_LEVELS = {"93.75%": "0.5", "99%": "0.6838"}
NOISE_KINDS = ("gradient", "update", "second_moment")
# Four prunes each: every 4 of 20 epochs; ConvNeXt-Atto, which is at 95% on digits after two
# epochs and takes twice the ViT's time an epoch, every 2 of 10 (so the sweep fits an hour)
NOISE_SCHEDULE = {
    "vit": ["-e", "20", "--prune_freq", "4"],
    "convnext": ["-e", "10", "--prune_freq", "2"],
    "lenet5": ["-e", "20", "--prune_freq", "4"],
}


def digits_noise(seeds: Sequence[int]) -> list[list[str]]:
    """FlipOut with each kind of noise (the paper's on the gradient, on the update, scaled per
    coordinate) and without, beside global magnitude: a small ViT and ConvNeXt-Atto under AdamW,
    LeNet-5 under SGD with momentum, at 93.75% and 99% on digits, with --log_mechanism; and the
    ViT and LeNet-5 unpruned under their own optimizer, with and without the paper's noise. The
    optimizers swapped are the mechanism sweep's (digits_noise_mechanism)."""
    grid = []
    for seed in seeds:
        for name, network in NOISE_NETWORKS.items():
            for level, rate in NOISE_LEVELS.items():
                common = [*network, "-d", "digits", *NOISE_SCHEDULE[name], "-bs", "128",
                          "--seed", str(seed), "--num_workers", "0", "--quiet",
                          "--log_mechanism", "--logdir", "noise"]  # fmt: skip
                flipout = ["--prune_criterion", "flipout", "--flipout_p", "2",
                           "--prune_rate", rate]  # fmt: skip
                tag = f"{name} {level} seed {seed}"
                grid += [
                    [
                        *common,
                        *flipout,
                        *NOISE,
                        "--noise_kind",
                        kind,
                        "--comment",
                        f"flipout {kind} noise {tag}",
                    ]
                    for kind in NOISE_KINDS
                ]
                grid += [
                    [*common, *flipout, "--comment", f"flipout without noise {tag}"],
                    [*common, "--prune_criterion", "global_magnitude", "--prune_rate", rate,
                     "--comment", f"global magnitude {tag}"],
                ]  # fmt: skip
        # the noise without pruning: what it costs the training itself
        for name in ("vit", "lenet5"):
            common = [*NOISE_NETWORKS[name], "-d", "digits", "-e", "20", "-bs", "128",
                      "--seed", str(seed), "--num_workers", "0", "--quiet", "--log_mechanism",
                      "--logdir", "noise", "--prune_criterion", "none"]  # fmt: skip
            grid += [
                [*common, *NOISE, "--comment", f"dense gradient noise {name} seed {seed}"],
                [*common, "--comment", f"dense {name} seed {seed}"],
            ]
    return grid


# Both networks under both optimizers, each with its recipe's learning rate and weight decay
MECHANISM_OPTIMIZERS = {
    "sgd": ["--opt", "sgd", "-lr", "0.05", "--momentum", "0.9", "--reg_type", "wdecay",
            "--lambda", "5e-4"],
    "adamw": ["--opt", "adamw", "-lr", "1e-3", "--reg_type", "wdecay", "--lambda", "5e-2"],
}  # fmt: skip


def digits_noise_mechanism(seeds: Sequence[int]) -> list[list[str]]:
    """What the noise does, measured (--log_mechanism, with the shadow optimizer's history):
    FlipOut with the paper's noise, with noise on the update, and without, on the small ViT and
    LeNet-5, each under SGD with momentum and under AdamW, at 93.75% on digits."""
    grid = []
    for seed in seeds:
        for name in ("vit", "lenet5"):
            network = ZOO["vit"] if name == "vit" else ["-m", "lenet5"]
            for opt, recipe in MECHANISM_OPTIMIZERS.items():
                common = [*network, *recipe, "-d", "digits", "-e", "20", "-bs", "128",
                          "--prune_freq", "4", "--seed", str(seed), "--num_workers", "0",
                          "--quiet", "--log_mechanism", "--logdir", "noise_mechanism",
                          "--prune_criterion", "flipout", "--flipout_p", "2",
                          "--prune_rate", "0.5"]  # fmt: skip
                tag = f"{name} {opt} seed {seed}"
                grid += [
                    [*common, *NOISE, "--comment", f"flipout gradient noise {tag}"],
                    [*common, *NOISE, "--noise_kind", "update",
                     "--comment", f"flipout update noise {tag}"],
                    [*common, "--comment", f"flipout without noise {tag}"],
                ]  # fmt: skip
    return grid


def smoke(seeds: Sequence[int]) -> list[list[str]]:
    """Four short runs on the bundled digits, one per method that prunes differently: checks an
    executor (a cluster's set-up, say) end to end in a minute or two."""
    grid = []
    for seed in seeds:
        common = ["-m", "lenet300", "-d", "digits", "-e", "6", "-lr", "0.05", "--seed", str(seed),
                  "--num_workers", "0", "--quiet", "--logdir", "smoke"]  # fmt: skip
        grid += [
            [*common, *FLIPOUT, "--prune_freq", "2", "--comment", f"flipout seed {seed}"],
            [*common, *GLOBAL_MAGNITUDE, "--prune_freq", "2",
             "--comment", f"global magnitude seed {seed}"],
            [*common, *RANDOM_PRUNING, "--prune_freq", "2", "--comment", f"random seed {seed}"],
            [*common, "--prune_criterion", "snip", "--snip_sparsity", "0.9",
             "--comment", f"snip seed {seed}"],
        ]  # fmt: skip
    return grid


SWEEPS: dict[str, Sweep] = {
    sweep.name: sweep
    for sweep in (
        Sweep("vgg19_cifar10", "the paper's VGG-19 / CIFAR-10 table: 5 methods x 3 seeds, "
              "350-500 epochs", paper_table("vgg19", "cifar10", "6e-5", "vgg19_cifar10"),
              paper=True),
        Sweep("resnet18_cifar10", "the paper's ResNet-18 / CIFAR-10 table: 5 methods x 3 seeds",
              paper_table("resnet18", "cifar10", "1e-4", "resnet18_cifar10"), paper=True),
        Sweep("densenet121_imagenette", "the paper's DenseNet-121 / Imagenette table: 5 methods "
              "x 3 seeds (./get_imagenette.sh first)",
              paper_table("densenet121", "imagenette", "3e-4", "densenet121_imagenette"),
              paper=True),
        Sweep("vgg19_cifar10_sweep", "FlipOut, GlobalMagnitude, RigL, SET and GraNet at 75% to "
              "99.9% sparsity, VGG-19 / CIFAR-10, 3 seeds", sparsity_ladder("vgg19", "cifar10"),
              paper=True),
        Sweep("resnet18_cifar10_sweep", "the sparsity ladder on ResNet-18 / CIFAR-10 (the same "
              "5 methods)", sparsity_ladder("resnet18", "cifar10"), paper=True),
        Sweep("densenet121_imagenette_sweep", "the sparsity ladder on DenseNet-121 / Imagenette "
              "(the same 5 methods)", sparsity_ladder("densenet121", "imagenette"), paper=True),
        Sweep("vgg19_cifar10_figures", "every published number on VGG-19 / CIFAR-10: FlipOut, "
              "GlobalMagnitude, Random and SNIP at the 5 sparsities, unpruned, the noise ablation "
              "and Hoyer-Square; 32 runs x 3 seeds", paper_figures("vgg19"), paper=True),
        Sweep("resnet18_cifar10_figures", "every published number on ResNet-18 / CIFAR-10: "
              "32 runs x 3 seeds", paper_figures("resnet18"), paper=True),
        Sweep("densenet121_imagenette_figures", "every published number on DenseNet-121 / "
              "Imagenette: 32 runs x 3 seeds", paper_figures("densenet121"), paper=True),
        Sweep("digits_demo", "the tables in miniature on bundled data (make demo): 11 runs x 3 "
              "seeds of 20 short epochs", digits_demo),
        Sweep("digits_baselines", "FlipOut next to IMP, SynFlow, GraSP, SNIP, GMP and global "
              "magnitude at 98.44% on bundled data: 8 runs x 3 seeds", digits_baselines),
        Sweep("digits_dynamic", "FlipOut next to RigL, SET, GraNet and global magnitude at "
              "93.75% and 99.61% on bundled data, RigL and SET also 5x as long: 12 runs x 3 seeds",
              digits_dynamic),
        Sweep("digits_zoo", "FlipOut (with and without noise) and global magnitude on a small "
              f"ViT and ConvNeXt-Atto (timm) at {ZOO_SPARSITY} on bundled data, and both "
              "unpruned: 8 runs x 3 seeds",
              digits_zoo),
        Sweep("digits_noise", "FlipOut's noise beyond SGD: each kind of noise and none beside "
              "global magnitude, a small ViT and ConvNeXt-Atto under AdamW and LeNet-5 under "
              "SGD, at 93.75% and 99% on bundled data, and 4 unpruned with and without the noise: "
              "34 runs x 3 seeds", digits_noise),
        Sweep("digits_noise_mechanism", "what FlipOut's noise does, measured: the paper's noise, "
              "noise on the update and none, a small ViT and LeNet-5 each under SGD and AdamW at "
              "93.75% on bundled data: 12 runs, one seed", digits_noise_mechanism,
              default_seeds=(0,)),
        Sweep("smoke", "four short runs on bundled data, to check an executor end to end",
              smoke, default_seeds=(0,)),
    )
}  # fmt: skip
