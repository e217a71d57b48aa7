"""The command line: every flag of the original commands and its validation, made into the run's
record (record.py, where each option's default and role are declared).

`parse_args` is the one entry point, and argparse stops here: it returns a `RunRecord`. Every
value is checked as it is parsed (a learning rate must be a finite positive number, a seed fit
NumPy's range, ...), so a mistake ends in one line naming the flag, before anything is loaded.
Flags that would have no effect in the run (`--milestones` without `--use_scheduler`, ...) are
warned about. A flag of several values given twice adds up its values (`--prune_exclude`,
`--model_kwargs`, whose key given two values is refused), or, where they are one setting
(`--milestones`), is refused: the last occurrence never wins unnoticed.

With `--resume RUN_DIR` the options the run was started with are read back from its config.json,
each value checked by its flag's own parser, so they pass the same checks as typed ones. Flags
given alongside override them for this resume only: config.json keeps the original options and
records the overrides of each resume, and a later plain `--resume` uses the original options
again.
"""

import argparse
import ast
import functools
import itertools
import sys
from pathlib import Path

from data import DATASETS
from models import MODELS, SOURCES, check_model_name
from pruning import CRITERIA, NM, SCHEDULES, HoyerSquare, Noise, Pruner, Tensors
from pruning.hoyer import SCOPES as HOYER_SCOPES
from pruning.noise import KINDS as NOISE_KINDS
from pruning.options import Bounded, by_flag, from_values, options_of
from pruning.pruner import check_pairing
from pruning.schedule import NEVER
from record import (
    ModelOptions,
    PruneOptions,
    Role,
    RunRecord,
    component_options,
    fixed_keys,
    key_of,
    section_specs,
    specs,
)
from training import LR_GAMMA, OPTIMIZERS, REG_TYPES
from utils import plugins, rundir
from utils.errors import OneLineParser, UserError, given_path, special_file
from utils.flags import Accumulated, GivenOnce, KeywordArguments
from utils.logging import run_files_in, warn

# config.json names these in every version; the other options came later
REQUIRED_IN_CONFIG = ("model", "dataset", "prune_criterion")
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
    """The flags that the schedules and criteria declare (pruning/options.py), each once, in
    registry order: (flag, add_argument keywords)."""
    return [(flag, spec.argparse_kwargs()) for flag, spec in component_options().items()]


def flags_of(cls, fields=None) -> set[str]:
    """The flags of a criterion's or schedule's options (only of `fields`, when given); none
    for None."""
    return {spec.flag for name, spec in options_of(cls) if fields is None or name in fields}


def build_pruning(record: RunRecord):
    """The criterion and schedule the options describe (schedule None for dense training), or
    a UserError naming the flag at fault."""
    prune, values = record.prune, record.options()
    with by_flag():
        try:
            criterion = from_values(CRITERIA[prune.prune_criterion], values)
            if not criterion.prunes:
                check_pairing(criterion, None, prune.nm)
                return criterion, None
            name, fields = (prune.schedule, {}) if prune.schedule else criterion.default_schedule()
        except ValueError as error:
            raise UserError(f"--prune_criterion {prune.prune_criterion}: {error}") from None
        try:
            schedule = from_values(SCHEDULES[name], values, epochs=record.train.epochs, **fields)
        except ValueError as error:
            raise UserError(f"--schedule {name}: {error}") from None
        try:
            check_pairing(criterion, schedule, prune.nm)
        except ValueError as error:
            raise UserError(f"--prune_criterion {prune.prune_criterion}: {error}") from None
    return criterion, schedule


def build_pruner(record: RunRecord, model, sync=None, data=None) -> Pruner:
    """The Pruner of a run: its criterion and schedule, noise, Hoyer-Square and N:M constraint
    as the flags say. The Pruner checks its arguments against the model (an N:M that does not
    divide a layer's inputs, an --nm_exclude that names no layer): a UserError here."""
    criterion, schedule = build_pruning(record)
    prune = record.prune
    with by_flag():
        try:
            return Pruner(
                model,
                criterion,
                schedule,
                data=data,
                **pruner_parts(prune),
                nm=prune.nm,
                # without --nm it does nothing, as the warning about it says
                nm_exclude=(prune.nm_exclude or ()) if prune.nm else (),
                seed=record.train.seed,
                compile_kernels=record.train.compile_kernels,
                sync=sync,
                mechanism=record.run.log_mechanism,
            )
        except ValueError as error:
            raise UserError(str(error)) from None


def pruner_parts(prune: PruneOptions) -> dict:
    """The Pruner's noise (with --noise), Hoyer-Square penalty (with --add_hs) and tensors, as
    the flags say; a flag's -1 (never) is a part's None."""

    def epoch(value: int) -> int | None:
        return None if value == NEVER else value

    noise = Noise(
        prune.noise_scale_factor, prune.noise_only_prunable, epoch(prune.stop_noise_at),
        prune.noise_kind,
    )  # fmt: skip
    penalty = HoyerSquare(prune.hoyer_lambda, epoch(prune.stop_hoyer_at), prune.hoyer_scope)
    tensors = Tensors(prune.prune_bias, prune.prune_bnorm, prune.prune_include, prune.prune_exclude)
    return {
        "noise": noise if prune.noise else None,
        "penalty": penalty if prune.add_hs else None,
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
    # every default is the record's (record.py), where each option's role is declared beside it
    defaults = {spec.name: spec.default for spec in section_specs()}
    for action in parser._actions:
        action.default = defaults.get(action.dest, action.default)
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
        choices=sorted(DATASETS),
        metavar="DATASET",
        help=f"dataset: {', '.join(sorted(DATASETS))}",
    )
    group.add_argument("--data_dir", help="where datasets are read and downloaded")
    group.add_argument(
        "--no_download", action="store_true", help="never download: fail if the data is missing"
    )
    group.add_argument(
        "--image_size",
        type=Bounded(int, low=8, high=MAX_IMAGE_SIZE),
        help="side of the synthetic images (synthetic only; default: 32)",
    )
    group.add_argument(
        "--num_workers",
        type=Bounded(int, low=0, high=MAX_WORKERS),
        help="DataLoader worker processes (default: min(8, CPUs))",
    )
    group.add_argument("--val", action="store_true", help="hold out part of the training set")
    group.add_argument(
        "--val_size",
        type=COUNT,
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
    group.add_argument("-bs", "--batch_size", type=COUNT, help="training batch size")
    group.add_argument("-tbs", "--test_batch_size", type=COUNT, help="evaluation batch size")
    group.add_argument(
        "-e", "--epochs", type=Bounded(int, low=1, high=MAX_EPOCHS),
        help="training epochs",
    )  # fmt: skip
    group.add_argument(
        "-lr", type=Bounded(float, above=0, high=MAX_RATE),
        help="initial learning rate",
    )  # fmt: skip
    group.add_argument(
        "--opt",
        choices=sorted(OPTIMIZERS),
        help=f"optimizer: {', '.join(sorted(OPTIMIZERS))}",
    )
    group.add_argument(
        "-mom", "--momentum", type=Bounded(float, low=0, below=1),
        help=f"momentum ({', '.join(n for n, k in OPTIMIZERS.items() if k.takes_momentum)})",
    )  # fmt: skip
    group.add_argument(
        "--reg_type",
        choices=REG_TYPES,
        help="wdecay: optimizer weight decay; l1 / l2: lambda * sum |w| / sum w^2 added to the "
        "loss, over all parameters",
    )
    group.add_argument(
        "--lambda",
        dest="lambda_",
        metavar="LAMBDA",
        type=STRENGTH,
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
        "--max_norm", type=Bounded(float, above=0),
        help="gradient norm for --clip_grad",
    )  # fmt: skip


def pruning_flags(parser: argparse.ArgumentParser) -> None:
    """What is pruned, when and how: the criterion and schedule with the flags their classes
    declare, N:M sparsity, biases and BatchNorm, gradient noise and Hoyer-Square."""
    group = parser.add_argument_group("pruning")
    group.add_argument(
        "--prune_criterion",
        choices=sorted(CRITERIA),
        metavar="CRITERION",
        help=f"how weights are chosen for removal: {', '.join(sorted(CRITERIA))}",
    )
    group.add_argument(
        "--schedule",
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
        help="parameters (as named in the model, e.g. 0.weight), modules or globs that --nm "
        "leaves unconstrained, such as a first convolution with 3 input channels (default: none)",
    )
    group.add_argument(
        "--prune_include",
        nargs="+",
        action=Accumulated,
        metavar="PATTERN",
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
        help="noise std = ||grad||_2 / sqrt(numel) * this, per tensor",
    )
    group.add_argument(
        "--stop_noise_at",
        type=EPOCH_OR_NEVER,
        help="no noise from this epoch on (-1: never)",
    )
    group.add_argument(
        "--noise_only_prunable",
        action="store_true",
        help="add noise to the prunable tensors only, not to every parameter",
    )
    group.add_argument(
        "--noise_kind",
        type=NOISE_KINDS,
        metavar="{" + ",".join(NOISE_KINDS.words) + "}",
        help="gradient: the paper's, on each gradient, std its RMS * the scale factor; update: on "
        "the optimizer's step, std the step's RMS * the factor; second_moment: on each gradient, "
        "std per coordinate its gradient's RMS over recent steps * the factor (docs/noise.md)",
    )
    group.add_argument(
        "--add_hs", action="store_true", help="add the Hoyer-Square penalty to the loss"
    )
    group.add_argument("--hoyer_lambda", type=STRENGTH, help="Hoyer-Square strength")
    group.add_argument(
        "--stop_hoyer_at",
        type=Bounded(int, low=0, high=MAX_EPOCHS, also=(NEVER,)),
        help="Hoyer-Square applies while epoch <= this (-1: always)",
    )
    group.add_argument(
        "--hoyer_scope",
        type=HOYER_SCOPES,
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
        help="fuse the per-step masking and sign-flip counting with torch.compile; auto: on for "
        "CUDA (eager where no compiler works), off on the CPU, where eager measured faster",
    )


def run_flags(parser: argparse.ArgumentParser) -> None:
    """Seed, device, names and places, resuming, initial weights, saving, torchrun's timeout."""
    group = parser.add_argument_group("run")
    group.add_argument(
        "--seed", type=Bounded(int, low=0, high=MAX_SEED),
        help="seed for torch, numpy and random",
    )  # fmt: skip
    group.add_argument("--device", help="auto (CUDA when present, else CPU), cpu, cuda, cuda:N")
    group.add_argument("--comment", help="run name suffix")
    group.add_argument("--logdir", help="runs are written to runs/<logdir>/<run name>")
    group.add_argument(
        "--limit_batches",
        type=COUNT,
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
        help="continue the run in RUN_DIR from its last completed epoch, with the options it was "
        "started with; flags given here override them (default: start a new run)",
    )
    group.add_argument(
        "--run_dir",
        metavar="DIR",
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
        "--log_mechanism",
        action="store_true",
        help="measure, per prunable tensor, each epoch's sign-flip rate and its noise-to-step "
        "ratio, and at each prune the flip rates of the weights it removes and keeps, into "
        "metrics.jsonl and TensorBoard (mechanism/...; docs/noise.md)",
    )
    group.add_argument(
        "--dist_timeout",
        type=Bounded(float, low=1, high=MAX_SECONDS),
        help="under torchrun: seconds after which a rank that stopped answering (dead, frozen, "
        "its node gone) is given up on and the others stop, naming it; also the time limit of "
        "every collective",
    )
    group.add_argument(
        "--plugins",
        nargs="+",
        action=Accumulated,
        metavar="MODULE",
        help="import these modules first (MODULE.py in the current directory, or installed): the "
        "criteria, schedules, networks, datasets and optimizers they register become choices, "
        "their options flags; a resume of such a run needs them given again (default: none, but "
        "the modules of installed packages' flipout.plugins entry points)",
    )


def parse_args(argv: list[str] | None = None) -> RunRecord:
    """The run's record, from the command line checked; UserError (one line) for any mistake.
    With --resume, options not given on the command line come from the run's config.json, so
    `main.py --resume RUN_DIR` alone continues a run; the record's `resume_overrides` then holds
    the options given here that differ from the run's own."""
    argv = sys.argv[1:] if argv is None else list(argv)
    plugins.load(plugins_named(argv))
    parser = shared_parser()
    args = parser.parse_args(argv)
    if args.resume is not None:
        return resumed_record(parser, argv, args.resume)
    if args.run_dir is not None and run_config_exists(args.run_dir):
        return resumed_record(parser, argv, args.run_dir, same_run=True)
    if args.run_dir is not None:
        refuse_others_files(args.run_dir)
    record = validated(RunRecord.from_options(vars(args)))
    warn_about_inert_flags(given_options(argv), record)
    return record


def plugins_named(argv: list[str]) -> dict[str, str]:
    """The modules to import before the parser is built, those of --plugins (spelled in full),
    each with the words that name it in an error. A run that --resume or --run_dir continues and
    that was started with plugins needs them given again: a file read never makes this process
    import code, so a run directory from elsewhere cannot name a module to run. Its config.json
    is read here without complaint (parse_args checks that file)."""
    named = {name: "--plugins" for name in flag_values(argv, "--plugins")}
    for flag in ("--resume", "--run_dir"):
        for run_dir in flag_values(argv, flag)[-1:]:
            try:
                config = rundir.read_config(Path(run_dir)) or {}
            except (OSError, ValueError):
                continue
            recorded = config.get("plugins")
            recorded = (
                [n for n in recorded if isinstance(n, str)] if isinstance(recorded, list) else []
            )
            missing = [name for name in recorded if name not in named]
            if missing:
                raise UserError(
                    f"{flag} {run_dir}: the run was started with --plugins {' '.join(recorded)}; "
                    f"give --plugins {' '.join(missing)} to continue it (a run directory never "
                    "makes main.py import code by itself)"
                )
    return named


def flag_values(argv: list[str], flag: str) -> list[str]:
    """The values argv gives `flag` (as `flag A B` or `flag=A`), every occurrence's."""
    values = []
    for index, word in enumerate(argv):
        if word == "--":
            break
        if word.startswith(f"{flag}="):
            values.append(word.partition("=")[2])
        elif word == flag:
            following = itertools.takewhile(
                lambda value: not value.startswith("-"), argv[index + 1 :]
            )
            values += following
    return values


def flag_spellings() -> dict[str, str]:
    """Each option's flag as messages name it (-lr, --lambda, --batch_size), by key."""
    return {
        key_of(action.dest): action.option_strings[-1]
        for action in shared_parser()._actions
        if action.option_strings
    }


def given_options(argv: list[str]) -> dict:
    """The options that appear on the command line, with their parsed values, by key."""
    parsed = shared_parser(given_only=True).parse_args(argv)
    return {key_of(dest): value for dest, value in vars(parsed).items()}


def shared_parser(given_only: bool = False) -> argparse.ArgumentParser:
    """build_parser's parser, built once for what the registries hold now (a sweep parses
    hundreds of commands); `given_only`: one without defaults, whose namespace holds only what
    the command line gives. Parsing leaves a parser as it was: never change the one returned."""
    registries = (CRITERIA, SCHEDULES, MODELS, SOURCES, DATASETS, OPTIMIZERS)
    holds = tuple(tuple((name, id(entry)) for name, entry in r.items()) for r in registries)
    return parser_of(holds, given_only)


@functools.lru_cache(maxsize=8)
def parser_of(holds: tuple, given_only: bool) -> argparse.ArgumentParser:
    """The parser of registries holding `holds` (shared_parser's key)."""
    parser = build_parser()
    if given_only:
        for action in parser._actions:
            action.default = argparse.SUPPRESS
    return parser


def run_config_exists(run_dir: str) -> bool:
    """Whether --run_dir already holds a run; a path the system refuses (too long, through a
    file) is one line naming it (utils.errors.path_error), and so is a config.json there that
    is not a file (a FIFO would block its reader)."""
    path = Path(run_dir) / rundir.CONFIG
    with given_path(f"--run_dir {run_dir}", run_dir):
        kind = special_file(path)
        if kind:
            raise UserError(f"--run_dir {run_dir}: {path} is unreadable: {kind}, not a file")
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
            f"--run_dir {run_dir} holds {', '.join(found)} but no run (no {rundir.CONFIG} of "
            f"main.py): a new run there would write over {them}; choose an empty or new directory"
        )


def read_config(run_dir: str, flag: str = "--resume") -> dict:
    """A run's config.json as a dict, or a UserError that says why it cannot be used."""
    path = Path(run_dir) / rundir.CONFIG
    with given_path(f"{flag} {run_dir}", run_dir):
        if not Path(run_dir).is_dir():
            raise UserError(f"{flag} {run_dir}: no such run directory")
        try:
            config = rundir.read_config(Path(run_dir))
        except rundir.Damaged as error:
            raise UserError(f"{flag} {run_dir}: {path} is {error.reason}") from None
    if config is None:
        raise UserError(f"{flag} {run_dir}: no {rundir.CONFIG} there; is it a run directory?")
    missing = [key for key in REQUIRED_IN_CONFIG if key not in config]
    if missing:
        raise UserError(
            f"{flag} {run_dir}: {path} has no {', '.join(missing)}: it was not written by main.py"
        )
    return config


def record_from_config(parser: argparse.ArgumentParser, config: dict) -> RunRecord:
    """The record that config.json keeps (options under their flags' names), each value checked
    as its flag checks what is typed: the same run, without a detour through a command line.
    An option it does not name (one added since) is at its default."""
    values = {}
    for action in parser._actions:
        if not action.option_strings or action.dest in ("help", "resume", "run_dir"):
            continue
        value = config.get(key_of(action.dest))
        if value is not None:
            values[action.dest] = checked(parser, action, value)
    return RunRecord.from_options(values)


def checked(parser: argparse.ArgumentParser, action: argparse.Action, value):
    """A value of config.json for `action`'s flag, as that flag would have stored it; UserError
    naming the key where the value is not one the flag takes."""
    key = key_of(action.dest)
    if isinstance(action, argparse.BooleanOptionalAction | argparse._StoreTrueAction):
        if not isinstance(value, bool):
            raise UserError(f"{key} is {value!r}, not true or false")
        return value
    if action.nargs in ("+", "*"):
        if not isinstance(value, list) or not value:
            raise UserError(f"{key} is {value!r}, not a list of values")
        given = [typed(action, item) for item in value]
    elif isinstance(value, dict | list | bool):
        raise UserError(f"{key} is {value!r}, not a single value")
    else:
        given = typed(action, value)
    stored = argparse.Namespace()
    try:  # the flag's own action: a canonical order, a key given twice refused
        action(parser, stored, given, action.option_strings[-1])
    except argparse.ArgumentError as error:
        raise UserError(f"{key}: {error.message}") from None
    return getattr(stored, action.dest)


def typed(action: argparse.Action, item):
    """One value of config.json for `action`'s flag, parsed and checked as typed text is."""
    text = str(item)
    try:
        value = action.type(text) if action.type is not None else text
    except (argparse.ArgumentTypeError, TypeError, ValueError) as error:
        raise UserError(f"{key_of(action.dest)}: {error}") from None
    if action.choices is not None and value not in action.choices:
        raise UserError(f"{key_of(action.dest)}: {text!r} is not one of {sorted(action.choices)}")
    return value


def resumed_record(
    parser: argparse.ArgumentParser, argv: list[str], run_dir: str, same_run: bool = False
) -> RunRecord:
    """The record to resume `run_dir` with. With `same_run` (from --run_dir), the command line
    must describe the run the directory holds: an option of its identity that differs from the
    run's own is refused, since continuing it would be another experiment."""
    source = Path(run_dir) / rundir.CONFIG
    flag = "--run_dir" if same_run else "--resume"
    config = read_config(run_dir, flag)
    try:
        saved = validated(record_from_config(parser, config)).options()
    except UserError as error:
        raise UserError(f"{flag} {run_dir}: {source} holds an invalid option: {error}") from None
    given = given_options(argv)
    given.pop("resume", None)
    roles = specs()
    if same_run:
        different = sorted(
            f"--{key} {value} (the run has {saved[key]})"
            for key, value in given.items()
            if roles[key].identity and value != saved[key]
        )
        if different:
            raise UserError(
                f"--run_dir {run_dir} holds a run with other options: {'; '.join(different)}; "
                "it is left as it is (choose another --run_dir, or --resume it to change options "
                "for one resume)"
            )
        given = {key: value for key, value in given.items() if roles[key].role is Role.MACHINE}
    for key in fixed_keys():
        if key in given and given[key] != saved[key]:
            theirs, ours = flag_value(saved[key]), flag_value(given[key])
            raise UserError(f"--resume {run_dir}: that run has --{key} {theirs}, not {ours}")
    overrides = {key: value for key, value in given.items() if value != saved[key]}
    merged = {**saved, **given, "resume": run_dir, "run_dir": None}
    return validated(RunRecord.from_options(merged, overrides))


def changed_options(record: RunRecord) -> str | None:
    """The warning that a resume runs with options other than its run's own, or None: said by
    main.py once the run is known to resume, not while its checkpoint may still be refused."""
    roles = specs()
    changed = sorted(key for key in record.resume_overrides if roles[key].role is not Role.MACHINE)
    if not changed:
        return None
    return (
        f"resuming {record.run.resume} with changed options, for this resume only: "
        f"{', '.join(changed)}"
    )


def flag_value(value: object) -> str:
    """An option's value as the command line spells it."""
    if value is None:
        return "(none)"
    return " ".join(map(str, value)) if isinstance(value, list) else str(value)


def validate_model(model: ModelOptions) -> None:
    """What only timm: and torchvision: models take, and where the initial weights come from."""
    built_in = model.model in MODELS
    if model.model_kwargs and built_in:
        raise UserError(
            f"--model_kwargs: the built-in -m {model.model} takes none; timm: and torchvision: "
            "models do"
        )
    if model.pretrained and built_in:
        raise UserError(
            f"--pretrained: the built-in -m {model.model} has no pretrained weights; timm: and "
            "torchvision: models do, or give trained weights with --init_from FILE"
        )
    if model.pretrained and model.init_from is not None:
        raise UserError("--pretrained and --init_from both give the initial weights: give one")


def validated(record: RunRecord) -> RunRecord:
    """The record, checked where several options meet (each value alone was checked as it was
    parsed); --evaluate_on_val implies --val."""
    validate_model(record.model)
    data, prune = record.data, record.prune
    if data.image_size is not None and data.dataset != "synthetic":
        raise UserError("--image_size only applies to --dataset synthetic")
    if prune.add_hs and prune.hoyer_lambda == 0:
        raise UserError("--add_hs needs --hoyer_lambda greater than 0 (the paper: 6e-5 to 3e-4)")
    build_pruning(record)
    return record.replace(val=True) if data.evaluate_on_val and not data.val else record


# The paper's noise under an adaptive optimizer: what the study in docs/noise.md measured
ADAPTIVE_NOISE = (
    "--noise adds the paper's gradient noise, set for SGD; --opt {opt} takes it into its "
    "second-moment estimates, which shrinks the steps it takes (docs/noise.md): --noise_kind "
    "update adds the noise after the step instead, where it holds"
)

# flag -> (whether it acts in this run, the condition it needs)
INERT_UNLESS = {
    "milestones": (lambda r: r.train.use_scheduler, "without --use_scheduler"),
    "max_norm": (lambda r: r.train.clip_grad, "without --clip_grad"),
    "noise_scale_factor": (lambda r: r.prune.noise, "without --noise"),
    "stop_noise_at": (lambda r: r.prune.noise, "without --noise"),
    "noise_only_prunable": (lambda r: r.prune.noise, "without --noise"),
    "noise_kind": (lambda r: r.prune.noise, "without --noise"),
    "hoyer_lambda": (lambda r: r.prune.add_hs, "without --add_hs"),
    "stop_hoyer_at": (lambda r: r.prune.add_hs, "without --add_hs"),
    "hoyer_scope": (lambda r: r.prune.add_hs, "without --add_hs"),
    "val_size": (lambda r: r.data.val, "without --val or --evaluate_on_val"),
    "nm_exclude": (lambda r: r.prune.nm is not None, "without --nm"),
    "momentum": (
        lambda r: OPTIMIZERS[r.train.opt].takes_momentum,
        f"with --opt {', '.join(sorted(n for n, k in OPTIMIZERS.items() if not k.takes_momentum))}",
    ),
}


def inert_component_flag(flag: str, record: RunRecord, criterion, schedule) -> str | None:
    """Why a flag of a criterion or schedule changes nothing in this run (whose criterion and
    schedule are given), or None."""
    chosen, scheduled = record.prune.prune_criterion, record.prune.schedule
    owners = sorted(name for name, cls in CRITERIA.items() if flag in flags_of(cls))
    if owners:
        if chosen not in owners:
            return f"unless --prune_criterion {' or '.join(owners)}"
        if scheduled and flag in flags_of(type(criterion), criterion.schedule_fields):
            return f"with --schedule {scheduled}: it sets {chosen}'s own schedule"
        return None
    owners = sorted(name for name, cls in SCHEDULES.items() if flag in flags_of(cls))
    if not owners and flag != "schedule":
        return None
    if schedule is None:
        return f"with --prune_criterion {chosen}, which does not prune"
    if flag == "schedule":
        return None
    if scheduled is None:
        _, fields = criterion.default_schedule()
        if flag in flags_of(type(schedule), fields):
            return f"with --prune_criterion {chosen} (its own options set it)"
    if schedule.name not in owners:
        return f"unless --schedule {' or '.join(owners)} (this run's is {schedule.name})"
    if flag == "prune_rate" and not criterion.ranks:
        return f"with --prune_criterion {chosen}, which prunes by its own rule"
    return None


def warn_about_inert_flags(given: dict, record: RunRecord) -> None:
    """Warn about options that were given but change nothing in this run, and values that are
    allowed but almost certainly not meant."""
    criterion, schedule = build_pruning(record)
    train, prune = record.train, record.prune
    for key in sorted(given):
        acts, condition = INERT_UNLESS.get(key, (None, ""))
        if acts is not None and not acts(record):
            warn(f"--{key} has no effect {condition}")
        reason = inert_component_flag(key, record, criterion, schedule)
        if reason:
            warn(f"--{key} has no effect {reason}")
    if train.use_scheduler and any(m >= train.epochs for m in train.milestones):
        late = [m for m in train.milestones if m >= train.epochs]
        warn(
            f"--milestones {' '.join(map(str, late))}: at or after the last epoch ({train.epochs})"
        )
    if prune.prune_criterion == "threshold" and record.value("magnitude_threshold") == 0:
        warn("--magnitude_threshold 0 prunes nothing")
    if prune.noise and prune.noise_scale_factor == 0:
        warn("--noise_scale_factor 0 adds no noise")
    if prune.noise and prune.noise_kind == "gradient" and OPTIMIZERS[train.opt].adaptive:
        warn(ADAPTIVE_NOISE.format(opt=train.opt))
    asked = schedule is not None and ({"schedule", *flags_of(type(schedule))} & set(given))
    if asked and not schedule.epochs_pruned():
        warn(f"--schedule {schedule.name} with -e {train.epochs}: this run never prunes")
