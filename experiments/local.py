"""Running a sweep's runs on this machine: at most one run per GPU, or the CPU cores shared out.

`--gpus N` runs up to N runs at once, each with its own GPU (CUDA_VISIBLE_DEVICES, in turn over
the visible ones) and its share of the CPU cores; `--jobs N` runs N at once with the cores divided
between them (each run's threads are pinned to its cores, and torch's thread count and main.py's
default DataLoader workers follow). Each run writes its output to `output.log` in its directory.

One live view (rich; plain lines when the output is not a terminal) shows the runs queued,
running, done and failed, each running run's epoch, and an estimate of the time left. Ctrl-C or
SIGTERM stops the launch: every running run is stopped in turn (they stop at a safe point and keep
their checkpoints), and launching the same sweep again resumes them. Each run is tied to the
launcher (experiments/tether.py): a launcher killed outright (SIGKILL) takes its runs down with it,
by SIGTERM, instead of leaving them to train unsupervised.

A run that another process holds when its turn comes (another launcher of the sweep, a
`main.py --resume` by hand) is left to it: not started, not written into, and not a failure.
"""

import os
import signal
import subprocess
import time
from dataclasses import dataclass, field

from rich.console import Console
from rich.live import Live
from rich.table import Table

from experiments.runs import (
    Finished,
    Held,
    MainProcess,
    Run,
    epochs_done,
    held_by,
    start_main,
    summary_of,
)
from experiments.values import finite_number, is_percentage
from utils.errors import RunBusy, StorageError, UserError
from utils.io import read_bytes
from utils.launch import how_it_ended
from utils.rundir import OUTPUT_LOG
from utils.stop import StopSignals

POLL_SECONDS = 0.5
# main.py stops within its own 20 s grace; a launcher waits this long before giving up on a run
STOP_WAIT_SECONDS = 60


@dataclass
class Slot:
    """Where one run at a time executes: a GPU (or none) and the CPU cores it may use."""

    gpu: str | None
    cores: list[int]

    def describe(self) -> str:
        where = f"GPU {self.gpu}" if self.gpu is not None else "CPU"
        return f"{where}, {len(self.cores)} core{'s' if len(self.cores) != 1 else ''}"


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES names them (or as indices)."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [gpu.strip() for gpu in listed.split(",") if gpu.strip()]
    import torch  # only here: a CPU launch need not initialise CUDA

    return [str(index) for index in range(torch.cuda.device_count())]


def make_slots(gpus: int | None, jobs: int | None) -> list[Slot]:
    cores = sorted(os.sched_getaffinity(0))
    if gpus:
        available = visible_gpus()
        if gpus > len(available):
            listed = f" ({', '.join(available)})" if available else ""
            raise UserError(f"--gpus {gpus}: {len(available)} visible here{listed}")
        count, names = gpus, available[:gpus]
    else:
        count = jobs or 1
    if count > len(cores):
        raise UserError(f"{count} runs at once need at least as many cores; {len(cores)} here")
    if not gpus:
        names = [None] * count
    share = len(cores) // count
    return [Slot(names[i], cores[i * share : (i + 1) * share]) for i in range(count)]


@dataclass
class Running:
    run: Run
    slot: Slot
    main: MainProcess
    started: float = field(default_factory=time.monotonic)
    first_epochs: int = 0  # epochs it had when launched (a resumed run)

    def epochs_done(self) -> int:
        return epochs_done(self.run.run_dir)

    def seconds_left(self) -> float | None:
        """From the pace of the epochs this launch ran; None before its first one."""
        done = self.epochs_done() - self.first_epochs
        if done <= 0:
            return None
        per_epoch = (time.monotonic() - self.started) / done
        return per_epoch * (self.run.options["epochs"] - self.epochs_done())


def start(run: Run, slot: Slot) -> Running:
    environment = dict(os.environ, OMP_NUM_THREADS=str(len(slot.cores)))
    if slot.gpu is not None:
        environment["CUDA_VISIBLE_DEVICES"] = slot.gpu
    first_epochs = epochs_done(run.run_dir)
    main = start_main(run.command, run.run_dir, environment, slot.cores, run.options["epochs"])
    return Running(run, slot, main, first_epochs=first_epochs)


def summary_line(run: Run) -> str:
    summary = summary_of(run.run_dir)
    if summary is None:
        return ""
    accuracy, sparsity = summary.get("final_test_acc"), summary.get("final_sparsity")
    if is_percentage(accuracy) and finite_number(sparsity) and 0 <= sparsity <= 1:
        return f"{accuracy:.2f}% at {sparsity:.2%}"
    return ""


def last_line(run: Run) -> str:
    """The run's own last line (its error, for a failed run)."""
    try:
        text = read_bytes(run.run_dir / OUTPUT_LOG).decode(errors="replace")
    except OSError:
        return ""
    lines = text.strip().splitlines()
    return lines[-1] if lines else ""


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    minutes = round(seconds / 60)
    if minutes < 1:
        return "under a minute"
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


class View:
    """The launch's progress: a live table on a terminal, a line per event otherwise."""

    def __init__(self, title: str, total: int, slots: list[Slot]):
        self.title, self.total, self.slots = title, total, slots
        self.console = Console(stderr=False)
        self.live = Live(console=self.console, refresh_per_second=2, transient=False)
        self.interactive = self.console.is_terminal
        self.durations: list[float] = []  # of runs that ran from start to end here

    def __enter__(self):
        if self.interactive:
            self.live.__enter__()
        return self

    def __exit__(self, *exc):
        if self.interactive:
            self.live.__exit__(*exc)

    def event(self, text: str) -> None:
        if self.interactive:
            self.live.console.print(text)
        else:
            print(text, flush=True)

    def eta(self, running: list[Running], queued: int) -> float | None:
        """Seconds until the last run ends: what the running runs have left at their pace, plus the
        queued ones at the length of a whole run, spread over the slots. None until known."""
        left = [item.seconds_left() for item in running]
        whole = sum(self.durations) / len(self.durations) if self.durations else None
        if whole is None:  # no run went start to end yet: project the running ones' pace
            projected = [
                time.monotonic() - item.started + seconds
                for item, seconds in zip(running, left, strict=True)
                if seconds is not None and item.first_epochs == 0
            ]
            whole = max(projected) if projected else None
        if whole is None and (queued or None in left):
            return None
        work = sum(whole if seconds is None else seconds for seconds in left)
        return (work + queued * (whole or 0)) / max(1, len(self.slots))

    def update(self, running: list[Running], queued: int, done: int, failed: int) -> None:
        if not self.interactive:
            return
        table = Table(title=None, box=None, pad_edge=False, expand=False)
        for column in ("run", "on", "epoch", "time"):
            table.add_column(column)
        for item in running:
            epochs = item.run.options["epochs"]
            elapsed = time.monotonic() - item.started
            table.add_row(
                item.run.name,
                item.slot.describe(),
                f"{item.epochs_done()}/{epochs}",
                f"{elapsed:.0f} s",
            )
        header = (
            f"{self.title}: {len(running)} running, {queued} queued, {done} done, {failed} failed"
            f" of {self.total}; time left: {duration(self.eta(running, queued))}"
        )
        grid = Table.grid()
        grid.add_row(header)
        grid.add_row(table)
        self.live.update(grid)


@dataclass
class Outcome:
    """How a local launch went, run by run."""

    completed: list[Run] = field(default_factory=list)
    failed: list[tuple[Run, str]] = field(default_factory=list)  # and how it ended
    held: list[tuple[Run, str]] = field(default_factory=list)  # and by whom
    unwritable: list[tuple[Run, str]] = field(default_factory=list)  # and the failed write
    stopped: list[Run] = field(default_factory=list)  # by the launcher's stop; resumable
    not_started: list[Run] = field(default_factory=list)  # queued when the stop came
    signum: int = 0  # the stop signal, or 0


def run_locally(runs: list[Run], slots: list[Slot], title: str, stop: StopSignals) -> Outcome:
    """Run `runs`, at most one per slot at a time. A stop signal (recorded by `stop`) launches
    no more, stops every running run and waits for each, so that the outcome says how each one
    really ended: a run may complete while it is being stopped."""
    queue, running, free = list(runs), [], list(slots)
    outcome = Outcome()
    with View(title, len(runs), slots) as view:
        while (queue or running) and stop.requested is None:
            while queue and free and stop.requested is None:
                run, slot = queue.pop(0), free.pop(0)
                try:
                    running.append(start(run, slot))
                except Finished:  # another launcher ran it after this one's plan
                    free.append(slot)
                    outcome.completed.append(run)
                    view.event(f"done     {run.name}: by another process meanwhile")
                    continue
                except Held as held:
                    free.append(slot)
                    outcome.held.append((run, str(held)))
                    view.event(f"held     {run.name}: by {held}; left to it")
                    continue
                except (StorageError, UserError) as failure:
                    free.append(slot)
                    outcome.unwritable.append((run, str(failure)))
                    view.event(f"failed   {run.name}: {failure}")
                    continue
                view.event(f"started  {run.name} ({slot.describe()})")
            for item in list(running):
                if item.main.process.poll() is None:
                    continue
                running.remove(item)
                free.append(item.slot)
                record(item, item.main.finish(), outcome, view)
            view.update(running, len(queue), len(outcome.completed), len(outcome.failed))
            time.sleep(POLL_SECONDS)
        if stop.requested is not None:
            outcome.signum = stop.requested
            outcome.not_started = queue
            name = signal.Signals(outcome.signum).name
            view.event(f"stopping: {len(running)} running run(s) get {name}")
            stop_all(running, outcome.signum)
            for item in running:
                record(item, item.main.finish(), outcome, view)
    return outcome


def record(item: Running, code: int, outcome: Outcome, view: View) -> None:
    """Count how the run's main.py ended (its exit code, utils/errors.py)."""
    run = item.run
    if code == 0:
        outcome.completed.append(run)
        if item.first_epochs == 0:
            view.durations.append(time.monotonic() - item.started)
        view.event(f"done     {run.name}: {summary_line(run)}")
    elif code == RunBusy.exit_code:  # another process took it after the claim
        holder = held_by(run.run_dir) or "another process"
        outcome.held.append((run, holder))
        view.event(f"held     {run.name}: by {holder}; left to it")
    elif outcome.signum and (code < 0 or code > 128):  # ours: it stopped as it was asked to
        outcome.stopped.append(run)
        view.event(f"stopped  {run.name} ({how_it_ended(code)}); resumable")
    else:
        outcome.failed.append((run, how_it_ended(code)))
        view.event(f"failed   {run.name} ({how_it_ended(code)}): {last_line(run)}")


def stop_all(running: list[Running], signum: int) -> None:
    """Pass the stop on to every run (a terminal's Ctrl-C reached them already; a `kill` of the
    launcher did not) and wait for them to stop at a safe point."""
    for item in running:
        if item.main.process.poll() is None:
            item.main.process.send_signal(signum)
    deadline = time.monotonic() + STOP_WAIT_SECONDS
    for item in running:
        try:
            item.main.process.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            item.main.process.kill()
            item.main.process.wait()
