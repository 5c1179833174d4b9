"""The app and what its commands share: input checked before a command runs, one-line errors,
option parsing, output formats. Option defaults come from config.py (Q, S, G, M)."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from tlbench.config import GridConfig, ModelConfig, QualityConfig, SpeedConfig
from tlbench.errors import ConfigError, TLBenchError

Q, S, G, M = QualityConfig(), SpeedConfig(), GridConfig(), ModelConfig()  # option defaults: config.py is where they live
METHOD_HELP = ("Token reduction method: tokenlearner, patchmerger, pool, random, topk, evit, "
               "tome (merge N patch tokens to S in block k) or tome_r (merge r per block from k "
               "on; needs --param r=R; S is then derived) (tlbench/reducers/); S is the number "
               "of tokens it keeps.")
PARAM_HELP = "A method parameter, NAME=INTEGER (repeatable; a name given twice is a grid): r=13 for tome_r."


class CheckedGroup(typer.core.TyperGroup):
    """The app's commands, each checking its input before it runs, in one place (so a new option
    is covered without anyone remembering): every option against tlbench.bounds (numbers in range,
    no empty value), and a value Click cannot parse (`--count abc`) as one `error:` line, exit 2."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        for command in self.commands.values():
            command.callback = _checked(command)

    def invoke(self, ctx: Any) -> Any:
        usage_error = typer.BadParameter.__mro__[1]  # Click's UsageError (typer vendors Click)
        try:
            return super().invoke(ctx)
        except usage_error as e:
            if type(e).__name__ == "NoArgsIsHelpError":
                raise
            name = e.ctx.command_path if e.ctx is not None else "tlbench"
            err_console.print(f"[bold red]error:[/] {e.format_message()} (see {name} -h)",
                              highlight=False, soft_wrap=True)  # fmt: skip
            raise typer.Exit(code=2) from None


def _checked(command: Any) -> Any:
    """The command's callback, after bounds.check_option on each of its parameters."""
    import functools

    from tlbench.bounds import check_option
    from tlbench.files import check_path

    inner = command.callback

    @functools.wraps(inner)
    def run(**kwargs: Any) -> Any:
        with user_errors():
            for p in command.params:
                name = max(p.opts, key=len) if p.opts[0].startswith("-") else p.name.upper()
                if isinstance(kwargs.get(p.name), Path):
                    check_path(kwargs[p.name], name)
                elif p.name in kwargs and name.startswith("-"):
                    check_option(command.name, name, kwargs[p.name])
        return inner(**kwargs)

    return run


app = typer.Typer(
    cls=CheckedGroup,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="tlbench: where in a Vision Transformer should tokens be reduced, and what does it buy?",
)
console = Console()
err_console = Console(stderr=True)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn a TLBenchError into one line on stderr and exit code 2 (no traceback)."""
    import warnings

    with warnings.catch_warnings():  # restores showwarning on exit
        warnings.showwarning = _warning_line
        try:
            yield
        except TLBenchError as e:
            err_console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
            raise typer.Exit(code=2) from None


def _warning_line(message: Any, category: type, filename: str, lineno: int, *rest: Any) -> None:
    """tlbench's own warnings as one `warning:` line (not a file and line of our source); others
    as Python prints them."""
    import warnings

    if Path(filename).resolve().is_relative_to(Path(__file__).resolve().parents[1]):  # tlbench/
        err_console.print(f"[yellow]warning:[/] {message}", highlight=False, soft_wrap=True)
    else:
        warnings._showwarning_orig(message, category, filename, lineno, *rest)  # type: ignore[attr-defined]


def parse_floats(text: str | None, what: str) -> list[float] | None:
    """'0,0.25,1' -> [0.0, 0.25, 1.0]; None stays None."""
    if text is None:
        return None
    try:
        return [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise ConfigError(f"{what}: expected a comma-separated list of numbers, got {text!r}") from None


def parse_params(items: list[str]) -> dict[str, list[int]]:
    """['r=13', 'r=8'] -> {'r': [13, 8]}: each --param NAME=INTEGER, values of a name in order."""
    out: dict[str, list[int]] = {}
    for item in items:
        name, sep, raw = item.partition("=")
        try:
            value = int(raw.strip())
        except ValueError:
            value = None
        if not sep or not name.strip() or value is None:
            raise ConfigError(f"--param expects NAME=INTEGER (e.g. r=13), got {item!r}")
        out.setdefault(name.strip(), []).append(value)
    return out


def parse_ints(text: str | None, what: str) -> list[int] | None:
    """'8,16' -> [8, 16]; None stays None."""
    if text is None:
        return None
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise ConfigError(f"{what}: expected a comma-separated list of integers, got {text!r}") from None


def check_format(fmt: str) -> str:
    if fmt not in ("table", "json", "csv"):
        raise ConfigError(f"--format must be one of table, json, csv; got {fmt!r}")
    return fmt


def emit_records(records: list[dict[str, Any]], fmt: str, table: Table | None = None) -> None:
    """Print records as JSON (a list), CSV, or the given rich table."""
    if fmt == "json":
        sys.stdout.write(json.dumps(records, indent=2) + "\n")
    elif fmt == "csv":
        import csv

        if records:
            writer = csv.DictWriter(sys.stdout, fieldnames=list(records[0]))
            writer.writeheader()
            writer.writerows(records)
    elif table is not None:
        console.print(table)


# ---- commands -------------------------------------------------------------------------
# (each command: parse -> one library call -> render)
