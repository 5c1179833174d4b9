"""`tlbench check`: passes on an unchanged tree, fails on planted regressions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import tlbench.models
from tlbench.check import new_baseline, run_check
from tlbench.cli import app

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]
GRID = [{"model": "tiny", "positions": [0.0, 0.5, 1.0], "tokens": [4]}]


@pytest.fixture()
def baseline(tmp_path: Path) -> Path:
    path = tmp_path / "compute.json"
    new_baseline(path, GRID)
    return path


def test_passes_when_nothing_changed(baseline: Path) -> None:
    result = runner.invoke(app, ["check", "--baseline", str(baseline)])
    assert result.exit_code == 0, result.output
    assert "passed" in result.output


def test_fails_when_the_tokenlearner_gets_more_expensive(baseline: Path, monkeypatch) -> None:
    original = tlbench.models.insert_tokenlearner
    monkeypatch.setattr(tlbench.models, "insert_tokenlearner",
                        lambda model, variant, bottleneck_dim=64: original(model, variant, 1024))  # fmt: skip
    result = runner.invoke(app, ["check", "--baseline", str(baseline), "--format", "markdown"])
    assert result.exit_code == 1, result.output
    assert "FAILED" in result.output and "| regressed |" in result.output


def test_fails_when_a_variant_goes_missing(baseline: Path) -> None:
    doc = json.loads(baseline.read_text())
    doc["models"][0]["variants"]["p0.25-s4"] = {"gflops": 1e-3, "flops_ratio": 0.5}
    baseline.write_text(json.dumps(doc))
    findings, passed = run_check(baseline)
    assert not passed and [f.variant for f in findings if f.status == "missing"] == ["p0.25-s4"]


def test_fails_when_the_zero_counted_operators_change(baseline: Path) -> None:
    doc = json.loads(baseline.read_text())
    doc["models"][0]["zero_ops"] = ["aten::add"]
    baseline.write_text(json.dumps(doc))
    findings, passed = run_check(baseline)
    assert not passed and any(f.status == "ops-changed" for f in findings)


def test_update_rewrites_the_file(baseline: Path) -> None:
    doc = json.loads(baseline.read_text())
    doc["models"][0]["variants"]["p0-s4"]["flops_ratio"] = 0.01  # a stale, too optimistic entry
    baseline.write_text(json.dumps(doc))
    assert runner.invoke(app, ["check", "--baseline", str(baseline)]).exit_code == 1
    assert runner.invoke(app, ["check", "--baseline", str(baseline), "--update"]).exit_code == 0
    assert runner.invoke(app, ["check", "--baseline", str(baseline)]).exit_code == 0


@pytest.mark.parametrize("content", [None, "{", '{"format": "other"}'])
def test_bad_baseline_file_is_one_line(tmp_path: Path, content: str | None) -> None:
    path = tmp_path / "b.json"
    if content is not None:
        path.write_text(content)
    result = runner.invoke(app, ["check", "--baseline", str(path)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.slow
def test_committed_baseline_passes_on_this_tree() -> None:
    result = runner.invoke(app, ["check", "--baseline", str(ROOT / "results/baselines/compute.json")])
    assert result.exit_code == 0, result.output
