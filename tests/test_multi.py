"""Several models in one sweep: model.names / --model a,b, rows per model, per-model and family figures."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tlbench import load_results
from tlbench.cli import app
from tlbench.config import load_sweep
from tlbench.errors import ConfigError
from tlbench.study.sweep import expand, run_sweep

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "sweeps" / "smoke.toml"
TWO = 'model.names=["tiny", "vit_cpu6"]'
KEY = ["model", "variant", "stage", "metric", "dataset", "shots", "seed"]
runner = CliRunner()


def test_expand_gives_each_model_its_grid_in_order() -> None:
    variants = expand(load_sweep(SMOKE, [TWO]))
    one = expand(load_sweep(SMOKE))
    assert [v.model for v in variants] == ["tiny"] * len(one) + ["vit_cpu6"] * len(one)
    assert [v.name for v in variants] == [v.name for v in one] * 2
    assert [v.block_index for v in variants[len(one):]] == [None, 0, 3, 6]  # depth 6, not 4


def test_one_name_in_names_is_the_single_model_sweep() -> None:
    assert load_sweep(SMOKE, ['model.names=["tiny"]']) == load_sweep(SMOKE)
    assert load_sweep(SMOKE, [TWO]).model.name == "tiny"  # name is the first of names


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (['model.names=["tiny", "tiny"]'], "twice"),
        ([TWO, 'model.checkpoint="x.pt"'], "model.checkpoint"),
        (['model.names=["vit_b16", "vit_base_patch16_224"]'], "same model"),
    ],
)
def test_bad_model_lists(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        expand(load_sweep(SMOKE, overrides))


@pytest.fixture(scope="module")
def two_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    res = run_sweep(load_sweep(SMOKE, [TWO]), tmp_path_factory.mktemp("out"))
    assert not res.failed and not res.skipped
    return res.run_dir


def test_a_two_model_sweep_has_every_stage_for_both(two_models: Path) -> None:
    df = load_results(two_models)
    assert set(df["model"]) == {"tiny", "vit_cpu6"}
    for model in ("tiny", "vit_cpu6"):
        mine = df[df["model"] == model]
        assert {"compute", "speed", "quality"} <= set(mine["stage"])
        base = mine[(mine["metric"] == "speedup") & (mine["variant"] == "baseline")]["value"]
        assert list(base) == [1.0]  # each model timed against its own baseline
    figures = {p.name for p in (two_models / "figures").glob("*.png")}
    assert {"family_gflops_vs_position.png", "family_accuracy_vs_gflops.png",
            "accuracy_vs_gflops-tiny.png", "accuracy_vs_gflops-vit_cpu6.png",
            "speedup_vs_flops-tiny.png", "speedup_vs_flops-vit_cpu6.png"} <= figures  # fmt: skip


def test_resume_redoes_one_models_removed_units(two_models: Path, tmp_path: Path) -> None:
    copy = tmp_path / two_models.name
    shutil.copytree(two_models, copy)
    for name in ("rows.jsonl", "units.jsonl"):
        path = copy / name
        lines = path.read_text().splitlines()
        path.write_text("".join(line + "\n" for line in lines if json.loads(line)["model"] != "vit_cpu6"))
    assert set(load_results(copy)["model"]) == {"tiny"}
    result = runner.invoke(app, ["sweep", "--resume", str(copy)])
    assert result.exit_code == 0, result.output
    df, before = load_results(copy), load_results(two_models)
    assert not df.duplicated(KEY).any()
    stable = ~before["stage"].isin(["speed"]) & ~before["metric"].isin(["adapt_seconds", "estimate_seconds"])
    keep = ~df["stage"].isin(["speed"]) & ~df["metric"].isin(["adapt_seconds", "estimate_seconds"])
    rows = sorted(tuple(map(str, r)) for r in df[keep][KEY + ["value"]].itertuples(index=False))
    assert rows == sorted(tuple(map(str, r)) for r in before[stable][KEY + ["value"]].itertuples(index=False))


def test_the_cli_takes_a_comma_list(tmp_path: Path) -> None:
    result = runner.invoke(app, ["sweep", "--model", "tiny,vit_cpu6", "--set", "speed.enabled=false",
                                 "--set", "quality.enabled=false", "--out", str(tmp_path)])  # fmt: skip
    assert result.exit_code == 0, result.output
    (run_dir,) = (tmp_path / "tiny-vit_cpu6").iterdir()
    assert set(load_results(run_dir)["model"]) == {"tiny", "vit_cpu6"}
    figures = {p.name for p in (run_dir / "figures").glob("*.png")}
    assert figures == {"family_gflops_vs_position.png", "gflops_vs_position-tiny.png",
                       "gflops_vs_position-vit_cpu6.png"}  # no accuracy: no accuracy figure  # fmt: skip


def test_a_bad_name_in_the_list_is_one_line(tmp_path: Path) -> None:
    result = runner.invoke(app, ["sweep", "--model", "tiny,vit_b61", "--out", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and "vit_b61" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir())  # refused before any run folder exists
