"""What main.py checks as a run starts, before it trains, checked once at launch for all the runs
of a sweep (`check_first_steps`), so that a mistake in the arguments they share (those after
`--`, or a machine without what they need) fails the launch, exit 2, before anything is written,
rather than every run alike, each in a run directory of its own. `--dry-run` makes the same
checks, but for the sweep's own data, which a machine that only shows the commands need not have.

- The device, as each run will find it: this machine's, one GPU of its own with `--gpus`, or
  `--gpus_per_task` GPUs on Slurm (there only its name is checked).
- The data, as main.py loads it from `--data_dir`, never downloaded here: present and readable,
  with its validation split. Where it is missing, a run that may download it (no
  `--no_download`, a dataset that downloads) must be able to: `--data_dir` can be created and
  written and, where the runs execute on this machine, the name of the host it comes from
  resolves (unless a proxy is set, which may reach it). A damaged file the runs would download
  nothing over is left to them.
- With arguments after `--`, the network of each distinct model, data and pruning scope built
  as main.py builds it (published weights are not fetched), its pruner, and `--init_from`'s
  weights read (never running code: export/weights.py) and loaded into it, masks included. The
  sweeps' own commands build, as their tests show: a launch without arguments after `--` does
  not pay for it.

A mistake that only some runs would meet (weights that fit one network of the sweep and not the
other) stops the launch too, naming those runs.
"""

import contextlib
import importlib
import io
import json
import os
import socket
import threading
import urllib.parse
import urllib.request
from pathlib import Path

from data import DATASETS, DatasetError, build_datasets, split_validation
from utils.errors import StorageError, UserError, given_path

# the options that decide how main.py loads a run's data
DATA_OPTIONS = ("dataset", "data_dir", "no_download", "image_size", "val", "val_size")
# ... and those that decide its network, its pruner's scope and the weights it starts from
NETWORK_OPTIONS = (
    *DATA_OPTIONS, "model", "model_kwargs", "init_from", "prune_bias", "prune_bnorm",
    "prune_include", "prune_exclude", "nm", "nm_exclude",
)  # fmt: skip
# the constant of each downloading dataset's module that says where the runs download it from;
# the others are never downloaded (Imagenette comes from ./get_imagenette.sh)
DOWNLOAD_SOURCES = {"cifar10": "URL", "mnist": "MIRROR"}
# how long the name of a download's host may take to resolve; unanswered, the runs find out
LOOKUP_SECONDS = 5.0


def check_first_steps(runs, args, overrides) -> None:
    """A UserError where the runs, given `overrides` after `--`, would fail as they start."""
    with refusing(runs, runs, ()):
        check_devices(runs, args)
        for path in sorted({run.options["init_from"] for run in runs} - {None}):
            if not os.path.exists(path):
                raise UserError(f"--init_from {path}: no such file or directory")
    splits = data_of(runs, args, overrides)
    if overrides:
        for group in grouped(runs, NETWORK_OPTIONS).values():
            with refusing(group, runs, NETWORK_OPTIONS):
                check_network(group[0], splits[key_of(group[0], DATA_OPTIONS)])


def data_of(runs, args, overrides) -> dict:
    """The data of each distinct setting of the runs (None: not read), checked. A dry run shows
    the commands also on a machine without the sweep's own data: there only data that the
    arguments after `--` choose is refused."""
    strict = not args.dry_run or bool(chosen(overrides) & set(DATA_OPTIONS))
    splits = {}
    for key, group in grouped(runs, DATA_OPTIONS).items():
        options = group[0].options
        with refusing(group, runs, DATA_OPTIONS):
            here = args.executor == "local"
            splits[key] = check_data(options, here) if strict else data_if_any(options)
    return splits


def chosen(overrides) -> set[str]:
    """The options the arguments after `--` give, by their names in a run's options."""
    from cli import given_options

    with contextlib.redirect_stderr(io.StringIO()):
        return set(given_options(list(overrides)))


def key_of(run, names) -> str:
    return json.dumps([run.options.get(name) for name in names])


def grouped(runs, names) -> dict:
    """The runs by the values of the options `names`, in the runs' order."""
    groups: dict[str, list] = {}
    for run in runs:
        groups.setdefault(key_of(run, names), []).append(run)
    return groups


@contextlib.contextmanager
def refusing(group, runs, names):
    """A UserError inside the block, which each run of `group` would meet as it starts, said to
    stop the launch."""
    try:
        yield
    except UserError as error:
        raise UserError(f"{str(error).rstrip('.')}; {fate(group, runs, names)}") from None


def fate(group, runs, names) -> str:
    """What `group` of the launch's `runs` would do, named by the options `names` where it is
    not all of them."""
    if len(group) == len(runs):
        return "every run would fail on it as it starts, so none is"
    first = group[0].options
    apart = [
        name for name in names if any(run.options.get(name) != first.get(name) for run in runs)
    ]
    from cli import flag_spellings

    spelled = flag_spellings()
    named = " ".join(f"{spelled[name]} {shown_value(first.get(name))}" for name in apart)
    if len(group) == 1:
        return f"the run with {named} would fail on it as it starts, so none is"
    return f"the {len(group)} runs with {named} would fail on it as they start, so none is"


def shown_value(value) -> str:
    return " ".join(map(str, value)) if isinstance(value, list) else str(value)


# -- the device -------------------------------------------------------------------------------


def check_devices(runs, args) -> None:
    """Each --device of the runs, as they will find it."""
    gpus, where = gpus_per_run(args)
    for spec in sorted({run.options["device"] for run in runs}):
        check_device(spec, gpus, where)


def gpus_per_run(args) -> tuple[int | None, str]:
    """How many GPUs each run will see, and why; None where they are this machine's."""
    if args.executor == "slurm":
        count = args.gpus_per_task
        return (
            count,
            f"each Slurm task has {count} GPU{'s' if count != 1 else ''} (--gpus_per_task)",
        )
    if args.gpus:
        return 1, "with --gpus each run sees one GPU, its own, as cuda:0"
    return None, ""


def check_device(spec: str, gpus: int | None, where: str) -> None:
    """A UserError where a run with --device `spec`, seeing `gpus` GPUs (None: this machine's),
    would fail to start. Only the name of a device is checked where it is another machine's."""
    import torch

    from utils.runtime import resolve_device

    if gpus is None:
        resolve_device(spec)
        return
    try:
        device = torch.device(spec)
    except (RuntimeError, ValueError):  # auto, or no device's name: the same on every machine
        device = None
    if device is None or device.type not in ("cuda", "mps"):
        resolve_device(spec)
    elif device.type == "cuda" and (device.index or 0) >= gpus:
        raise UserError(f"--device {spec}: {where}")


# -- the data ---------------------------------------------------------------------------------


def check_data(options: dict, here: bool):
    """The splits main.py would load with `options`, read here without downloading; None where
    the data is missing and each run may download it. `here`: the runs execute on this
    machine, whose network is theirs."""
    data_dir = options["data_dir"]
    with given_path(f"--data_dir {data_dir}", data_dir):
        try:
            splits = build_datasets(options["dataset"], data_dir, False, options["image_size"])
        except DatasetError as missing:
            check_download(options, missing, here)
            return None
    if options["val"]:
        split_validation(splits, options["val_size"] or len(splits.train) // 10)
    return splits


def data_if_any(options: dict):
    """The splits of check_data, or None, with no refusal: what a dry run looks at where the
    data is the sweep's own, which the machine showing the commands need not have."""
    with contextlib.suppress(UserError, StorageError):
        return check_data(options, here=False)
    return None


def check_download(options: dict, missing: DatasetError, here: bool) -> None:
    """`missing` (what reading the data without a download met), unless a run may download the
    data: its dataset downloads, --no_download is not given, --data_dir can be made and
    written and, `here`, the data's host can be found. What else `missing` may say (a damaged
    file) is left to the runs, which download nothing over it."""
    source, data_dir = source_of(options["dataset"]), Path(options["data_dir"])
    in_the_way = data_dir.exists() and not data_dir.is_dir()  # what `missing` says then
    if options["no_download"] or source is None or in_the_way:
        raise missing
    blocked = unwritable(data_dir)
    if blocked is None and here:
        blocked = unreachable(source)
    if blocked:
        raise UserError(f"{missing} The runs would download it, but {blocked}")


def source_of(dataset: str) -> str | None:
    """Where the runs download `dataset` from when it is missing; None: never downloaded."""
    constant = DOWNLOAD_SOURCES.get(dataset)
    return getattr(importlib.import_module(DATASETS[dataset]), constant) if constant else None


def unwritable(data_dir: Path) -> str | None:
    """Why a download cannot make and write `data_dir` (the folder it creates, under the
    nearest part of it that exists), or None. Asked of the system, nothing written."""
    whole = data_dir.absolute()
    existing = next(part for part in [whole, *whole.parents] if os.path.lexists(part))
    if not existing.is_dir():
        return f"{existing} is a file, not a directory"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} cannot be written"
    return None


def unreachable(url: str) -> str | None:
    """Why `url` cannot be downloaded from here, as far as a lookup of its host's name shows
    (nothing is fetched), or None. A proxy may reach what this machine cannot name, and a
    lookup that does not answer in time proves nothing: both are left to the runs."""
    if urllib.request.getproxies():
        return None
    host = urllib.parse.urlsplit(url).hostname
    failure: list[OSError] = []

    def lookup() -> None:
        try:
            socket.getaddrinfo(host, 443)
        except OSError as error:
            failure.append(error)

    thread = threading.Thread(target=lookup, daemon=True)
    thread.start()
    thread.join(LOOKUP_SECONDS)
    if thread.is_alive() or not failure:
        return None
    error = failure[0]
    return f"{host} cannot be found from here ({error.strerror or error})"


# -- the network and its first weights -------------------------------------------------------


def check_network(run, splits) -> None:
    """The network of `run` built as main.py builds it for its data `splits`, its pruner, and
    --init_from loaded into them. Without `splits` (data the runs will download) only
    --init_from's file is read. What main.py prints meanwhile is the runs' to print."""
    import main
    from cli import build_pruner, parse_args
    from export.weights import read_weights
    from models import build_for_run

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        record = parse_args(list(run.argv))
        weights = record.model.init_from
        if splits is None:
            if weights is not None:
                with given_path(f"--init_from {weights}", weights):
                    read_weights(weights, "--init_from")
            return
        spec = main.model_spec(record.model, splits)
        model = build_for_run(spec, pretrained=False, check=record.data.image_size is not None)
        masks = None
        if weights is not None:
            with given_path(f"--init_from {weights}", weights):
                masks = main.init_from(weights, model, spec)
        pruner = build_pruner(record, model)
        if masks is not None:
            try:
                pruner.adopt_masks(main.adoptable_masks(record, pruner, masks))
            except ValueError as error:
                raise UserError(f"--init_from {weights}: {error}") from None
