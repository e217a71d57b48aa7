"""python -m experiments: replicate a table, on this machine or on a Slurm cluster.

    python -m experiments list
    python -m experiments run vgg19_cifar10 --dry-run          # the exact main.py commands
    python -m experiments run vgg19_cifar10 --gpus 8           # one run per GPU, here
    python -m experiments run digits_demo --jobs 2             # on the CPU, cores shared out
    python -m experiments run vgg19_cifar10 --executor slurm --partition gpu --time 1440
    python -m experiments status vgg19_cifar10 --report
    python -m experiments run vgg19_cifar10 -- -d synthetic -e 3   # extra arguments for every run

Launching a sweep again skips its completed runs, resumes its stopped ones and reruns its failed
ones, and says which it does for each (experiments/runs.py). Exit codes: 0 when every run of the
sweep completed (or was submitted, with Slurm), 1 when some failed or diverged, 2 for a mistake in
the command, 130 / 143 when stopped (every run stays resumable).
"""

import argparse
import shlex
import signal
import sys
from pathlib import Path

from experiments.sweeps import SWEEPS
from utils.errors import OneLineParser, UserError

EXIT_SOME_FAILED = 1


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="python -m experiments",
        description="Run the paper's experiments (sweeps of main.py runs) and follow them.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("list", help="the sweeps and what each runs")
    run = commands.add_parser("run", help="run (or resume) a sweep's runs")
    status = commands.add_parser("status", help="where a sweep's runs stand")
    for sub in (run, status):
        sub.add_argument("sweep", metavar="SWEEP", help="a name from `list`")
        sub.add_argument(
            "--seeds",
            type=int,
            nargs="+",
            metavar="SEED",
            help="the seeds to run (default: the sweep's, usually 0 1 2)",
        )
    run.add_argument("--dry-run", action="store_true", help="print the main.py commands, run none")
    run.add_argument(
        "--executor",
        choices=["local", "slurm"],
        default="local",
        help="where the runs execute (default: local)",
    )
    local = run.add_argument_group("local executor")
    local.add_argument(
        "--gpus",
        type=int,
        metavar="N",
        help="run up to N runs at once, each on its own visible GPU",
    )
    local.add_argument(
        "--jobs",
        type=int,
        metavar="N",
        help="without GPUs: run N at once, the CPU cores shared out (default: 1)",
    )
    slurm = run.add_argument_group("slurm executor (one array task per run)")
    slurm.add_argument("--partition", help="Slurm partition (default: the cluster's default)")
    slurm.add_argument(
        "--time",
        type=int,
        default=24 * 60,
        metavar="MINUTES",
        help="time limit of each task; a run that needs longer is requeued near "
        "it and resumes (default: 1440)",
    )
    slurm.add_argument("--account", help="Slurm account to charge")
    slurm.add_argument("--constraint", help="Slurm node constraint (e.g. a GPU type)")
    slurm.add_argument("--cpus_per_task", type=int, default=4, help="(default: 4)")
    slurm.add_argument("--mem", help="memory per task, as sbatch takes it (e.g. 32G)")
    slurm.add_argument(
        "--gpus_per_task",
        type=int,
        default=1,
        help="GPUs per task; 0 on a CPU cluster (default: 1)",
    )
    slurm.add_argument(
        "--max_requeues",
        type=int,
        default=5,
        help="a task requeued more often than this gives up (default: 5)",
    )
    slurm.add_argument(
        "--array_parallelism",
        type=int,
        default=256,
        help="at most this many tasks at once (default: 256)",
    )
    slurm.add_argument(
        "--sbatch",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other sbatch option, e.g. --sbatch qos=high (repeatable)",
    )
    status.add_argument(
        "--report", action="store_true", help="print the results table once every run is done"
    )
    return parser


def split_extra(argv: list[str]) -> tuple[list[str], list[str]]:
    """Arguments before `--` are this tool's; those after it go to every main.py command."""
    if "--" in argv:
        at = argv.index("--")
        return argv[:at], argv[at + 1 :]
    return argv, []


def sweep_runs(args, extra: list[str]):
    from experiments.runs import resolve_all  # imports main.py's parser, and with it torch

    if args.sweep not in SWEEPS:
        raise UserError(f"unknown sweep {args.sweep!r}; the sweeps: {', '.join(SWEEPS)}")
    sweep = SWEEPS[args.sweep]
    seeds = args.seeds if args.seeds is not None else sweep.default_seeds
    commands = [[*command, *extra] for command in sweep.commands(seeds)]
    return sweep, resolve_all(commands)


def shown(path: Path) -> str:
    """A path relative to the working directory where it is below it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def report_dirs(runs) -> list[Path]:
    return sorted({run.run_dir.parent for run in runs})


def print_report(runs) -> None:
    from utils import report

    for directory in report_dirs(runs):
        print()
        report.main([str(directory)])


def command_list() -> int:
    width = max(len(name) for name in SWEEPS)
    for name, sweep in SWEEPS.items():
        count = len(sweep.commands(sweep.default_seeds))
        print(f"{name:<{width}}  {count:>3} runs  {sweep.description}")
    return 0


def check_writable(runs) -> None:
    for directory in report_dirs(runs):
        try:
            directory.mkdir(parents=True, exist_ok=True)
            probe = directory / ".writable"
            probe.touch()
            probe.unlink()
        except OSError as error:
            raise UserError(f"cannot write runs into {directory}: {error.strerror}") from None


def command_run(args, extra: list[str]) -> int:
    from experiments.runs import ACTION, TO_LAUNCH, State, status_of

    if args.gpus is not None and args.gpus < 1:
        raise UserError(f"--gpus must be at least 1, got {args.gpus}")
    if args.jobs is not None and args.jobs < 1:
        raise UserError(f"--jobs must be at least 1, got {args.jobs}")
    if args.executor == "slurm" and (args.gpus or args.jobs):
        raise UserError("--gpus and --jobs are for --executor local; Slurm takes --gpus_per_task")
    sweep, runs = sweep_runs(args, extra)
    slots = None
    if not args.dry_run:  # where the runs would execute, checked before anything is written
        if args.executor == "slurm":
            from experiments.slurm import check_slurm

            check_slurm()
        else:
            from experiments.local import make_slots

            slots = make_slots(args.gpus, args.jobs)
    if args.dry_run:
        for run in runs:
            print(shlex.join(["python", "main.py", *run.argv, "--run_dir", shown(run.run_dir)]))
        return 0
    check_writable(runs)

    plan = [(run, status_of(run)) for run in runs]
    queued = {}
    if args.executor == "slurm":
        queued = queued_in_slurm([run for run, _ in plan])
    launch, conflicts = [], []
    for run, status in plan:
        action = ACTION[status.state]
        if run.run_dir in queued:
            action = f"skip (already in Slurm's queue as {queued[run.run_dir]})"
        elif status.state in TO_LAUNCH:
            launch.append(run)
        if status.state == State.CONFLICT:
            conflicts.append(run)
        print(f"{action:<10} {shown(run.run_dir)}")
    print(f"{sweep.name}: {len(launch)} to run, {len(plan) - len(launch)} not, of {len(plan)}")
    for run in conflicts:
        print(
            f"error: {shown(run.run_dir)} holds a run with other options; it is left alone",
            file=sys.stderr,
        )
    if not launch:
        if args.executor == "local":
            print_report(runs)
        return 2 if conflicts else 0
    if args.executor == "slurm":
        return submit_to_slurm(args, sweep, launch)
    return run_here(sweep, runs, launch, conflicts, slots)


def run_here(sweep, runs, launch, conflicts, slots) -> int:
    from experiments.local import run_locally

    completed, failed, signum = run_locally(launch, slots, sweep.name)
    if signum:
        left = len(launch) - len(completed) - len(failed)
        print(
            f"stopped by {signal.Signals(signum).name}: {left} run(s) not finished, every one "
            f"resumable; the same command continues them",
            file=sys.stderr,
        )
        return 128 + signum
    print_report(runs)
    for run in failed:
        print(
            f"failed: {shown(run.run_dir)} (its output: {shown(run.run_dir / 'output.log')})",
            file=sys.stderr,
        )
    if conflicts:
        return 2
    return EXIT_SOME_FAILED if failed else 0


def slurm_options(args):
    from experiments.slurm import SlurmOptions

    extra = {}
    for item in args.sbatch:
        key, equals, value = item.partition("=")
        if not key or not equals:
            raise UserError(f"--sbatch {item!r}: expected KEY=VALUE, such as qos=high")
        extra[key.lstrip("-")] = value
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
        extra=extra,
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
    log_folder = launch[0].run_dir.parent / ".slurm"
    ids = submit(launch, f"flipout-{sweep.name}", options, log_folder)
    array = ids[0].split("_")[0]
    print(
        f"submitted {len(ids)} run(s) as Slurm job array {array}; follow them with: "
        f"python -m experiments status {sweep.name}"
    )
    return 0


def command_status(args, extra: list[str]) -> int:
    from experiments.runs import State, status_of
    from experiments.slurm import queue_states, read_marker

    sweep, runs = sweep_runs(args, extra)
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
        counts[state] = counts.get(state, 0) + 1
        print(
            f"{state:<10} {status.epochs_done:>4}/{status.epochs:<4} {shown(run.run_dir)}"
            f"{accuracy}{slurm}"
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
            print_report(runs)
    return 0


def main(argv: list[str] | None = None) -> int:
    own, extra = split_extra(sys.argv[1:] if argv is None else list(argv))
    try:
        args = build_parser().parse_args(own)
        if args.command == "list":
            return command_list()
        if extra and args.command not in ("run", "status"):
            raise UserError("arguments after -- go to main.py, with run or status")
        if args.command == "run":
            return command_run(args, extra)
        return command_status(args, extra)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    except BrokenPipeError:  # the reader went away (`| head`): nothing left to say
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
