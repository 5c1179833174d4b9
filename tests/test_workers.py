"""Worker processes: a raising task is its own failure, and no worker outlives its parent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tlbench.study.workers import Failure, WorkerPool


def square_or_fail(x: int) -> int:
    if x == 3:
        raise ValueError("three is not welcome\nsecond line")
    return x * x


def test_a_raising_task_fails_alone() -> None:
    events: list[dict] = []
    with WorkerPool(2, 1, lambda **info: events.append(info)) as pool:
        out = dict(pool.run(square_or_fail, [1, 2, 3, 4]))
    assert out[1] == 1 and out[2] == 4 and out[4] == 16
    failure = out[3]
    assert isinstance(failure, Failure) and failure.error == "ValueError"
    assert failure.line() == "ValueError: three is not welcome"  # one line for the console
    assert "square_or_fail" in failure.traceback  # the whole story for the log file


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie is dead too
        return f.read().split()[2] != "Z"


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_workers_die_with_their_parent(tmp_path: Path, sig: signal.Signals) -> None:
    """A parent killed mid-task (even by SIGKILL, no cleanup) leaves no worker running."""
    script = tmp_path / "parent.py"
    script.write_text(textwrap.dedent(f"""
        import os, time
        from tlbench.study.workers import WorkerPool

        def sleep_forever(x):
            open(r"{tmp_path}/worker-%d" % os.getpid(), "w").close()
            time.sleep(600)

        if __name__ == "__main__":
            with WorkerPool(2, 1, lambda **i: None) as pool:
                list(pool.run(sleep_forever, [1, 2]))
    """))
    parent = subprocess.Popen([sys.executable, str(script)])
    deadline = time.time() + 60
    while len(list(tmp_path.glob("worker-*"))) < 2 and time.time() < deadline:
        time.sleep(0.1)
    pids = [int(p.name.split("-")[1]) for p in tmp_path.glob("worker-*")]
    assert len(pids) == 2, "the workers never started"
    os.kill(parent.pid, sig)
    parent.wait(timeout=30)
    deadline = time.time() + 10
    while any(_alive(p) for p in pids) and time.time() < deadline:
        time.sleep(0.1)
    assert not any(_alive(p) for p in pids)
