"""Jobs on this machine end with the sweep that started them, however it ends.

submitit's LocalExecutor starts each job as a controller process (the job id is its pid) that
runs the unit in a child task, and means both to outlive the submitting Python session. A
tlbench sweep must not leave units training into its run after it is gone, so:

- a SIGTERM or Ctrl-C of the sweep kills each live job's process tree (`kill_job_tree`), as the
  inline path's WorkerPool terminates its workers;
- a SIGKILL of the sweep leaves no cleanup to run, so each job watches its submitter
  (`watch_owner`, a daemon thread started in the job) and exits within a second of it being gone;
- jobs start with SIGINT ignored (workers._sigint_ignored), so a Ctrl-C at the terminal reaches
  the sweep alone: one line, not a traceback from each controller and task.

SLURM jobs, by design, do not end with their submitter: they run on, and `--resume` waits for them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from pathlib import Path

Owner = tuple[
    int, str
]  # (pid, start time in clock ticks since boot): a pid reused is another process


def _start_time(pid: int) -> str | None:
    """Field 22 of /proc/PID/stat, or None where the process is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # fields 3.. (the command name may hold spaces)
    return None if fields[0] == "Z" else fields[19]


def this_process() -> Owner | None:
    """This process as an owner to watch, or None where /proc does not tell (not Linux)."""
    started = _start_time(os.getpid())
    return (os.getpid(), started) if started is not None else None


def owner_alive(owner: Owner) -> bool:
    return _start_time(owner[0]) == owner[1]


def watch_owner(owner: Owner, every_s: float = 0.5) -> threading.Thread:
    """Exit this process (no cleanup: its unit is failed or redone by --resume) once `owner` is
    gone. A daemon thread: torch releases the GIL in its kernels, so it runs during training."""

    def watch() -> None:
        while owner_alive(owner):
            time.sleep(every_s)
        os._exit(1)

    thread = threading.Thread(target=watch, name="tlbench-owner-watch", daemon=True)
    thread.start()
    return thread


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError, ValueError):
            out += [int(p) for p in task.read_text().split()]
    return out


def kill_job_tree(pid: int) -> None:
    """SIGKILL a local job: its controller (pid) and every process below it, children first (a
    controller that sees its task die would otherwise still be there to log it)."""
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo += _children(p)
    for p in reversed(tree):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(p, signal.SIGKILL)
