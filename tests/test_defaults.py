"""Every default lives once, in config.py: the CLI's options that stand for a config field take
their default from it (read off the Typer app, so a new option is covered without a list)."""

from __future__ import annotations

import dataclasses

import pytest
import typer

from tlbench.cli import app
from tlbench.config import PAPER_TOKENS, GridConfig, QualityConfig, SpeedConfig
from tlbench.core import DEFAULT_METHOD

RECORDS = {"probe": QualityConfig(), "bench": SpeedConfig()}  # the record each command's options fill
# option name -> config field, where the names differ
RENAMED = {"compile_": "compile", "time_cap": "time_cap_s", "budget": "budget_s"}
# options that stand for a grid field in every command that has them
GRID = {"version": GridConfig().version, "fuser": GridConfig().fuser, "method": DEFAULT_METHOD}


def _as_option(value: object) -> object:
    """A config default as the CLI writes it: lists as comma lists, numbers as given."""
    if isinstance(value, tuple):
        return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
    return value


def _options(name: str) -> dict[str, object]:
    command = next(c for c in app.registered_commands if (c.name or c.callback.__name__) == name)
    return {p.name: p.default for p in typer.main.get_command_from_info(command, pretty_exceptions_short=True,
            rich_markup_mode=None).params}  # fmt: skip


@pytest.mark.parametrize("command", sorted(RECORDS))
def test_options_named_like_a_config_field_default_to_it(command: str) -> None:
    record = RECORDS[command]
    fields = {f.name for f in dataclasses.fields(record)}
    checked = 0
    for option, default in _options(command).items():
        field = RENAMED.get(option, option)
        if field in fields:
            want = _as_option(getattr(record, field))
            got = default if not isinstance(want, str) or default is None else str(default)
            if isinstance(want, float) and isinstance(got, str):
                got = float(got)
            assert got == want, f"{command} --{option}: {default!r}, config says {getattr(record, field)!r}"
            checked += 1
    assert checked >= 5


@pytest.mark.parametrize("command", ["flops", "bench", "probe", "maps", "compare-models"])
def test_grid_and_model_options_default_to_the_config(command: str) -> None:
    options = _options(command)
    for option, want in GRID.items():
        if option in options:
            assert options[option] == want, f"{command} --{option}"
    if command in ("flops", "compare-models"):
        assert options["tokens"] == ",".join(map(str, PAPER_TOKENS))
    if command == "bench":
        assert options["positions"] == _as_option(GridConfig().positions)
        assert options["tokens"] == _as_option(GridConfig().tokens)
