"""A grid that crosses methods and positions: every valid (method, position) pair runs, each
impossible one (ToMe acts inside a block, so not at p = 1) is listed with why in the ledger, the
summary, the status and the figures' notes; the sweep is refused only when no pair is valid."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from tlbench import load_results, results
from tlbench.cli import app
from tlbench.config import load_sweep
from tlbench.errors import ConfigError
from tlbench.study.status import run_status
from tlbench.study.sweep import expand, impossible

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "sweeps" / "smoke.toml"
runner = CliRunner()
METHODS = 'grid.methods=["tokenlearner","tome","random"]'
FAST = ["--set", "speed.enabled=false", "--set", "quality.enabled=false"]  # compute only: seconds
POSITIONS = (0.0, 0.5, 1.0)  # smoke.toml's


@pytest.fixture(scope="module")
def crossed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("out")
    result = runner.invoke(app, ["sweep", str(SMOKE), "--out", str(out), "--set", METHODS, *FAST])
    assert result.exit_code == 0, result.output
    (run,) = (out / "smoke").iterdir()
    return run, result.output


def test_expansion_keeps_every_valid_pair_and_lists_the_others() -> None:
    config = load_sweep(SMOKE, [METHODS])
    names = {v.name for v in expand(config)}
    assert names == {"baseline", "p0-s4", "p0.5-s4", "p1-s4", "tome-p0-s4", "tome-p0.5-s4",
                     "random-p0-s4", "random-p0.5-s4", "random-p1-s4"}  # fmt: skip
    [(v, why)] = impossible(config)
    assert (v.method, v.position, v.name) == ("tome", 1.0, "tome-p1-s4") and "p < 0.875" in why


def test_every_valid_pair_runs(crossed: tuple[Path, str]) -> None:
    run, _ = crossed
    df = load_results(run)
    got = {
        (m, p)
        for m, p in zip(df["method"], df["position"], strict=True)
        if m is not None and p == p
    }
    want = {(m, p) for m in ("tokenlearner", "tome", "random") for p in POSITIONS} - {("tome", 1.0)}
    assert got == want


def test_the_impossible_pair_is_in_the_ledger_summary_status_and_output(
    crossed: tuple[Path, str],
) -> None:
    run, output = crossed
    ledger = [json.loads(x) for x in (run / results.UNITS).read_text().splitlines()]
    skipped = [u for u in ledger if u["status"] == "skipped"]
    assert [(u["variant"], u["stage"]) for u in skipped] == [("tome-p1-s4", "compute")]
    assert skipped[0]["reason"].startswith("cannot exist: tome acts inside block k; p=1.0")
    summary = results.summary(load_results(run), units=results.read_units(run)).set_index("variant")
    assert summary.at["tome-p1-s4", "notes"].startswith("compute skipped: cannot exist: tome")
    assert "tome-p1-s4 (tome at p = 1, every stage): cannot exist" in " ".join(output.split())
    st = run_status(run)
    assert st.complete and [u.status for u in st.units if u.variant == "tome-p1-s4"] == ["skipped"]
    from tlbench.report.recommend import Budget, recommend

    rec = recommend(run, Budget(max_gflops=1.0)).set_index("variant")
    assert (
        rec.at["tome-p1-s4", "verdict"] == "not measured"
        and rec.at["baseline", "method"] == "baseline"
    )
    assert "compute skipped: cannot exist: tome" in rec.at["tome-p1-s4", "reason"]
    assert pd.isna(
        rec.at["tome-p1-s4", "method"]
    )  # no rows: no method to name, and not the baseline


def test_the_figures_note_the_impossible_pair(
    crossed: tuple[Path, str], tmp_path: Path, monkeypatch
) -> None:
    from matplotlib.figure import Figure

    notes: list[str] = []
    text = Figure.text
    monkeypatch.setattr(
        Figure,
        "text",
        lambda self, x, y, s, *a, **k: notes.append(s) or text(self, x, y, s, *a, **k),
    )
    run, _ = crossed
    result = runner.invoke(app, ["plot", str(run), "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    said = [n for n in notes if n.startswith("Not shown")]
    assert said and all(
        "tome-p1-s4: compute skipped (cannot exist: tome acts inside block k" in n for n in said
    )


def test_resume_adds_no_second_ledger_line(crossed: tuple[Path, str], tmp_path: Path) -> None:
    import shutil

    run = tmp_path / crossed[0].name
    shutil.copytree(crossed[0], run)
    before = (run / results.UNITS).read_text()
    result = runner.invoke(app, ["sweep", "--resume", str(run)])
    assert result.exit_code == 0, result.output
    assert (run / results.UNITS).read_text() == before


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (['grid.methods=["tome"]', "grid.positions=[1.0]"], "use p < 0.875"),
        (
            ['grid.methods=["tome", "topk"]', "grid.positions=[1.0]"],
            "no (method, position) pair of the grid",
        ),
    ],
)
def test_refused_only_when_no_pair_is_valid(
    overrides: list[str], message: str, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        expand(load_sweep(SMOKE, overrides))
    args = [a for o in overrides for a in ("--set", o)]
    result = runner.invoke(app, ["sweep", str(SMOKE), "--out", str(tmp_path), *args])
    assert result.exit_code == 2 and message in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1 and not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("overrides", "message"),
    [(["grid.positions=[0.5, 1.5]"], "[0, 1]"), (['grid.methods=["tome", "topk"]', "grid.tokens=[4, 99]"], "99 tokens")],
)  # fmt: skip
def test_a_bad_position_or_token_count_is_still_refused(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        expand(load_sweep(SMOKE, overrides))
