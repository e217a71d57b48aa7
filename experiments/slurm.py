"""Running a sweep's runs on a Slurm cluster through submitit: one job array, one task per run.

Each task runs main.py with the run's command and `--run_dir`, so a task that starts again
resumes its run from the last checkpoint. A task comes back in two ways:

- Slurm requeues it (preemption in REQUEUE mode, `scontrol requeue`): Slurm sends SIGTERM to the
  task's processes, main.py stops at a safe point (exit 143) keeping its checkpoint, and when the
  task runs again main.py resumes.
- Its time limit nears: Slurm sends USR2 `--signal_delay` seconds before it (submitit's
  `--signal`), submitit calls the task's `checkpoint`, which stops main.py the same way, and
  submitit requeues the task.

A task counts its starts (Slurm's SLURM_RESTART_COUNT) and gives up after `max_requeues`, so a
run that is preempted again and again stops costing allocation; `slurm.json` in the run's
directory records the job and each start, for `python -m experiments status`. A task whose run
another process holds (a launcher on a login node, a `main.py --resume`) leaves it alone.

Before anything is submitted, each task's request is set against the partition's nodes
(`check_fits`): a task that no node can hold would pend for ever (Slurm's reason
`PartitionConfig`), so such a launch is refused, naming what was asked and what the nodes have.
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from experiments.runs import Held, MainProcess, start_main
from utils.errors import EXIT_BUSY, UserError
from utils.io import write_json_atomic
from utils.rundir import OUTPUT_LOG, SLURM, Damaged, read_optional

ROOT = Path(__file__).resolve().parents[1]
STOP_WAIT_SECONDS = 60
SQUEUE_STATES_ACTIVE = {
    "PENDING",
    "RUNNING",
    "CONFIGURING",
    "COMPLETING",
    "REQUEUED",
    "REQUEUE_HOLD",
    "REQUEUE_FED",
    "RESIZING",
    "SUSPENDED",
}


@dataclass
class SlurmOptions:
    """What each task asks Slurm for; `extra` holds site-specific sbatch options."""

    partition: str | None = None
    time_minutes: int = 24 * 60
    account: str | None = None
    constraint: str | None = None
    cpus_per_task: int = 4
    mem: str | None = None
    gpus_per_task: int = 1
    array_parallelism: int = 256
    signal_delay_seconds: int = 120
    max_requeues: int = 5
    extra: dict[str, str] = field(default_factory=dict)


def check_slurm() -> None:
    """A UserError unless a Slurm controller answers here."""
    if shutil.which("sbatch") is None or shutil.which("sinfo") is None:
        raise UserError("--executor slurm: no Slurm here (sbatch and sinfo are not on PATH)")
    conf = os.environ.get("SLURM_CONF")
    if conf and not Path(conf).is_file():  # sinfo would retry for a minute before saying so
        raise UserError(f"--executor slurm: SLURM_CONF names {conf}, which does not exist")
    try:
        answer = subprocess.run(
            ["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, timeout=30
        )
    except subprocess.TimeoutExpired:
        raise UserError("--executor slurm: Slurm does not answer (sinfo timed out)") from None
    if answer.returncode != 0:
        reason = (answer.stderr.strip().splitlines() or ["no reason given"])[-1]
        raise UserError(f"--executor slurm: Slurm does not answer: {reason}")


def slurm_answer(*command: str) -> str:
    """A Slurm command's output; a UserError when it fails (check_slurm ran before)."""
    try:
        answer = subprocess.run(command, capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        raise UserError(
            f"--executor slurm: Slurm does not answer ({command[0]} timed out)"
        ) from None
    if answer.returncode != 0:
        reason = (answer.stderr.strip().splitlines() or ["no reason given"])[-1]
        raise UserError(f"--executor slurm: {' '.join(command)} failed: {reason}")
    return answer.stdout


@dataclass(frozen=True)
class Node:
    """What one node of a partition offers a task."""

    name: str
    cpus: int
    memory_mb: int
    gpus: int


def gpus_in(gres: str) -> int:
    """The GPUs of sinfo's GRES column: "gpu:2", "gpu:a100:4(S:0-1)", several, or "(null)"."""
    total = 0
    for item in re.sub(r"\(.*?\)", "", gres).split(","):  # "(S:0,1)": sockets, not GPUs
        parts = item.split(":")
        if parts[0] == "gpu" and len(parts) > 1 and parts[-1].isdigit():
            total += int(parts[-1])
    return total


def memory_mb(mem: str) -> int:
    """sbatch's --mem (a number with an optional K, M, G or T; M when none) in MB."""
    number, unit = re.fullmatch(r"([0-9]+)([KMGT]?)", mem.upper()).groups()
    return int(number) * {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024**2}[unit or "M"]


def partition_nodes(partition: str | None) -> tuple[str, list[Node]]:
    """The partition the tasks go to (the cluster's default when None) and its nodes."""
    listed = slurm_answer("sinfo", "-h", "-o", "%P").split()
    names = [name.rstrip("*") for name in listed]
    if partition is None:
        defaults = [name.rstrip("*") for name in listed if name.endswith("*")]
        if not defaults:
            raise UserError(
                "--executor slurm: the cluster has no default partition; give --partition"
            )
        partition = defaults[0]
    elif partition not in names:
        raise UserError(
            f"--partition {partition}: Slurm has no such partition; it has {', '.join(names)}"
        )
    nodes = []
    lines = slurm_answer("sinfo", "-h", "-N", "-p", partition, "-o", "%N|%c|%m|%G")
    for line in lines.splitlines():
        name, cpus, memory, gres = line.strip().split("|")
        memory = re.sub(r"[^0-9]", "", memory)  # "3900", or "3900+" over nodes that differ
        nodes.append(Node(name, int(re.sub(r"[^0-9]", "", cpus)), int(memory or 0), gpus_in(gres)))
    return partition, nodes


def partition_limits(partition: str) -> dict[str, str]:
    """`scontrol show partition`'s fields (State, MaxCPUsPerNode, ...)."""
    text = slurm_answer("scontrol", "show", "partition", partition, "-o")
    return dict(field.split("=", 1) for field in text.split() if "=" in field)


def check_fits(options: SlurmOptions) -> None:
    """A UserError unless some node of the partition can hold one task as `options` asks for
    it, and the partition takes jobs: otherwise every task would pend for ever."""
    partition, nodes = partition_nodes(options.partition)
    limits = partition_limits(partition)
    if limits.get("State", "UP") != "UP":
        raise UserError(
            f"--executor slurm: partition {partition} is {limits['State']}: it starts no job"
        )
    cap = limits.get("MaxCPUsPerNode", "UNLIMITED")
    cap = int(cap) if cap.isdigit() else None
    wanted_mb = memory_mb(options.mem) if options.mem else 0

    def fits(node: Node) -> bool:
        cpus = node.cpus if cap is None else min(node.cpus, cap)
        return (
            cpus >= options.cpus_per_task
            and node.gpus >= options.gpus_per_task
            and node.memory_mb >= wanted_mb
        )

    if any(fits(node) for node in nodes):
        return
    asked = f"--cpus_per_task {options.cpus_per_task} --gpus_per_task {options.gpus_per_task}"
    asked += f" --mem {options.mem}" if options.mem else ""
    if not nodes:
        raise UserError(f"--executor slurm: partition {partition} has no nodes")
    cpus = max(node.cpus if cap is None else min(node.cpus, cap) for node in nodes)
    has = (
        f"at most {cpus} CPUs, {max(node.gpus for node in nodes)} GPUs and "
        f"{max(node.memory_mb for node in nodes)} MB of memory"
    )
    raise UserError(
        f"{asked}: no node of partition {partition} can run such a task (its "
        f"{len(nodes)} node{'s have' if len(nodes) != 1 else ' has'} {has}); every task "
        "would pend"
    )


def read_marker(run_dir: Path) -> dict:
    """The run's slurm.json: its job and starts ({} where there is none, or none readable)."""
    try:
        return read_optional(run_dir / SLURM) or {}
    except (Damaged, OSError):
        return {}


def update_marker(run_dir: Path, **fields) -> None:
    marker = read_marker(run_dir)
    marker.update(fields)
    write_json_atomic(run_dir / SLURM, marker)


class SlurmTask:
    """One run as a Slurm array task (pickled by submitit, so it holds plain data only)."""

    def __init__(self, command: list[str], run_dir: str, max_requeues: int):
        self.command = list(command)
        self.run_dir = str(run_dir)
        self.max_requeues = max_requeues
        self._process: MainProcess | None = None

    def __getstate__(self) -> dict:
        return {key: value for key, value in self.__dict__.items() if key != "_process"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _process=None)

    def restarts(self) -> int:
        return int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)

    def __call__(self) -> int:
        run_dir = Path(self.run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        marker = read_marker(run_dir)
        starts = [
            *marker.get("starts", []),
            {
                "job_id": os.environ.get("SLURM_JOB_ID"),
                "restart": self.restarts(),
                "host": socket.gethostname(),
                "time": time.strftime("%Y-%m-%d %H:%M:%S"),
            },
        ]
        update_marker(run_dir, starts=starts)
        if self.restarts() > self.max_requeues:
            with open(run_dir / OUTPUT_LOG, "a") as log:
                print(
                    f"requeued {self.restarts()} times, more than --max_requeues "
                    f"{self.max_requeues}: giving up on this run",
                    file=log,
                )
            update_marker(run_dir, gave_up=True)
            return 1
        environment = dict(os.environ)
        # as many threads as the task has CPUs, not as the node has
        cpus = os.environ.get("SLURM_CPUS_PER_TASK")
        if cpus:
            environment["OMP_NUM_THREADS"] = cpus
        try:
            self._process = start_main(self.command, run_dir, environment)
        except Held as held:  # nothing written into the run, whose holder goes on with it
            update_marker(run_dir, last_exit=EXIT_BUSY, held_by=str(held))
            return EXIT_BUSY
        code = self._process.finish()
        update_marker(run_dir, last_exit=code)
        return code

    def checkpoint(self, *args, **kwargs):
        """submitit's hook, called when the time limit nears: stop main.py at a safe point (its
        checkpoint stays) and have the task requeued, unless it was requeued too often."""
        import submitit

        process = self._process.process if self._process is not None else None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=STOP_WAIT_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
        if self.restarts() >= self.max_requeues:
            return None  # submitit then ends the task instead of requeueing it
        return submitit.helpers.DelayedSubmission(
            SlurmTask(self.command, self.run_dir, self.max_requeues)
        )


def submit(runs, job_name: str, options: SlurmOptions, log_folder: Path) -> list[str]:
    """Submit `runs` as one job array; returns each run's Slurm id (ARRAYJOB_TASK)."""
    import submitit

    check_slurm()
    executor = submitit.SlurmExecutor(
        folder=str(log_folder / "%j"), max_num_timeout=options.max_requeues
    )
    parameters = {
        "job_name": job_name,
        "time": options.time_minutes,
        "cpus_per_task": options.cpus_per_task,
        "array_parallelism": options.array_parallelism,
        "signal_delay_s": options.signal_delay_seconds,
        "stderr_to_stdout": True,
        # the tasks import this repository (the pickled task's class) from any directory
        "setup": [f"export PYTHONPATH={ROOT}${{PYTHONPATH:+:$PYTHONPATH}}"],
        "additional_parameters": {"requeue": True, **options.extra},
    }
    optional = {
        "partition": options.partition,
        "account": options.account,
        "constraint": options.constraint,
        "mem": options.mem,
        "gpus_per_task": options.gpus_per_task or None,
    }
    parameters.update({key: value for key, value in optional.items() if value is not None})
    executor.update_parameters(**parameters)
    with executor.batch():
        jobs = [
            executor.submit(SlurmTask(run.command, str(run.run_dir), options.max_requeues))
            for run in runs
        ]
    ids = [job.job_id for job in jobs]
    for run, job_id in zip(runs, ids, strict=True):
        run.run_dir.mkdir(parents=True, exist_ok=True)
        update_marker(
            run.run_dir,
            job_id=job_id,
            submitted=time.strftime("%Y-%m-%d %H:%M:%S"),
            starts=read_marker(run.run_dir).get("starts", []),
        )
    return ids


def queue_states(job_ids: list[str]) -> dict[str, str] | None:
    """Slurm's state of each ARRAYJOB_TASK id still in its queue; None when Slurm is out of
    reach (no state is then known, which is not the same as none queued)."""
    arrays = sorted({job_id.split("_")[0] for job_id in job_ids if job_id})
    if not arrays or shutil.which("squeue") is None:
        return None if shutil.which("squeue") is None else {}
    try:
        answer = subprocess.run(
            ["squeue", "-h", "-r", "-o", "%i|%T", "-j", ",".join(arrays)],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except subprocess.TimeoutExpired:
        return None
    if answer.returncode != 0:
        # squeue fails for ids it no longer knows: then nothing of them is queued
        return {} if "Invalid job id" in answer.stderr else None
    states = {}
    for line in answer.stdout.splitlines():
        job_id, _, state = line.strip().partition("|")
        states[job_id] = state
    return states
