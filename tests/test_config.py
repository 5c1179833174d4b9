"""Sweep files: strict loading, overrides, the default file equals the built-in default."""

from __future__ import annotations

from pathlib import Path

import pytest

from tlbench.config import SweepConfig, load_sweep
from tlbench.errors import ConfigError
from tlbench.study.sweep import expand

SWEEPS = Path(__file__).resolve().parents[1] / "sweeps"


def test_default_file_is_the_built_in_default() -> None:
    assert load_sweep(SWEEPS / "default.toml") == SweepConfig() == load_sweep(None)


@pytest.mark.parametrize("path", sorted(SWEEPS.glob("*.toml")), ids=lambda p: p.name)
def test_every_sweep_file_loads_and_expands(path: Path) -> None:
    config = load_sweep(path)
    assert any(line.startswith("# Run: tlbench sweep") for line in path.read_text().splitlines()[:8])
    variants = expand(config)
    assert variants[0].is_baseline == config.grid.baseline and len(variants) > 1


def test_overrides_are_toml_values() -> None:
    c = load_sweep(None, ["quality.steps=7", "grid.positions=[0, 0.5]", 'model.name="tiny"',
                          "speed.batch_size=16", "quality.budget_s=1e3"])  # fmt: skip
    assert (c.quality.steps, c.grid.positions, c.model.name) == (7, (0.0, 0.5), "tiny")
    assert c.speed.batch_size == 16 and c.quality.budget_s == 1000.0
    assert load_sweep(None, ["model.name=tiny"]).model.name == "tiny"  # bare word: a string


def test_all_positions() -> None:
    c = load_sweep(None, ['model.name="tiny"', 'grid.positions="all"'])
    assert [v.block_index for v in expand(c)[1:]] == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[grid]\npositon = [0.5]\n", "unknown key grid.positon"),
        ("[grid]\npositions = [1.5]\n", "grid.positions must be a number in [0, 1], got 1.5"),
        ("[grid]\npositions = 0.5\n", "grid.positions must be"),
        ("[quality]\nsteps = -1\n", "quality.steps must be an integer in [0, 10,000,000], got -1"),
        ("[quality]\nshots = [0]\n", "quality.shots"),
        ("[speed]\nbatch_size = \"big\"\n", "speed.batch_size"),
        ("[speed]\ndtype = \"int8\"\n", "speed.dtype"),
        ("[speed]\ndevice = \"tpu\"\n", "speed.device"),
        ("[model]\nname = 3\n", "model.name must be a string"),
        ("grid = 3\n", "grid must be a table"),
        ("name = \n", "not valid TOML"),
        ("bogus = 1\n", "unknown key bogus"),
    ],
)
def test_bad_files_name_the_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_sweep(path)
    assert str(path) in str(err.value) and message in str(err.value)


@pytest.mark.parametrize("item", ["noequals", "=3", "quality.steps.x=3"])
def test_bad_overrides(item: str) -> None:
    with pytest.raises(ConfigError):
        load_sweep(None, [item])


def test_missing_sweep_file() -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_sweep("sweeps/nope.toml")
