"""Units of work in spawned processes that never outlive the sweep and never take it down.

- spawn, not fork: forking after torch has started its threads can deadlock;
- workers ignore SIGINT (Ctrl-C is the parent's: one line, not a traceback from every child) and
  exit as soon as their parent is gone, however it went (PR_SET_PDEATHSIG on Linux, plus a
  watchdog thread): a killed sweep leaves no process behind still writing into its run;
- a task that raises comes back as a `Failure` with its traceback; a worker that dies (killed,
  out of memory) fails the tasks it took down; the others go on;
- leaving the pool's `with` block early (Ctrl-C, SIGTERM turned into an exception by the CLI)
  terminates the workers before the exception goes on.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

_EVENTS: Any = None  # the parent's event queue, in a worker process


@dataclass(frozen=True)
class Failure:
    """A task that raised: error class, its one-line message, and the full traceback for a log."""

    error: str
    message: str
    traceback: str

    @classmethod
    def of(cls, exc: BaseException) -> Failure:
        lines = str(exc).strip().splitlines()
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        return cls(type(exc).__name__, lines[0] if lines else "(no message)", tb)

    def line(self) -> str:
        return f"{self.error}: {self.message}"


def send(**info: Any) -> None:
    """Report progress to the parent (from a worker; a no-op in the parent itself)."""
    if _EVENTS is not None:
        _EVENTS.put(info)


def _init(events: Any, parent: int, threads: int) -> None:
    global _EVENTS
    _EVENTS = events
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before the line above took effect
        os._exit(1)
    threading.Thread(target=_watch, args=(parent,), daemon=True).start()
    import torch

    torch.set_num_threads(threads)


def _watch(parent: int) -> None:
    while True:  # where PR_SET_PDEATHSIG does not exist
        time.sleep(1.0)
        if os.getppid() != parent:
            os._exit(1)


def _call(fn: Callable[[Any], Any], item: Any) -> Any:
    try:
        return fn(item)
    except Exception as e:  # any error of a task is that task's outcome, not the pool's
        return Failure.of(e)


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    """Children started here inherit SIGINT ignored, so Ctrl-C cannot hit them while they import."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


class WorkerPool:
    """`workers` spawned processes with `threads` torch threads each; progress goes to `on_event`."""

    def __init__(self, workers: int, threads: int, on_event: Callable[..., None]) -> None:
        self.workers, self.threads, self.on_event = workers, threads, on_event
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> WorkerPool:
        ctx = mp.get_context("spawn")
        self._events = ctx.Queue()
        self._pool = ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=_init,
                                         initargs=(self._events, os.getpid(), self.threads))  # fmt: skip
        self._relay = threading.Thread(target=self._forward, daemon=True)
        self._relay.start()
        return self

    def _forward(self) -> None:
        while (info := self._events.get()) is not None:
            self.on_event(**info)

    def run(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> Iterator[tuple[Any, Any]]:
        """(item, fn(item) or Failure) in completion order; `fn` must be picklable (module level)."""
        assert self._pool is not None, "use WorkerPool in a with block"
        with _sigint_ignored():
            futures = {self._pool.submit(_call, fn, item): item for item in items}
        for fut in as_completed(futures):
            try:
                result = fut.result()
            except BrokenProcessPool:
                result = Failure("WorkerDied", "a worker process died (killed, or out of memory)", "")
            yield futures[fut], result

    def __exit__(self, exc_type: type | None, *rest: object) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        if exc_type is not None:  # interrupted: stop the children now, do not wait for them
            procs = list((getattr(pool, "_processes", None) or {}).values())  # CPython's own table
            for p in procs:
                p.terminate()
            pool.shutdown(wait=False, cancel_futures=True)
            for p in procs:
                p.join(timeout=5)
        else:
            pool.shutdown(wait=True)
        self._events.put(None)
        self._relay.join(timeout=5)
