"""The command line: every flag of the original commands, their defaults and their validation.

`parse_args` is the one entry point. Every value is checked as it is parsed (a learning rate must
be a finite positive number, a seed fit NumPy's range, ...), so a mistake ends in one line naming
the flag, before anything is loaded. Flags that would have no effect in the run (`--milestones`
without `--use_scheduler`, ...) are warned about. A flag of several values given twice adds up
its values (`--prune_exclude`, `--model_kwargs`, whose key given two values is refused), or,
where they are one setting (`--milestones`), is refused: the last occurrence never wins unnoticed.

With `--resume RUN_DIR` the options the run was started with are read back from its config.json
and parsed again, so they pass the same checks. Flags given alongside override them for this
resume only: config.json keeps the original options and records the overrides of each resume,
and a later plain `--resume` uses the original options again.
"""

import argparse
import ast
import json
import sys
from pathlib import Path

from data import DATASETS
from models import MODELS, SOURCES, check_model_name
from pruning import CRITERIA, NM, SCHEDULES, HoyerSquare, Noise, Pruner, Tensors
from pruning.hoyer import SCOPES as HOYER_SCOPES
from pruning.options import Bounded, by_flag, from_values, options_of
from pruning.pruner import check_pairing
from pruning.schedule import NEVER
from training import LR_GAMMA, OPTIMIZERS, REG_TYPES
from utils.errors import OneLineParser, UserError, given_path, special_file
from utils.logging import run_files_in, warn
from utils.runtime import default_num_workers

# A resumed run must be the same experiment...
IDENTITY_OPTIONS = (
    "model", "model_kwargs", "dataset", "prune_criterion", "prune_include", "prune_exclude",
)  # fmt: skip
# (config.json names these three of them in every version; the others came later)
REQUIRED_IN_CONFIG = ("model", "dataset", "prune_criterion")
# ...but may run on another machine, with other workers or data paths, without a warning.
MACHINE_OPTIONS = {
    "resume", "device", "num_workers", "data_dir", "no_download", "quiet", "data_on_device",
    "compile_kernels", "parallel", "dist_timeout",
}  # fmt: skip
# Names and places, not part of what is run: a run with other options under these is the same run.
NAME_OPTIONS = {"comment", "logdir", "run_dir"}
# upper bounds that only catch typos (a batch size with 20 digits), far above any real setting
MAX_BATCH = 2**24
MAX_EPOCHS = 100_000
MAX_WORKERS = 256
MAX_IMAGE_SIZE = 1024
MAX_SEED = 2**32 - 1  # NumPy's seeds are 32-bit
MAX_RATE = 100.0  # learning rates, and strengths of weight decay, penalties and noise
MAX_SECONDS = 10**6  # a timeout beyond which timedelta arithmetic overflows is no timeout


STRENGTH = Bounded(float, low=0, high=MAX_RATE)
EPOCH_OR_NEVER = Bounded(int, low=1, high=MAX_EPOCHS, also=(NEVER,))
COUNT = Bounded(int, low=1, high=MAX_BATCH)


def component_flags() -> list[tuple[str, dict]]:
    """The flags that the schedules and criteria declare (utils/options.py), each once, in
    registry order: (flag, add_argument keywords)."""
    declared: dict[str, object] = {}
    for registry in (SCHEDULES, CRITERIA):
        for cls in registry.values():
            for _, spec in options_of(cls):
                if declared.setdefault(spec.flag, spec) != spec:
                    raise TypeError(f"--{spec.flag} is declared twice, differently")
    return [(flag, spec.argparse_kwargs()) for flag, spec in declared.items()]


def flags_of(cls, fields=None) -> set[str]:
    """The flags of a criterion's or schedule's options (only of `fields`, when given)."""
    return {spec.flag for name, spec in options_of(cls) if fields is None or name in fields}


def build_pruning(args: argparse.Namespace):
    """The criterion and schedule the options describe (schedule None for dense training), or
    a UserError naming the flag at fault."""
    values = vars(args)
    with by_flag():
        try:
            criterion = from_values(CRITERIA[args.prune_criterion], values)
            if not criterion.prunes:
                check_pairing(criterion, None, args.nm)
                return criterion, None
            name, fields = (args.schedule, {}) if args.schedule else criterion.default_schedule()
        except ValueError as error:
            raise UserError(f"--prune_criterion {args.prune_criterion}: {error}") from None
        try:
            schedule = from_values(SCHEDULES[name], values, epochs=args.epochs, **fields)
        except ValueError as error:
            raise UserError(f"--schedule {name}: {error}") from None
        try:
            check_pairing(criterion, schedule, args.nm)
        except ValueError as error:
            raise UserError(f"--prune_criterion {args.prune_criterion}: {error}") from None
    return criterion, schedule


def build_pruner(args: argparse.Namespace, model, sync=None, data=None) -> Pruner:
    """The Pruner of a run: its criterion and schedule, noise, Hoyer-Square and N:M constraint
    as the flags say. The Pruner checks its arguments against the model (an N:M that does not
    divide a layer's inputs, an --nm_exclude that names no layer): a UserError here."""
    criterion, schedule = build_pruning(args)
    with by_flag():
        try:
            return Pruner(
                model,
                criterion,
                schedule,
                data=data,
                **pruner_parts(args),
                nm=args.nm,
                # without --nm it does nothing, as the warning about it says
                nm_exclude=(args.nm_exclude or ()) if args.nm else (),
                seed=args.seed,
                compile_kernels=args.compile_kernels,
                sync=sync,
            )
        except ValueError as error:
            raise UserError(str(error)) from None


def pruner_parts(args: argparse.Namespace) -> dict:
    """The Pruner's noise (with --noise), Hoyer-Square penalty (with --add_hs) and tensors, as
    the flags say; a flag's -1 (never) is a part's None."""

    def epoch(value: int) -> int | None:
        return None if value == NEVER else value

    noise = Noise(args.noise_scale_factor, args.noise_only_prunable, epoch(args.stop_noise_at))
    penalty = HoyerSquare(args.hoyer_lambda, epoch(args.stop_hoyer_at), args.hoyer_scope)
    tensors = Tensors(args.prune_bias, args.prune_bnorm, args.prune_include, args.prune_exclude)
    return {
        "noise": noise if args.noise else None,
        "penalty": penalty if args.add_hs else None,
        "tensors": tensors,
    }


def nm_pattern(text: str) -> str:
    """--nm's type: the constraint in its canonical spelling ("2:4"), so that config.json holds
    a string that parses again on resume."""
    try:
        return str(NM.parse(text))
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def model_name(text: str) -> str:
    """-m's type: a built-in network, or timm:NAME or torchvision:NAME of a model that library
    has; an unknown name is one line with close matches."""
    try:
        return check_model_name(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


# what a --model_kwargs VALUE may hold: what config.json, checkpoints and exports keep as given
LITERAL_TYPES = (bool, int, float, str, type(None))


def literal(text: str) -> object:
    """A --model_kwargs VALUE: the Python literal it spells (2, 0.1, True, None, (8, 8)), else
    the string itself (gelu)."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return text
    items = value if isinstance(value, tuple | list) else (value,)
    return value if all(isinstance(item, LITERAL_TYPES) for item in items) else text


def keyword_argument(text: str) -> str:
    """--model_kwargs's type: KEY=VALUE in a canonical spelling (KEY=repr(VALUE)), which
    config.json keeps and a resume parses again to the same value."""
    key, equals, value = text.partition("=")
    if not equals or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    return f"{key}={literal(value)!r}"


def occurrences_before(namespace: argparse.Namespace, action: argparse.Action) -> list | None:
    """The values that earlier occurrences of `action`'s flag gave in this parse, or None when
    this is its first (the namespace then holds the default itself, or, as given_options parses,
    nothing)."""
    before = getattr(namespace, action.dest, action.default)
    return None if before is action.default or before is argparse.SUPPRESS else before


class Accumulated(argparse.Action):
    """A flag of several values that may be given again: each occurrence adds the values not
    given before, in order (`--prune_exclude conv1 --prune_exclude fc` is `--prune_exclude conv1
    fc`). One occurrence stores its values as given, as it always did, so that every
    config.json parses again to the options its run had."""

    def __call__(self, parser, namespace, values, option_string=None):
        before = occurrences_before(namespace, self)
        if before is None:
            setattr(namespace, self.dest, list(values))
            return
        added = list(before)
        added += [value for value in dict.fromkeys(values) if value not in before]
        setattr(namespace, self.dest, added)


class GivenOnce(argparse.Action):
    """A flag of several values that together are one setting (--milestones): given again, it is
    refused, with the one spelling of both."""

    def __call__(self, parser, namespace, values, option_string=None):
        before = occurrences_before(namespace, self)
        if before is not None:
            together = " ".join(map(str, [*before, *values]))
            raise argparse.ArgumentError(
                self, f"given twice: give its values once, as in {option_string} {together}"
            )
        setattr(namespace, self.dest, list(values))


class KeywordArguments(argparse.Action):
    """--model_kwargs, which may be given again: the arguments of every occurrence, stored
    sorted, so that the same arguments in another order are the same options when a run is
    resumed. A key given twice with different values is refused; with the same value it is
    the same argument."""

    def __call__(self, parser, namespace, values, option_string=None):
        pairs = [*(occurrences_before(namespace, self) or ()), *values]
        by_key: dict[str, str] = {}
        for pair in pairs:
            key, _, value = pair.partition("=")
            if by_key.setdefault(key, value) != value:
                raise argparse.ArgumentError(
                    self, f"{key} is given twice, as {by_key[key]} and {value}: give it once"
                )
        setattr(namespace, self.dest, sorted(set(pairs)))


# what every flag of several values is: never one whose last occurrence silently wins
SEVERAL_VALUES = (Accumulated, GivenOnce, KeywordArguments)


def keyword_arguments(pairs: list[str] | None) -> dict:
    """The constructor arguments that --model_kwargs gives, by name."""
    return {key: literal(value) for key, _, value in (pair.partition("=") for pair in pairs or ())}


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """States every flag's default: switches read "(default: off)", and a help text that already
    explains its default is left alone."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text:
            return text
        if isinstance(action, argparse._StoreTrueAction):
            return f"{text} (default: off)"
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    """Every flag, in the groups and the order that --help shows."""
    parser = OneLineParser(
        description="Train and prune a network with FlipOut or a baseline criterion.",
        formatter_class=HelpFormatter,
    )
    model_and_data_flags(parser)
    optimisation_flags(parser)
    pruning_flags(parser)
    speed_flags(parser)
    run_flags(parser)
    for action in parser._actions:
        if action.nargs in ("+", "*") and not isinstance(action, SEVERAL_VALUES):
            raise TypeError(
                f"{action.option_strings[-1]} takes several values: give it action=Accumulated or "
                "GivenOnce, so that giving it twice is not the last occurrence silently winning"
            )
    return parser


def model_and_data_flags(parser: argparse.ArgumentParser) -> None:
    """The network, the dataset and where it comes from, a validation split."""
    group = parser.add_argument_group("model and data")
    group.add_argument(
        "-m",
        "--model",
        default="lenet300",
        type=model_name,
        metavar="MODEL",
        help=f"network: {', '.join(sorted(MODELS))}, or "
        f"{', '.join(f'{prefix}:NAME' for prefix in SOURCES)} for any model of those libraries "
        "(python -m models list [GLOB] lists the names)",
    )
    group.add_argument(
        "--model_kwargs",
        nargs="+",
        type=keyword_argument,
        action=KeywordArguments,
        default=None,
        metavar="KEY=VALUE",
        help="more arguments for a timm: or torchvision: model's constructor, such as "
        "patch_size=4 depth=2; a VALUE is a Python literal, else a string (default: none)",
    )
    group.add_argument(
        "--pretrained",
        action="store_true",
        help="start a timm: or torchvision: model from the weights its library publishes "
        "(downloaded; offline, give a local copy with --init_from FILE instead)",
    )
    group.add_argument(
        "-d",
        "--dataset",
        default="digits",
        choices=sorted(DATASETS),
        metavar="DATASET",
        help=f"dataset: {', '.join(sorted(DATASETS))}",
    )
    group.add_argument(
        "--data_dir", default="./data", help="where datasets are read and downloaded"
    )
    group.add_argument(
        "--no_download", action="store_true", help="never download: fail if the data is missing"
    )
    group.add_argument(
        "--image_size",
        type=Bounded(int, low=8, high=MAX_IMAGE_SIZE),
        default=None,
        help="side of the synthetic images (synthetic only; default: 32)",
    )
    group.add_argument(
        "--num_workers",
        type=Bounded(int, low=0, high=MAX_WORKERS),
        default=default_num_workers(),
        help="DataLoader worker processes (default: min(8, CPUs))",
    )
    group.add_argument("--val", action="store_true", help="hold out part of the training set")
    group.add_argument(
        "--val_size",
        type=COUNT,
        default=None,
        help="validation images held out with --val (default: 10%% of the training set)",
    )
    group.add_argument(
        "--evaluate_on_val",
        action="store_true",
        help="implies --val; evaluate on the validation set each epoch and on the test set once, "
        "at the end",
    )


def optimisation_flags(parser: argparse.ArgumentParser) -> None:
    """Batch sizes, epochs, the optimizer, its learning-rate schedule and regularisation."""
    group = parser.add_argument_group("optimisation")
    group.add_argument("-bs", "--batch_size", type=COUNT, default=128, help="training batch size")
    group.add_argument(
        "-tbs", "--test_batch_size", type=COUNT, default=256, help="evaluation batch size"
    )
    group.add_argument(
        "-e", "--epochs", type=Bounded(int, low=1, high=MAX_EPOCHS), default=20,
        help="training epochs",
    )  # fmt: skip
    group.add_argument(
        "-lr", type=Bounded(float, above=0, high=MAX_RATE), default=0.1,
        help="initial learning rate",
    )  # fmt: skip
    group.add_argument(
        "--opt",
        default="sgd",
        choices=sorted(OPTIMIZERS),
        help=f"optimizer: {', '.join(sorted(OPTIMIZERS))}",
    )
    group.add_argument(
        "-mom", "--momentum", type=Bounded(float, low=0, below=1), default=0.9,
        help=f"momentum ({', '.join(n for n, k in OPTIMIZERS.items() if k.takes_momentum)})",
    )  # fmt: skip
    group.add_argument(
        "--reg_type",
        default="wdecay",
        choices=REG_TYPES,
        help="wdecay: optimizer weight decay; l1 / l2: lambda * sum |w| / sum w^2 added to the "
        "loss, over all parameters",
    )
    group.add_argument(
        "--lambda",
        dest="lambda_",
        metavar="LAMBDA",
        type=STRENGTH,
        default=5e-4,
        help="regularisation strength",
    )
    group.add_argument(
        "--use_scheduler",
        action="store_true",
        help=f"multiply the learning rate by {LR_GAMMA} at each of --milestones",
    )
    group.add_argument(
        "--milestones",
        type=Bounded(int, low=1, high=MAX_EPOCHS),
        nargs="+",
        action=GivenOnce,
        default=[150, 250],
        metavar="EPOCH",
        help="epochs after which the learning rate drops (with --use_scheduler)",
    )
    group.add_argument(
        "--anneal_lr",
        action="store_true",
        help="also scale the learning rate by (1 - sparsity) after each epoch",
    )
    group.add_argument(
        "--anneal_lambda",
        action="store_true",
        help="scale the regularisation (and Hoyer-Square) by (1 - sparsity) after each epoch",
    )
    group.add_argument("--clip_grad", action="store_true", help="clip the global gradient norm")
    group.add_argument(
        "--max_norm", type=Bounded(float, above=0), default=1.0,
        help="gradient norm for --clip_grad",
    )  # fmt: skip


def pruning_flags(parser: argparse.ArgumentParser) -> None:
    """What is pruned, when and how: the criterion and schedule with the flags their classes
    declare, N:M sparsity, biases and BatchNorm, gradient noise and Hoyer-Square."""
    group = parser.add_argument_group("pruning")
    group.add_argument(
        "--prune_criterion",
        default="flipout",
        choices=sorted(CRITERIA),
        metavar="CRITERION",
        help=f"how weights are chosen for removal: {', '.join(sorted(CRITERIA))}",
    )
    group.add_argument(
        "--schedule",
        default=None,
        choices=sorted(SCHEDULES),
        help="when and how much to prune: periodic (--prune_rate of the live weights every "
        "--prune_freq epochs), oneshot (to --target_sparsity after --prune_start), gradual (Zhu "
        "& Gupta's cubic curve to --target_sparsity between --prune_start and --prune_end) "
        "(default: the criterion's own, periodic but for snip, which prunes once before training)",
    )
    for flag, kwargs in component_flags():
        group.add_argument(f"--{flag}", **kwargs)
    group.add_argument(
        "--nm",
        type=nm_pattern,
        default=None,
        metavar="N:M",
        help="semi-structured sparsity: every prune also leaves at most N live weights in every "
        "M consecutive ones along each layer's inputs (input channels at each kernel position "
        "for convolutions), the criterion choosing which; 2:4 is what sparse tensor cores run "
        "(default: off)",
    )
    group.add_argument(
        "--nm_exclude",
        nargs="+",
        action=Accumulated,
        metavar="NAME",
        default=None,
        help="parameters (as named in the model, e.g. 0.weight), modules or globs that --nm "
        "leaves unconstrained, such as a first convolution with 3 input channels (default: none)",
    )
    group.add_argument(
        "--prune_include",
        nargs="+",
        action=Accumulated,
        metavar="PATTERN",
        default=None,
        help="prune only these of the default set (every layer's weight matrices: linear, "
        "convolutions, attention's projections): parameter names, module names, or globs such "
        "as '*.attn.*'; a parameter outside the set (pos_embed) is added by its exact name "
        "(default: the whole default set)",
    )
    group.add_argument(
        "--prune_exclude",
        nargs="+",
        action=Accumulated,
        metavar="PATTERN",
        default=None,
        help="keep these tensors dense, matched as --prune_include matches: e.g. --prune_exclude "
        "conv1 fc, or '*.head.*'; shown as excluded in the layer table and summary.json "
        "(default: none)",
    )
    group.add_argument("--prune_bias", action="store_true", help="also prune conv/linear biases")
    group.add_argument("--prune_bnorm", action="store_true", help="also prune BatchNorm weights")
    group.add_argument("--noise", action="store_true", help="add Gaussian noise to the gradients")
    group.add_argument(
        "--noise_scale_factor",
        type=STRENGTH,
        default=1.0,
        help="noise std = ||grad||_2 / sqrt(numel) * this, per tensor",
    )
    group.add_argument(
        "--stop_noise_at",
        type=EPOCH_OR_NEVER,
        default=NEVER,
        help="no noise from this epoch on (-1: never)",
    )
    group.add_argument(
        "--noise_only_prunable",
        action="store_true",
        help="add noise to the prunable tensors only, not to every parameter",
    )
    group.add_argument(
        "--add_hs", action="store_true", help="add the Hoyer-Square penalty to the loss"
    )
    group.add_argument("--hoyer_lambda", type=STRENGTH, default=0.0, help="Hoyer-Square strength")
    group.add_argument(
        "--stop_hoyer_at",
        type=Bounded(int, low=0, high=MAX_EPOCHS, also=(NEVER,)),
        default=NEVER,
        help="Hoyer-Square applies while epoch <= this (-1: always)",
    )
    group.add_argument(
        "--hoyer_scope",
        type=HOYER_SCOPES,
        default="prunable",
        metavar="{" + ",".join(HOYER_SCOPES.words) + "}",
        help="the tensors Hoyer-Square sums over: prunable (the pruned tensors) or all (every "
        "trainable parameter, biases and BatchNorm included, as the FlipOut authors' code)",
    )


def speed_flags(parser: argparse.ArgumentParser) -> None:
    """How fast a run goes: where the data lives, bf16 autocast, memory layout, compiled
    per-step kernels."""
    group = parser.add_argument_group("speed")
    group.add_argument(
        "--data_on_device",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="keep the uint8 dataset on the training device and augment there, without worker "
        "processes (cifar10, mnist, digits, synthetic; default: on for CUDA, off otherwise)",
    )
    group.add_argument(
        "--amp",
        action="store_true",
        help="bf16 autocast for forward and backward; weights, BatchNorm, masks and flip counters "
        "stay in full precision",
    )
    group.add_argument(
        "--channels_last", action="store_true", help="NHWC memory layout for convolutions"
    )
    group.add_argument(
        "--compile_kernels",
        choices=["auto", "on", "off"],
        default="auto",
        help="fuse the per-step masking and sign-flip counting with torch.compile; auto: on for "
        "CUDA (eager where no compiler works), off on the CPU, where eager measured faster",
    )


def run_flags(parser: argparse.ArgumentParser) -> None:
    """Seed, device, names and places, resuming, initial weights, saving, torchrun's timeout."""
    group = parser.add_argument_group("run")
    group.add_argument(
        "--seed", type=Bounded(int, low=0, high=MAX_SEED), default=0,
        help="seed for torch, numpy and random",
    )  # fmt: skip
    group.add_argument(
        "--device", default="auto", help="auto (CUDA when present, else CPU), cpu, cuda, cuda:N"
    )
    group.add_argument("--comment", default="", help="run name suffix")
    group.add_argument("--logdir", default="", help="runs are written to runs/<logdir>/<run name>")
    group.add_argument(
        "--limit_batches",
        type=COUNT,
        default=None,
        help="end every train and eval pass after this many batches (smoke runs; default: all)",
    )
    group.add_argument("--quiet", action="store_true", help="no progress bars")
    group.add_argument(
        "--parallel",
        action="store_true",
        help="DataParallel over all visible GPUs (not under torchrun, which uses "
        "DistributedDataParallel: torchrun --nproc_per_node N main.py ...)",
    )
    group.add_argument(
        "--resume",
        metavar="RUN_DIR",
        default=None,
        help="continue the run in RUN_DIR from its last completed epoch, with the options it was "
        "started with; flags given here override them (default: start a new run)",
    )
    group.add_argument(
        "--run_dir",
        metavar="DIR",
        default=None,
        help="write the run into DIR instead of runs/<logdir>/<time>_<comment>. If DIR already "
        "holds this run (the same options), it is resumed, so that one command both starts a run "
        "and, after an interruption, continues it (sweeps and cluster requeues rely on this); a "
        "run with other options there is refused, and so is a directory without a run that "
        "holds a file a run writes, such as summary.json (default: a new directory under runs/)",
    )
    group.add_argument(
        "--init_from",
        "--load_model",
        dest="init_from",
        metavar="PATH",
        default=None,
        help="start from trained weights: a run's model.pt or checkpoint.pt (or its directory), "
        "an export of python -m export, or a plain state dict; masks in the file are kept, then "
        "the run prunes and fine-tunes as its other options say (default: a fresh initialisation)",
    )
    group.add_argument(
        "--save_model",
        action="store_true",
        help="also write model.pt at the end: the masked state dict and the masks",
    )
    group.add_argument(
        "--dist_timeout",
        type=Bounded(float, low=1, high=MAX_SECONDS),
        default=300.0,
        help="under torchrun: seconds after which a rank that stopped answering (dead, frozen, "
        "its node gone) is given up on and the others stop, naming it; also the time limit of "
        "every collective",
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse and check the command line; raise UserError (one line) for any mistake. With
    --resume, options not given on the command line come from the run's config.json, so
    `main.py --resume RUN_DIR` alone continues a run; `args.resume_overrides` then holds the
    options given here that differ from the run's own."""
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    if args.resume is not None:
        args = resumed_args(parser, argv, args.resume)
    elif args.run_dir is not None and run_config_exists(args.run_dir):
        args = resumed_args(parser, argv, args.run_dir, same_run=True)
    elif args.run_dir is not None:
        refuse_others_files(args.run_dir)
    validate(args)
    if args.resume is None:
        warn_about_inert_flags(given_options(build_parser(), argv), args)
    return args


def given_options(parser: argparse.ArgumentParser, argv: list[str]) -> dict:
    """The options that appear on the command line, with their parsed values."""
    for action in parser._actions:
        action.default = argparse.SUPPRESS
    return vars(parser.parse_args(argv))


def run_config_exists(run_dir: str) -> bool:
    """Whether --run_dir already holds a run; a path the system refuses (too long, through a
    file) is one line naming it (utils.errors.path_error), and so is a config.json there that
    is not a file (a FIFO would block its reader)."""
    path = Path(run_dir) / "config.json"
    with given_path(f"--run_dir {run_dir}", run_dir):
        kind = special_file(path)
        if kind:
            raise UserError(f"--run_dir {run_dir}: its config.json is {kind}, not a file")
        return path.is_file()


def refuse_others_files(run_dir: str) -> None:
    """A UserError when --run_dir, holding no run, holds a file that a new run there would write
    over: a user's summary.json, model.pt or events file is not the run's to replace. What a
    launcher writes there before it starts main.py (its claim, output.log, slurm.json) is no
    such file."""
    with given_path(f"--run_dir {run_dir}", run_dir):
        found = run_files_in(run_dir) if Path(run_dir).is_dir() else []
    if found:
        them = "it" if len(found) == 1 else "them"
        raise UserError(
            f"--run_dir {run_dir} holds {', '.join(found)} but no run (no config.json of "
            f"main.py): a new run there would write over {them}; choose an empty or new directory"
        )


def read_config(run_dir: str, flag: str = "--resume") -> dict:
    """A run's config.json as a dict, or a UserError that says why it cannot be used."""
    path = Path(run_dir) / "config.json"
    with given_path(f"{flag} {run_dir}", run_dir):
        if not Path(run_dir).is_dir():
            raise UserError(f"{flag} {run_dir}: no such run directory")
        kind = special_file(path)
        if kind:  # reading it would block (a FIFO) or never end (a device)
            raise UserError(f"{flag} {run_dir}: its config.json is {kind}, not a file")
        if not path.is_file():
            raise UserError(f"{flag} {run_dir}: no config.json there; is it a run directory?")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as error:  # bad JSON, bad UTF-8, absurd nesting
        reason = "nested too deeply" if isinstance(error, RecursionError) else error
        raise UserError(f"{flag} {run_dir}: {path} is unreadable: {reason}") from None
    if not isinstance(config, dict):
        raise UserError(f"{flag} {run_dir}: {path} holds a {type(config).__name__}, not options")
    missing = [key for key in REQUIRED_IN_CONFIG if key not in config]
    if missing:
        raise UserError(
            f"{flag} {run_dir}: {path} has no {', '.join(missing)}: it was not written by main.py"
        )
    return config


def options_as_argv(parser: argparse.ArgumentParser, options: dict, source: Path) -> list[str]:
    """The command line that gives `options` (as config.json stores them, under their flags'
    names), so that saved options pass the same parsing and checks as typed ones."""
    argv = []
    for action in parser._actions:
        if not action.option_strings or action.dest in ("help", "resume", "run_dir"):
            continue
        key = action.dest.rstrip("_")
        if key not in options or options[key] is None:
            continue
        value, flag = options[key], action.option_strings[-1]
        if isinstance(action, argparse.BooleanOptionalAction | argparse._StoreTrueAction):
            if not isinstance(value, bool):
                raise UserError(f"{source}: {key} is {value!r}, not true or false")
            if isinstance(action, argparse._StoreTrueAction):
                argv += [flag] if value else []
            else:
                argv += [flag if value else f"--no-{flag[2:]}"]
        elif action.nargs == "+":
            if not isinstance(value, list) or not value:
                raise UserError(f"{source}: {key} is {value!r}, not a list of values")
            argv += [flag, *map(str, value)]
        elif isinstance(value, dict | list | bool):
            raise UserError(f"{source}: {key} is {value!r}, not a single value")
        else:
            argv += [f"{flag}={value}"]
    return argv


def resumed_args(
    parser: argparse.ArgumentParser, argv: list[str], run_dir: str, same_run: bool = False
):
    """The options to resume `run_dir` with. With `same_run` (from --run_dir), the command line
    must describe the run the directory holds: any option other than where and how it runs that
    differs from the run's own is refused, since continuing it would be another experiment."""
    source = Path(run_dir) / "config.json"
    flag = "--run_dir" if same_run else "--resume"
    config = read_config(run_dir, flag)
    try:
        saved = parser.parse_args(options_as_argv(parser, config, source))
        validate(saved)
    except UserError as error:
        raise UserError(f"{flag} {run_dir}: {source} holds an invalid option: {error}") from None
    given = given_options(build_parser(), argv)
    given.pop("resume", None)
    if same_run:
        different = sorted(
            f"--{dest.rstrip('_')} {value} (the run has {getattr(saved, dest)})"
            for dest, value in given.items()
            if dest not in MACHINE_OPTIONS | NAME_OPTIONS and value != getattr(saved, dest)
        )
        if different:
            raise UserError(
                f"--run_dir {run_dir} holds a run with other options: {'; '.join(different)}; "
                "it is left as it is (choose another --run_dir, or --resume it to change options "
                "for one resume)"
            )
        given = {dest: value for dest, value in given.items() if dest in MACHINE_OPTIONS}
    for dest in IDENTITY_OPTIONS:
        if dest in given and given[dest] != getattr(saved, dest):
            theirs, ours = flag_value(getattr(saved, dest)), flag_value(given[dest])
            raise UserError(f"--resume {run_dir}: that run has --{dest} {theirs}, not {ours}")
    overrides = {dest: value for dest, value in given.items() if value != getattr(saved, dest)}
    args = argparse.Namespace(**{**vars(saved), **given, "resume": run_dir, "run_dir": None})
    args.resume_overrides = {dest.rstrip("_"): value for dest, value in overrides.items()}
    return args


def changed_options(args: argparse.Namespace) -> str | None:
    """The warning that a resume runs with options other than its run's own, or None: said by
    main.py once the run is known to resume, not while its checkpoint may still be refused."""
    overrides = getattr(args, "resume_overrides", {})
    changed = sorted(key for key in overrides if key not in MACHINE_OPTIONS)
    if not changed:
        return None
    return (
        f"resuming {args.resume} with changed options, for this resume only: {', '.join(changed)}"
    )


def flag_value(value: object) -> str:
    """An option's value as the command line spells it."""
    if value is None:
        return "(none)"
    return " ".join(map(str, value)) if isinstance(value, list) else str(value)


def validate_model(args: argparse.Namespace) -> None:
    """What only timm: and torchvision: models take, and where the initial weights come from."""
    built_in = args.model in MODELS
    if args.model_kwargs and built_in:
        raise UserError(
            f"--model_kwargs: the built-in -m {args.model} takes none; timm: and torchvision: "
            "models do"
        )
    if args.pretrained and built_in:
        raise UserError(
            f"--pretrained: the built-in -m {args.model} has no pretrained weights; timm: and "
            "torchvision: models do, or give trained weights with --init_from FILE"
        )
    if args.pretrained and args.init_from is not None:
        raise UserError("--pretrained and --init_from both give the initial weights: give one")


def validate(args: argparse.Namespace) -> None:
    """Checks that involve several options; each value alone was checked as it was parsed."""
    validate_model(args)
    if args.image_size is not None and args.dataset != "synthetic":
        raise UserError("--image_size only applies to --dataset synthetic")
    if args.add_hs and args.hoyer_lambda == 0:
        raise UserError("--add_hs needs --hoyer_lambda greater than 0 (the paper: 6e-5 to 3e-4)")
    args.val = args.val or args.evaluate_on_val
    build_pruning(args)


# flag -> (whether it acts in this run, the condition it needs)
INERT_UNLESS = {
    "milestones": (lambda a: a.use_scheduler, "without --use_scheduler"),
    "max_norm": (lambda a: a.clip_grad, "without --clip_grad"),
    "noise_scale_factor": (lambda a: a.noise, "without --noise"),
    "stop_noise_at": (lambda a: a.noise, "without --noise"),
    "noise_only_prunable": (lambda a: a.noise, "without --noise"),
    "hoyer_lambda": (lambda a: a.add_hs, "without --add_hs"),
    "stop_hoyer_at": (lambda a: a.add_hs, "without --add_hs"),
    "hoyer_scope": (lambda a: a.add_hs, "without --add_hs"),
    "val_size": (lambda a: a.val, "without --val or --evaluate_on_val"),
    "nm_exclude": (lambda a: a.nm is not None, "without --nm"),
    "momentum": (
        lambda a: OPTIMIZERS[a.opt].takes_momentum,
        f"with --opt {', '.join(sorted(n for n, k in OPTIMIZERS.items() if not k.takes_momentum))}",
    ),
}


def inert_component_flag(flag: str, args: argparse.Namespace, criterion, schedule) -> str | None:
    """Why a flag of a criterion or schedule changes nothing in this run (whose criterion and
    schedule are given), or None."""
    owners = sorted(name for name, cls in CRITERIA.items() if flag in flags_of(cls))
    if owners:
        if args.prune_criterion not in owners:
            return f"unless --prune_criterion {' or '.join(owners)}"
        if args.schedule and flag in flags_of(type(criterion), criterion.schedule_fields):
            return f"with --schedule {args.schedule}: it sets {args.prune_criterion}'s own schedule"
        return None
    owners = sorted(name for name, cls in SCHEDULES.items() if flag in flags_of(cls))
    if not owners and flag != "schedule":
        return None
    if schedule is None:
        return f"with --prune_criterion {args.prune_criterion}, which does not prune"
    if flag == "schedule":
        return None
    if args.schedule is None:
        _, fields = criterion.default_schedule()
        if flag in flags_of(type(schedule), fields):
            return f"with --prune_criterion {args.prune_criterion} (its own options set it)"
    if schedule.name not in owners:
        return f"unless --schedule {' or '.join(owners)} (this run's is {schedule.name})"
    if flag == "prune_rate" and not criterion.ranks:
        return f"with --prune_criterion {args.prune_criterion}, which prunes by its own rule"
    return None


def warn_about_inert_flags(given: dict, args: argparse.Namespace) -> None:
    """Warn about options that were given but change nothing in this run, and values that are
    allowed but almost certainly not meant."""
    criterion, schedule = build_pruning(args)
    for dest in sorted(given):
        acts, condition = INERT_UNLESS.get(dest.rstrip("_"), (None, ""))
        if acts is not None and not acts(args):
            warn(f"--{dest.rstrip('_')} has no effect {condition}")
        reason = inert_component_flag(dest, args, criterion, schedule)
        if reason:
            warn(f"--{dest} has no effect {reason}")
    if args.use_scheduler and any(m >= args.epochs for m in args.milestones):
        late = [m for m in args.milestones if m >= args.epochs]
        warn(f"--milestones {' '.join(map(str, late))}: at or after the last epoch ({args.epochs})")
    if args.prune_criterion == "threshold" and args.magnitude_threshold == 0:
        warn("--magnitude_threshold 0 prunes nothing")
    if args.noise and args.noise_scale_factor == 0:
        warn("--noise_scale_factor 0 adds no noise")
    asked = schedule is not None and ({"schedule", *flags_of(type(schedule))} & set(given))
    if asked and not schedule.epochs_pruned():
        warn(f"--schedule {schedule.name} with -e {args.epochs}: this run never prunes")
