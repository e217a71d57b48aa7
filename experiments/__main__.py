"""python -m experiments: replicate a table, on this machine or on a Slurm cluster.

    python -m experiments list                                 # runs, epochs, GPU-hours
    python -m experiments run vgg19_cifar10 --dry-run          # the exact main.py commands
    python -m experiments run vgg19_cifar10 --gpus 8           # one run per GPU, here
    python -m experiments run digits_demo --jobs 2             # on the CPU, cores shared out
    python -m experiments run vgg19_cifar10 --executor slurm --partition gpu --time 1440
    python -m experiments status vgg19_cifar10 --report
    python -m experiments run vgg19_cifar10 -- -d synthetic -e 3   # extra arguments for every run
    python -m experiments --plugins my_sweeps run tiny         # a sweep of your own module's

The report that ends a launch, or that `status --report` prints, is set beside the paper's published
numbers for the paper's sweeps (experiments/paper.py). Launching a sweep again skips its completed
runs, resumes its stopped ones and reruns its failed ones, and says which it does for each
(experiments/runs.py); the overrides and seeds a sweep was launched with are remembered
(experiments/launches.py). The arguments after `--` may not hold what the launcher gives each run
itself (`--seed`: the seeds come from `--seeds`; `--run_dir`, `--resume`), nor make two runs of a
sweep one run (experiments/runs.py); before anything is written, what main.py would check as each
run starts is checked once for all (experiments/first_steps.py: the device the runs will find, the
data, and with arguments after `--` the network and `--init_from`), so that a mistake shared by
the runs fails none of them. `--seeds` given twice adds the seeds of both (`--seeds 0 1 --seeds 2`
is `--seeds 0 1 2`); `--sbatch` given twice with one KEY and two values is refused. Every ending
is one line on stderr and an exit code; where several apply, the first row of this table that
applies:

| exit     | meaning                                                                     |
|----------|-----------------------------------------------------------------------------|
| 130, 143 | stopped by SIGINT / SIGTERM: every run stopped at a safe point, resumable   |
| 4        | a write failed (full disk, permissions, read-only or immutable directory)   |
| 2        | a mistake in the command, a Slurm request no node can hold, or a run        |
|          | directory refused (another run's options, damaged): left as it is           |
|          | (also a mistake in the arguments after --, such as --seed, one that makes   |
|          | two runs one, a --device, data or --init_from the runs cannot start with:   |
|          | then nothing is written)                                                    |
| 1        | some run failed or diverged                                                 |
| 5        | some run is held by another process (a launcher, a main.py): left to it     |
| 0        | every run completed (with Slurm: submitted, or already queued or done)      |
"""

import argparse
import dataclasses
import os
import re
import shlex
import signal
import sys
import tempfile
from pathlib import Path

from experiments import shown
from experiments.files import special
from experiments.sweeps import SWEEPS
from utils import plugins
from utils.errors import (
    EXIT_BUSY,
    EXIT_STORAGE,
    EXIT_USER_ERROR,
    OneLineParser,
    StorageError,
    UserError,
    given_path,
    quiet_closed_pipes,
)
from utils.flags import Accumulated, KeywordArguments
from utils.rundir import OUTPUT_LOG
from utils.stop import Interrupted, StopSignals

EXIT_SOME_FAILED = 1
# a stopped launch waits up to STOP_WAIT_SECONDS (experiments/local.py) for its runs to stop
STOP_GRACE_SECONDS = 90
# the largest values that can mean anything; each is checked against the machine or the
# partition too, before anything is written
MOST_GPUS_PER_TASK = 64
MOST_CPUS_PER_TASK = 4096
MOST_MINUTES = 366 * 24 * 60
MOST_REQUEUES = 1000
MOST_ARRAY_PARALLELISM = 1_000_000
LARGEST_SEED = 2**32 - 1  # NumPy's
EPOCH_FLAGS = "--amp --data_on_device --channels_last"  # bench's, which the GPU-hours assume
SLURM_LOGS = ".slurm"  # the folder of a sweep's runs that holds submitit's files, a job each


def whole_number(low: int, high: int, why: str = ""):
    """An argparse type: a whole number from `low` to `high` (ASCII digits only: int() also
    takes "1_000" and other scripts' digits), refused as it is parsed, before a value of twenty
    digits can size a list or reach a system call."""
    limit = f" ({why})" if why else ""

    def parse(text: str) -> int:
        if not re.fullmatch(r"\+?[0-9]{1,20}", text) or not low <= int(text) <= high:
            raise argparse.ArgumentTypeError(
                f"must be a whole number from {low} to {high}{limit}, not {text!r}"
            )
        return int(text)

    return parse


def memory(text: str) -> str:
    if not re.fullmatch(r"[0-9]{1,9}[KMGTkmgt]?", text):
        raise argparse.ArgumentTypeError(f"expected a size such as 32G or 4000M, not {text!r}")
    return text


def sbatch_option(text: str) -> str:
    """KEY=VALUE, the dashes sbatch spells a KEY with taken off (--qos=high is qos=high)."""
    key, equals, value = text.partition("=")
    if not key.lstrip("-") or not equals:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, such as qos=high, not {text!r}")
    return f"{key.lstrip('-')}={value}"


def build_parser() -> argparse.ArgumentParser:

    parser = OneLineParser(
        prog="python -m experiments",
        description="Run the paper's experiments (sweeps of main.py runs) and follow them.",
    )
    parser.add_argument(
        "--plugins",
        type=str,
        nargs=1,
        action=Accumulated,
        metavar="MODULE",
        help="import MODULE first, for the sweeps (and criteria, networks, ...) it registers, and "
        "give it to every main.py command; once for each module, before COMMAND",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("list", help="the sweeps and what each runs")
    run = commands.add_parser("run", help="run (or resume) a sweep's runs")
    status = commands.add_parser("status", help="where a sweep's runs stand")
    for sub in (run, status):
        sub.add_argument("sweep", metavar="SWEEP", help="a name from `list`")
        sub.add_argument(
            "--seeds",
            type=whole_number(0, LARGEST_SEED),
            nargs="+",
            action=Accumulated,
            metavar="SEED",
            help="the seeds to run; given again, it adds its seeds (default: as launched before, "
            "else the sweep's, usually 0 1 2)",
        )
    run.add_argument("--dry-run", action="store_true", help="print the main.py commands, run none")
    run.add_argument(
        "--executor",
        choices=["local", "slurm"],
        default="local",
        help="where the runs execute (default: local)",
    )
    local = run.add_argument_group("local executor")
    cores = len(os.sched_getaffinity(0))  # each run at once needs a core of its own
    local.add_argument(
        "--gpus",
        type=whole_number(1, cores, f"one core per run; {cores} here"),
        metavar="N",
        help="run up to N runs at once, each on its own visible GPU",
    )
    local.add_argument(
        "--jobs",
        type=whole_number(1, cores, f"one core per run; {cores} here"),
        metavar="N",
        help="without GPUs: run N at once, the CPU cores shared out (default: 1)",
    )
    slurm = run.add_argument_group("slurm executor (one array task per run)")
    slurm.add_argument("--partition", help="Slurm partition (default: the cluster's default)")
    slurm.add_argument(
        "--time",
        type=whole_number(1, MOST_MINUTES, "a year"),
        default=24 * 60,
        metavar="MINUTES",
        help="time limit of each task; a run that needs longer is requeued near "
        "it and resumes (default: 1440)",
    )
    slurm.add_argument("--account", help="Slurm account to charge")
    slurm.add_argument("--constraint", help="Slurm node constraint (e.g. a GPU type)")
    slurm.add_argument(
        "--cpus_per_task",
        type=whole_number(1, MOST_CPUS_PER_TASK),
        default=4,
        help="(default: 4)",
    )
    slurm.add_argument("--mem", type=memory, help="memory per task, as sbatch takes it (e.g. 32G)")
    slurm.add_argument(
        "--gpus_per_task",
        type=whole_number(0, MOST_GPUS_PER_TASK),
        default=1,
        help="GPUs per task; 0 on a CPU cluster (default: 1)",
    )
    slurm.add_argument(
        "--max_requeues",
        type=whole_number(0, MOST_REQUEUES),
        default=5,
        help="a task requeued more often than this gives up (default: 5)",
    )
    slurm.add_argument(
        "--array_parallelism",
        type=whole_number(1, MOST_ARRAY_PARALLELISM),
        default=256,
        help="at most this many tasks at once (default: 256)",
    )
    slurm.add_argument(
        "--sbatch",
        type=sbatch_option,
        nargs=1,
        action=KeywordArguments,
        default=[],
        metavar="KEY=VALUE",
        help="any other sbatch option, e.g. --sbatch qos=high (repeatable, each KEY once)",
    )
    status.add_argument(
        "--report", action="store_true", help="print the results table once every run is done"
    )
    return parser


def split_extra(argv: list[str]) -> tuple[list[str], list[str] | None]:
    """Arguments before `--` are this tool's; those after it go to every main.py command (None
    without a `--`: then the sweep's remembered ones do, experiments/launches.py)."""
    if "--" in argv:
        at = argv.index("--")
        return argv[:at], argv[at + 1 :]
    return argv, None


def sweep_runs(args, extra: list[str] | None):
    """The sweep, its runs and the launch they make: the seeds and overrides given, or else the
    ones it was launched with before (said in a note), or else its defaults."""
    from experiments.launches import LAUNCH, Launch, home, recall, runs_of

    if args.sweep not in SWEEPS:
        raise UserError(f"unknown sweep {args.sweep!r}; the sweeps: {', '.join(SWEEPS)}")
    sweep = with_plugins(SWEEPS[args.sweep], args.plugins)
    directory = home(sweep) if args.seeds is None or extra is None else None
    recorded = recall(sweep, directory) if directory is not None else None
    seeds, overrides, taken = args.seeds or sweep.default_seeds, extra or [], []
    if recorded is not None and args.seeds is None:
        seeds = recorded.seeds
        if tuple(seeds) != tuple(sweep.default_seeds):
            taken.append(f"--seeds {' '.join(map(str, seeds))}")
    if recorded is not None and extra is None:
        overrides = recorded.overrides
        if overrides:
            taken.append(f"-- {shlex.join(overrides)}")
    if taken:
        print(f"note: as launched before ({shown(directory / LAUNCH)}): {' '.join(taken)}")
    launch = Launch(tuple(seeds), tuple(overrides))
    return sweep, launch, runs_of(sweep, launch)


def with_plugins(sweep, modules: list[str] | None):
    """`sweep` with `--plugins MODULES` in each of its main.py commands: its runs import what
    this launcher imported. Not part of a run's identity: a run's directory stays the same."""
    if not modules:
        return sweep
    commands = sweep.commands
    return dataclasses.replace(
        sweep, commands=lambda seeds: [[*argv, "--plugins", *modules] for argv in commands(seeds)]
    )


def report_dirs(runs) -> list[Path]:
    return sorted({run.run_dir.parent for run in runs})


def print_report(runs, sweep) -> None:
    """The report of each directory the runs are in; beside the paper for the paper's sweeps."""
    from experiments import report

    for directory in report_dirs(runs):
        print()
        report.main([str(directory), *(["--paper"] if sweep.paper else [])])


def command_list(args, extra, stop) -> int:
    """Each sweep with its runs and epochs at its default seeds, and its GPU-hours where bench
    has timed an epoch of its networks on the GPU at hand (experiments/cost.py). What the sweeps
    cost is kept between calls (experiments/cost_cache.py); torch is imported only to ask for
    the GPU, where some epoch was timed at all."""
    from experiments import cost
    from experiments.cost_cache import sweep_costs

    times = cost.epoch_times()
    gpu = cost.gpu_at_hand() if times else None
    pace = times.get(gpu, {}) if gpu else {}
    width = max(len(name) for name in SWEEPS)
    hours_column = f"  {'GPU-hours':>9}" if pace else ""
    print(f"{'sweep':<{width}}  {'runs':>4}  {'epochs':>7}{hours_column}  what")
    for name, sweep_cost in sweep_costs(SWEEPS, args.plugins or ()):
        hours = cost.gpu_hours(sweep_cost, pace) if pace else None
        shown_hours = f"  {'—' if hours is None else f'{hours:,.1f}':>9}" if pace else ""
        print(
            f"{name:<{width}}  {sweep_cost.runs:>4}  {sweep_cost.epochs:>7,}{shown_hours}  "
            f"{SWEEPS[name].description}"
        )
    print(f"\n{gpu_hours_note(times, gpu, pace)}")
    return 0


def gpu_hours_note(times: dict, gpu: str | None, pace: dict) -> str:
    """The list's last line: where its GPU-hours come from, or how to have them."""
    timing = "`python -m bench --sections epoch` times an epoch of each network"
    if not times:  # torch not asked: the line holds with a GPU here and without
        return f"GPU-hours: no epoch timed yet; on a GPU, {timing}, and this list then shows them"
    if gpu is None:
        return f"GPU-hours: no GPU here; on one, {timing}, and this list then shows them"
    if not pace:
        return (
            f"GPU-hours: no epoch timed on the {gpu} yet; `python -m bench --sections epoch` "
            "times one of each network, and this list then shows them"
        )
    return (
        f"GPU-hours on the {gpu}: the epochs at the pace `python -m bench` timed "
        f"(training only, {EPOCH_FLAGS}; — where a network was not timed)"
    )


def check_writable(runs, slurm: bool) -> None:
    """Every directory the runs go to can be written: a file in the way is a UserError (2), a
    directory that refuses writes (read-only, immutable, full) a StorageError (4). With Slurm,
    its logs' folder there is a folder."""
    for directory in report_dirs(runs):
        with given_path(f"cannot write runs into {shown(directory)}", directory):
            directory.mkdir(parents=True, exist_ok=True)
            probe(directory)
        logs = directory / SLURM_LOGS
        if slurm and logs.exists() and not logs.is_dir():
            raise UserError(
                f"{shown(logs)} is {special(logs) or 'a file'}, not the folder of Slurm's logs; "
                "it is left as it is"
            )


def probe(directory: Path) -> None:
    """Write and delete a file of a fresh name in `directory` (a user's file is never touched);
    an OSError naming the directory where that fails."""
    try:
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".writable-"):
            pass
    except OSError as error:
        raise OSError(error.errno, error.strerror, str(directory)) from error


def check_executor(args):
    """Where the runs would execute, checked before anything is written (and by --dry-run,
    which shows what the same command would do): the local slots, or Slurm and the partition."""
    if args.executor == "slurm" and (args.gpus or args.jobs):
        raise UserError("--gpus and --jobs are for --executor local; Slurm takes --gpus_per_task")
    if args.executor == "local":
        from experiments.local import make_slots

        return make_slots(args.gpus, args.jobs)
    if not args.dry_run:  # a dry run shows the commands also where no Slurm answers
        from experiments.slurm import check_fits, check_slurm

        check_slurm()
        check_fits(slurm_options(args))
    return None


def command_run(args, extra, stop: StopSignals) -> int:
    from experiments.first_steps import check_first_steps
    from experiments.launches import LAUNCH, check_same_runs, remember
    from experiments.runs import REFUSED, TO_LAUNCH, State, status_of

    sweep, launch, runs = sweep_runs(args, extra)
    check_same_runs(sweep, launch, report_dirs(runs))
    slots = check_executor(args)
    check_first_steps(runs, args, launch.overrides)
    stop.check()
    if args.dry_run:
        for run in runs:
            print(shlex.join(["python", "main.py", *run.argv, "--run_dir", shown(run.run_dir)]))
        return 0
    check_writable(runs, slurm=args.executor == "slurm")
    stop.check()
    for directory in report_dirs(runs):  # before the plan, which a failed write would belie
        where = f"cannot remember the launch in {shown(directory / LAUNCH)}"
        with given_path(where, directory):
            remember(sweep, directory, launch)

    plan = [(run, status_of(run)) for run in runs]
    queued = queued_in_slurm([run for run, _ in plan]) if args.executor == "slurm" else {}
    launch_runs, refused, held = [], [], []
    for run, status in plan:
        action = status.action
        if run.run_dir in queued:
            action = f"skip (already in Slurm's queue as {queued[run.run_dir]})"
        elif status.state in TO_LAUNCH:
            launch_runs.append(run)
        elif status.state == State.RUNNING:
            held.append((run, status.detail))
        if status.state in REFUSED:
            refused.append((run, status))
        print(f"{action:<10} {shown(run.run_dir)}")
    count = len(launch_runs)
    print(f"{sweep.name}: {count} to run, {len(plan) - count} not, of {len(plan)}")
    stop.check()
    report_refused(refused)
    if args.executor == "slurm":
        code = submit_to_slurm(args, sweep, launch_runs) if launch_runs else 0
        return code or ending([], refused, [], held, sweep)
    if not launch_runs:
        print_report(runs, sweep)
        return ending([], refused, [], held, sweep)
    return run_here(sweep, runs, launch_runs, refused, held, slots, stop, args)


def report_refused(refused) -> None:
    """A line for each run directory left alone as a mistake to fix."""
    from experiments.runs import State

    for run, status in refused:
        if status.state == State.CONFLICT:
            problem = "holds a run with other options; it is left alone"
        else:
            problem = (
                f"is damaged: {status.detail}; it is left as it is: repair it, or delete it to "
                "run it afresh"
            )
        print(f"error: {shown(run.run_dir)} {problem}", file=sys.stderr)


def ending(unwritable, refused, failed, held, sweep) -> int:
    """The exit code, by the table in this module's docstring; a line for each held run."""
    for run, holder in held:
        print(
            f"held: {shown(run.run_dir)} by {holder}; left to it (python -m experiments status "
            f"{sweep.name} follows it)",
            file=sys.stderr,
        )
    for condition, code in (
        (unwritable, EXIT_STORAGE),
        (refused, EXIT_USER_ERROR),
        (failed, EXIT_SOME_FAILED),
        (held, EXIT_BUSY),
    ):
        if condition:
            return code
    return 0


def run_here(sweep, runs, launch_runs, refused, held, slots, stop, args) -> int:
    from experiments.local import run_locally
    from experiments.runs import State, status_of

    outcome = run_locally(launch_runs, slots, sweep.name, stop)
    if outcome.signum:
        report_stop(outcome, args)
        return 128 + outcome.signum
    # a run held by another process may have ended meanwhile: a completed one is done
    finished = {State.COMPLETED, State.DIVERGED}
    held = [item for item in [*held, *outcome.held] if status_of(item[0]).state not in finished]
    print_report(runs, sweep)
    for _, message in outcome.unwritable:
        print(f"error: {message}", file=sys.stderr)
    for run, how in outcome.failed:
        output = shown(run.run_dir / OUTPUT_LOG)
        print(f"failed: {shown(run.run_dir)} ({how}; its output: {output})", file=sys.stderr)
    return ending(outcome.unwritable, refused, outcome.failed, held, sweep)


def report_stop(outcome, args) -> None:
    """The one line of a stopped launch: what it stopped, what completed meanwhile, and the
    command that continues."""
    name = signal.Signals(outcome.signum).name
    parts = []
    if outcome.stopped:
        parts.append(f"{len(outcome.stopped)} run(s) stopped at a safe point")
    if outcome.not_started:
        parts.append(f"{len(outcome.not_started)} not started")
    what = " and ".join(parts) + ", every one resumable" if parts else "no run left unfinished"
    if outcome.completed:
        what += f"; {len(outcome.completed)} completed"
    if outcome.failed:
        what += f"; {len(outcome.failed)} failed"
    again = shlex.join(["python", "-m", "experiments", *args.given])
    print(f"stopped by {name}: {what}; continue with: {again}", file=sys.stderr)


def slurm_options(args):
    from experiments.slurm import SlurmOptions

    return SlurmOptions(
        partition=args.partition,
        time_minutes=args.time,
        account=args.account,
        constraint=args.constraint,
        cpus_per_task=args.cpus_per_task,
        mem=args.mem,
        gpus_per_task=args.gpus_per_task,
        max_requeues=args.max_requeues,
        array_parallelism=args.array_parallelism,
        extra=dict(pair.split("=", 1) for pair in args.sbatch),
    )


def queued_in_slurm(runs) -> dict[Path, str]:
    """The runs a task of Slurm's queue will run already (submitted by an earlier launch)."""
    from experiments.slurm import queue_states, read_marker

    submitted = {run.run_dir: read_marker(run.run_dir).get("job_id") for run in runs}
    submitted = {path: job for path, job in submitted.items() if job}
    if not submitted:
        return {}
    states = queue_states(list(submitted.values()))
    if states is None:
        raise UserError(
            "--executor slurm: earlier submissions of this sweep are recorded, but "
            "Slurm does not answer (squeue failed), so what is queued is unknown"
        )
    return {path: f"{job} ({states[job]})" for path, job in submitted.items() if job in states}


def submit_to_slurm(args, sweep, launch) -> int:
    from experiments.slurm import submit

    options = slurm_options(args)
    log_folder = launch[0].run_dir.parent / SLURM_LOGS
    ids = submit(launch, f"flipout-{sweep.name}", options, log_folder)
    array = ids[0].split("_")[0]
    print(
        f"submitted {len(ids)} run(s) as Slurm job array {array}; follow them with: "
        f"python -m experiments status {sweep.name}"
    )
    return 0


def command_status(args, extra, stop) -> int:
    from experiments.runs import State, status_of
    from experiments.slurm import queue_states, read_marker

    sweep, _, runs = sweep_runs(args, extra)
    statuses = [(run, status_of(run)) for run in runs]
    markers = {run.run_dir: read_marker(run.run_dir) for run in runs}
    job_ids = [marker["job_id"] for marker in markers.values() if marker.get("job_id")]
    states = queue_states(job_ids) if job_ids else {}
    counts: dict[str, int] = {}
    for run, status in statuses:
        state = status.state.value
        marker = markers[run.run_dir]
        slurm = ""
        if marker.get("job_id"):
            queue = "?" if states is None else states.get(marker["job_id"], "not queued")
            restarts = max((s.get("restart", 0) for s in marker.get("starts", [])), default=0)
            slurm = f"  slurm {marker['job_id']} {queue}"
            slurm += f", requeued {restarts}x" if restarts else ""
            slurm += ", gave up" if marker.get("gave_up") else ""
            if status.state == State.NEW and states and marker["job_id"] in states:
                state = "queued"
        accuracy = f"  {status.test_acc:.2f}%" if status.test_acc is not None else ""
        detail = {State.RUNNING: f"  held by {status.detail}", State.DAMAGED: f"  {status.detail}"}
        detail = detail.get(status.state, "")
        counts[state] = counts.get(state, 0) + 1
        print(
            f"{state:<10} {status.epochs_done:>4}/{status.epochs:<4} {shown(run.run_dir)}"
            f"{accuracy}{slurm}{detail}"
        )
    tally = ", ".join(f"{count} {state}" for state, count in sorted(counts.items()))
    print(f"{sweep.name}: {tally} (of {len(runs)})")
    if states is None:
        print(
            "note: Slurm does not answer; the states above are the run directories' own",
            file=sys.stderr,
        )
    if args.report:
        finished = {State.COMPLETED, State.DIVERGED}
        pending = [run for run, status in statuses if status.state not in finished]
        if pending:
            print(f"\n{len(pending)} run(s) not done yet: the table comes when every run is done")
        else:
            print_report(runs, sweep)
    return 0


COMMANDS = {"list": command_list, "run": command_run, "status": command_status}


@quiet_closed_pipes()
def main(argv: list[str] | None = None) -> int:
    # First, so that a stop at any moment (the imports of torch take seconds) ends in its line.
    stop = StopSignals(grace=STOP_GRACE_SECONDS, critical_grace=STOP_GRACE_SECONDS).install()
    given = sys.argv[1:] if argv is None else list(argv)
    own, extra = split_extra(given)
    try:
        args = build_parser().parse_args(own)
        args.given = given
        plugins.load(dict.fromkeys(args.plugins or (), "--plugins"))
        if extra and args.command not in ("run", "status"):
            raise UserError(
                f"arguments after -- go to main.py, with run or status; {args.command} takes "
                f"none: {shlex.join(extra)}"
            )
        stop.check()
        return COMMANDS[args.command](args, extra, stop)
    except Interrupted as stopped:
        print(
            f"stopped by {stopped} before any run was started or changed; the same command "
            f"starts again: {shlex.join(['python', '-m', 'experiments', *given])}",
            file=sys.stderr,
        )
        return stopped.exit_code
    except (UserError, StorageError) as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    finally:
        # a process about to exit ignores late signals; a caller in-process gets its own back
        stop.release(ignore_further=argv is None)


if __name__ == "__main__":
    sys.exit(main())
