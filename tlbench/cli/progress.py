"""What a running sweep shows: one progress bar over variants x stages, one per variant in training,
and the one line (exit 130) when it is interrupted."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer

from tlbench.cli.app import err_console


@contextlib.contextmanager
def interruptible(bar: SweepProgress) -> Iterator[None]:
    """Ctrl-C or SIGTERM: stop the workers, keep what is written, one line, exit 130."""
    import signal

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    except KeyboardInterrupt:
        bar.stop()
        where = f" --resume {bar.run_dir}" if bar.run_dir else ""
        err_console.print(f"interrupted: finished units are kept; continue with: tlbench sweep{where}",
                          highlight=False, soft_wrap=True)  # fmt: skip
        raise typer.Exit(code=130) from None
    finally:
        signal.signal(signal.SIGTERM, old)


class SweepProgress:
    """Rich progress for a sweep: one bar over variants x stages, one per variant in training."""

    def __init__(self) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TextColumn("{task.fields[info]}"),
                                 console=err_console, transient=False)  # fmt: skip
        self.main: Any = None
        self.training: dict[str, Any] = {}
        self.run_dir: Path | None = None

    def __enter__(self) -> SweepProgress:
        return self  # the display starts with the plan: an early one-line error prints alone

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def stop(self) -> None:
        if self.main is not None:
            self.progress.stop()

    def event(self, event: str, **info: Any) -> None:
        p = self.progress
        if event == "plan":
            self.run_dir = info["run_dir"]
            p.start()
            self.main = p.add_task("variants × stages", total=info["total"], info=str(info["run_dir"]))
        elif event == "unit" and self.main is not None:
            p.advance(self.main, info.get("advance", 1))
            if info.get("stage") == "quality" and info.get("variant") in self.training:
                p.remove_task(self.training.pop(info["variant"]))
        elif event == "status" and self.main is not None:
            p.update(self.main, info=info["text"])
        elif event in ("skip", "fail") and self.main is not None:
            what = "skipped" if event == "skip" else "FAILED"
            p.update(self.main, info=f"{what} {info.get('stage')} {info.get('variant', '')}")
        elif event == "train":
            name = info["variant"]
            if name not in self.training:
                self.training[name] = p.add_task(f"  train {name}", total=info["steps"], info="")
            p.update(self.training[name], completed=info["step"], info=f"loss {info['loss']:.3f}")
