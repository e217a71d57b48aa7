"""The command line: every flag of the original commands, their defaults and their validation.

`parse_args` is the one entry point. With `--resume RUN_DIR` the options a run was started with
are read back from its config.json, and flags given alongside override them, so that
`python main.py --resume RUN_DIR` alone continues a run.
"""

import argparse
import json
import sys
from pathlib import Path

from data import DATASETS
from models import MODELS
from pruning import CRITERIA
from training import LR_GAMMA
from utils.errors import UserError
from utils.logging import warn
from utils.runtime import default_num_workers

# A resumed run must be the same experiment...
IDENTITY_OPTIONS = ("model", "dataset", "prune_criterion")
# ...but may run on another machine, with other workers or data paths, without a warning.


# ...but may run on another machine, with other workers or data paths, without a warning.
MACHINE_OPTIONS = {
    "resume", "device", "num_workers", "data_dir", "no_download", "quiet", "data_on_device",
    "compile_kernels", "parallel",
}  # fmt: skip


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
    parser = argparse.ArgumentParser(
        description="Train and prune a network with FlipOut or a baseline criterion.",
        formatter_class=HelpFormatter,
    )
    g = parser.add_argument_group("model and data")
    g.add_argument(
        "-m",
        "--model",
        default="lenet300",
        choices=sorted(MODELS),
        metavar="MODEL",
        help=f"network: {', '.join(sorted(MODELS))}",
    )
    g.add_argument(
        "-d",
        "--dataset",
        default="digits",
        choices=sorted(DATASETS),
        metavar="DATASET",
        help=f"dataset: {', '.join(sorted(DATASETS))}",
    )
    g.add_argument("--data_dir", default="./data", help="where datasets are read and downloaded")
    g.add_argument(
        "--no_download", action="store_true", help="never download: fail if the data is missing"
    )
    g.add_argument(
        "--image_size",
        type=int,
        default=None,
        help="side of the synthetic images (synthetic only; default: 32)",
    )
    g.add_argument(
        "--num_workers",
        type=int,
        default=default_num_workers(),
        help="DataLoader worker processes (default: min(8, CPUs))",
    )
    g.add_argument("--val", action="store_true", help="hold out part of the training set")
    g.add_argument(
        "--val_size",
        type=int,
        default=None,
        help="validation images held out with --val (default: 10%% of the training set)",
    )
    g.add_argument(
        "--evaluate_on_val",
        action="store_true",
        help="implies --val; evaluate on the validation set each epoch and on the test set once, "
        "at the end",
    )

    g = parser.add_argument_group("optimisation")
    g.add_argument("-bs", "--batch_size", type=int, default=128, help="training batch size")
    g.add_argument("-tbs", "--test_batch_size", type=int, default=256, help="evaluation batch size")
    g.add_argument("-e", "--epochs", type=int, default=20, help="training epochs")
    g.add_argument("-lr", type=float, default=0.1, help="initial learning rate")
    g.add_argument("--opt", default="sgd", choices=["sgd", "rmsprop", "adam"], help="optimizer")
    g.add_argument("-mom", "--momentum", type=float, default=0.9, help="momentum (sgd and rmsprop)")
    g.add_argument(
        "--reg_type",
        default="wdecay",
        choices=["wdecay", "l1", "l2"],
        help="wdecay: optimizer weight decay; l1 / l2: lambda * sum |w| / sum w^2 added to the "
        "loss, over all parameters",
    )
    g.add_argument(
        "--lambda",
        dest="lambda_",
        metavar="LAMBDA",
        type=float,
        default=5e-4,
        help="regularisation strength",
    )
    g.add_argument(
        "--use_scheduler",
        action="store_true",
        help=f"multiply the learning rate by {LR_GAMMA} at each of --milestones",
    )
    g.add_argument(
        "--milestones",
        type=int,
        nargs="+",
        default=[150, 250],
        metavar="EPOCH",
        help="epochs after which the learning rate drops (with --use_scheduler)",
    )
    g.add_argument(
        "--anneal_lr",
        action="store_true",
        help="also scale the learning rate by (1 - sparsity) after each epoch",
    )
    g.add_argument(
        "--anneal_lambda",
        action="store_true",
        help="scale the regularisation (and Hoyer-Square) by (1 - sparsity) after each epoch",
    )
    g.add_argument("--clip_grad", action="store_true", help="clip the global gradient norm")
    g.add_argument("--max_norm", type=float, default=1.0, help="gradient norm for --clip_grad")

    g = parser.add_argument_group("pruning")
    g.add_argument(
        "--prune_criterion",
        default="flipout",
        choices=sorted(CRITERIA),
        metavar="CRITERION",
        help=f"how weights are chosen for removal: {', '.join(sorted(CRITERIA))}",
    )
    g.add_argument(
        "--prune_freq",
        type=int,
        default=2,
        help="prune at the end of every this many epochs (not after the last)",
    )
    g.add_argument(
        "--prune_rate",
        type=float,
        default=0.5,
        help="fraction of the live weights each prune removes",
    )
    g.add_argument(
        "--stop_pruning_at",
        type=int,
        default=-1,
        help="no pruning from this epoch on (-1: never stop)",
    )
    g.add_argument("--flipout_p", type=float, default=2.0, help="FlipOut score |w|^p / (flips + 1)")
    g.add_argument(
        "--magnitude_threshold",
        type=float,
        default=1e-4,
        help="the threshold criterion prunes live weights with |w| below this",
    )
    g.add_argument(
        "--snip_sparsity",
        type=float,
        default=None,
        help="fraction of weights SNIP removes before training (required with snip)",
    )
    g.add_argument("--snip_batches", type=int, default=1, help="training batches SNIP scores on")
    g.add_argument("--prune_bias", action="store_true", help="also prune conv/linear biases")
    g.add_argument("--prune_bnorm", action="store_true", help="also prune BatchNorm weights")
    g.add_argument("--noise", action="store_true", help="add Gaussian noise to the gradients")
    g.add_argument(
        "--noise_scale_factor",
        type=float,
        default=1.0,
        help="noise std = ||grad||_2 / sqrt(numel) * this, per tensor",
    )
    g.add_argument(
        "--stop_noise_at", type=int, default=-1, help="no noise from this epoch on (-1: never)"
    )
    g.add_argument(
        "--noise_only_prunable",
        action="store_true",
        help="add noise to the prunable tensors only, not to every parameter",
    )
    g.add_argument("--add_hs", action="store_true", help="add the Hoyer-Square penalty to the loss")
    g.add_argument("--hoyer_lambda", type=float, default=0.0, help="Hoyer-Square strength")
    g.add_argument(
        "--stop_hoyer_at",
        type=int,
        default=-1,
        help="Hoyer-Square applies while epoch <= this (-1: always)",
    )

    g = parser.add_argument_group("speed")
    g.add_argument(
        "--data_on_device",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="keep the uint8 dataset on the training device and augment there, without worker "
        "processes (cifar10, mnist, digits, synthetic; default: on for CUDA, off otherwise)",
    )
    g.add_argument(
        "--amp",
        action="store_true",
        help="bf16 autocast for forward and backward; weights, BatchNorm, masks and flip counters "
        "stay in full precision",
    )
    g.add_argument(
        "--channels_last", action="store_true", help="NHWC memory layout for convolutions"
    )
    g.add_argument(
        "--compile_kernels",
        choices=["auto", "on", "off"],
        default="auto",
        help="fuse the per-step masking and sign-flip counting with torch.compile; auto: on for "
        "CUDA (eager where no compiler works), off on the CPU, where eager measured faster",
    )

    g = parser.add_argument_group("run")
    g.add_argument("--seed", type=int, default=0, help="seed for torch, numpy and random")
    g.add_argument(
        "--device", default="auto", help="auto (CUDA when present, else CPU), cpu, cuda, cuda:N"
    )
    g.add_argument("--comment", default="", help="run name suffix")
    g.add_argument("--logdir", default="", help="runs are written to runs/<logdir>/<run name>")
    g.add_argument(
        "--limit_batches",
        type=int,
        default=None,
        help="end every train and eval pass after this many batches (smoke runs; default: all)",
    )
    g.add_argument("--quiet", action="store_true", help="no progress bars")
    g.add_argument(
        "--parallel",
        action="store_true",
        help="DataParallel over all visible GPUs (not under torchrun, which uses "
        "DistributedDataParallel: torchrun --nproc_per_node N main.py ...)",
    )
    g.add_argument(
        "--resume",
        metavar="RUN_DIR",
        default=None,
        help="continue the run in RUN_DIR from its last completed epoch, with the options it was "
        "started with; flags given here override them (default: start a new run)",
    )
    g.add_argument(
        "--save_model",
        action="store_true",
        help="also write model.pt at the end: the masked state dict and the masks",
    )
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse and validate the command line. With --resume, options not given on the command line
    come from the run's config.json, so `main.py --resume RUN_DIR` alone continues a run."""
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    if args.resume is not None:
        args = resumed_args(parser, argv, args.resume)
    validate(parser, args)
    return args


def given_options(parser: argparse.ArgumentParser, argv: list[str]) -> dict:
    """The options that appear on the command line, with their parsed values."""
    for action in parser._actions:
        action.default = argparse.SUPPRESS
    return vars(parser.parse_args(argv))


def resumed_args(parser: argparse.ArgumentParser, argv: list[str], run_dir: str):
    config_path = Path(run_dir) / "config.json"
    if not config_path.is_file():
        raise UserError(f"--resume {run_dir}: no config.json there; is it a run directory?")
    saved = json.loads(config_path.read_text())
    defaults = vars(parser.parse_args([]))
    given = given_options(build_parser(), argv)
    merged = {dest: saved.get(dest.rstrip("_"), default) for dest, default in defaults.items()}
    for dest in IDENTITY_OPTIONS:
        if dest in given and given[dest] != merged[dest]:
            raise UserError(
                f"--resume {run_dir}: that run has --{dest} {merged[dest]}, not {given[dest]}"
            )
    changed = sorted(
        dest for dest, value in given.items()
        if dest not in MACHINE_OPTIONS and value != merged[dest]
    )  # fmt: skip
    if changed:
        warn(f"resuming {run_dir} with changed options: {', '.join(changed)}")
    return argparse.Namespace(**{**merged, **given})


def validate(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    for name in ("epochs", "batch_size", "test_batch_size", "prune_freq", "snip_batches"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name} must be positive, got {getattr(args, name)}")
    if args.limit_batches is not None and args.limit_batches <= 0:
        parser.error(f"--limit_batches must be positive, got {args.limit_batches}")
    if args.num_workers < 0:
        parser.error(f"--num_workers must be 0 or more, got {args.num_workers}")
    if not 0 < args.prune_rate < 1:
        parser.error(f"--prune_rate must be in (0, 1), got {args.prune_rate}")
    if args.flipout_p <= 0:
        parser.error(f"--flipout_p must be positive, got {args.flipout_p}")
    if args.prune_criterion == "snip":
        if args.snip_sparsity is None:
            parser.error("--prune_criterion snip needs --snip_sparsity (e.g. 0.999)")
        if not 0 <= args.snip_sparsity < 1:
            parser.error(f"--snip_sparsity must be in [0, 1), got {args.snip_sparsity}")
    if args.val_size is not None and args.val_size <= 0:
        parser.error(f"--val_size must be positive, got {args.val_size}")
    if args.clip_grad and args.max_norm <= 0:
        parser.error(f"--max_norm must be positive, got {args.max_norm}")
    if args.image_size is not None and args.dataset != "synthetic":
        parser.error("--image_size only applies to --dataset synthetic")
    args.val = args.val or args.evaluate_on_val
    if args.milestones != parser.get_default("milestones") and not args.use_scheduler:
        warn("--milestones has no effect without --use_scheduler")


# -- building -------------------------------------------------------------------------------
