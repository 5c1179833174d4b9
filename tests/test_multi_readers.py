"""Runs of several models are read by (model, variant), never by variant name alone: recommend
judges each model's variants against its own baseline, `maps RUN --variant NAME -m MODEL` draws
that model's variant and refuses an ambiguous name without -m, and compare of a one-model run
against a two-model one names the model of every line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from committed import committed_run
from typer.testing import CliRunner

from tlbench import results
from tlbench.cli import app
from tlbench.errors import ConfigError
from tlbench.report.recommend import Budget, recommend
from tlbench.report.token_maps import from_run

RUN = committed_run("default")
OTHER = "tiny"  # the second model: the committed run's rows, cheaper and less accurate
runner = CliRunner()


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


@pytest.fixture(scope="module")
def two(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The committed one-model run with a second model whose every variant has the same name:
    half the GFLOPs, and 20 points less accuracy on reduced variants (its baseline unchanged)."""
    run = tmp_path_factory.mktemp("two") / RUN.name
    shutil.copytree(RUN, run, ignore=shutil.ignore_patterns("figures"))
    rows = lines(run / results.ROWS)
    other = []
    for r in rows:
        value = r["value"]
        if r["metric"] == "gflops":
            value = value / 2
        elif r["metric"] == "fewshot_acc" and r["variant"] != "baseline":
            value = value - 0.2
        other.append({**r, "model": OTHER, "value": value})
    (run / results.ROWS).write_text("".join(json.dumps(r) + "\n" for r in rows + other))
    units = lines(run / results.UNITS)
    units += [{**u, "model": OTHER} for u in units]
    (run / results.UNITS).write_text("".join(json.dumps(u) + "\n" for u in units))
    doc = json.loads((run / results.MANIFEST).read_text())
    doc["variants"] += [{**v, "model": OTHER} for v in doc["variants"]]
    (run / results.MANIFEST).write_text(json.dumps(doc))
    (run / "checkpoints").mkdir()
    for model in ("vit_cpu6", OTHER):  # maps reads a variant's checkpoint by its model's name
        (run / "checkpoints" / f"{model}-p0.5-s8-mnist-400-seed0.pt").write_bytes(b"")
    return run


def test_recommend_keys_every_variant_by_model(two: Path) -> None:
    one = recommend(RUN, Budget(max_accuracy_drop=5.0))
    both = recommend(two, Budget(max_accuracy_drop=5.0))
    assert len(both) == 2 * len(one)
    assert set(zip(both["model"], both["variant"], strict=True)) == {
        (m, v) for m in ("vit_cpu6", OTHER) for v in one["variant"]
    }
    mine = both[both["model"] == "vit_cpu6"].set_index("variant")
    theirs = both[both["model"] == OTHER].set_index("variant")
    ref = one.set_index("variant")
    for v in ref.index:  # each model against its own baseline
        assert mine.at[v, "acc_drop"] == pytest.approx(ref.at[v, "acc_drop"], nan_ok=True)
        assert (
            mine.at[v, "gflops"] == ref.at[v, "gflops"]
            and theirs.at[v, "gflops"] == ref.at[v, "gflops"] / 2
        )
        if v != "baseline":
            assert theirs.at[v, "acc_drop"] == pytest.approx(ref.at[v, "acc_drop"] + 20)
            assert theirs.at[v, "verdict"] == "over budget"
    only = recommend(two, Budget(max_accuracy_drop=5.0), model="vit_cpu6")
    assert only.drop(columns="rank").equals(one.drop(columns="rank"))


def test_recommend_cli_shows_the_model_and_takes_model(two: Path) -> None:
    result = runner.invoke(app, ["recommend", str(two), "--max-gflops", "1", "--all"])
    assert result.exit_code == 0, result.output
    head = next(x for x in result.output.splitlines() if "variant" in x and "method" in x)
    assert "model" in head and OTHER in result.output
    result = runner.invoke(app, ["recommend", str(two), "--max-gflops", "1", "--format", "json"])
    records = json.loads(result.output)
    n = len(json.loads((RUN / results.MANIFEST).read_text())["variants"])
    assert len(records) == 2 * n and all(r["verdict"] == "fits" for r in records)
    assert len({(r["model"], r["variant"]) for r in records}) == 2 * n
    result = runner.invoke(app, ["recommend", str(two), "--max-gflops", "1", "-m", "nope"])
    assert result.exit_code == 2 and "has no such model; it has vit_cpu6, tiny" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_maps_refuses_an_ambiguous_name_and_picks_by_model(two: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="p0.5-s8 is a variant of 2 models .* give --model/-m"):
        from_run(two, "p0.5-s8")
    for model in ("vit_cpu6", OTHER):
        source = from_run(two, "p0.5-s8", model)
        assert source.variant.model == model and source.checkpoint.name.startswith(f"{model}-")
    result = runner.invoke(
        app, ["maps", str(two), "--variant", "p0.5-s8", "--out", str(tmp_path / "m")]
    )
    assert result.exit_code == 2 and "give --model/-m" in result.output
    assert len(result.output.strip().splitlines()) == 1
    result = runner.invoke(app, ["maps", str(two), "--variant", "p0.5-s8", "-m", "vit_b16"])
    assert result.exit_code == 2 and "has no such model" in result.output


def test_compare_of_one_model_against_two_names_the_model(two: Path) -> None:
    result = runner.invoke(app, ["compare", str(RUN), str(two)])
    assert result.exit_code == 1, result.output
    head = next(x for x in result.output.splitlines() if "variant" in x and "stage" in x)
    assert "model" in head
    assert any(OTHER in x and "missing" in x for x in result.output.splitlines())
    same = runner.invoke(app, ["compare", str(RUN), str(RUN)])  # one model: no model column
    assert same.exit_code == 0 and "reproduced" in same.output
