"""`tlbench check`: passes on an unchanged tree, fails on planted regressions."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
from committed import committed_run
from typer.testing import CliRunner

import tlbench.backbones.vit
import tlbench.study.check
from tlbench.cli import app
from tlbench.errors import ConfigError, ResultsError
from tlbench.study.check import FORMAT, new_baseline, read_baseline, run_check

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
    from tlbench.reducers.tokenlearner import TokenLearnerReducer

    monkeypatch.setattr(TokenLearnerReducer, "bottleneck_dim", 1024)
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


@pytest.mark.parametrize(
    "content", [None, "{", '{"format": "other"}', json.dumps({"format": FORMAT, "models": []})]
)
def test_bad_baseline_file_is_one_line(tmp_path: Path, content: str | None) -> None:
    path = tmp_path / "b.json"
    if content is not None:
        path.write_text(content)
    result = runner.invoke(app, ["check", "--baseline", str(path)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.slow
def test_committed_baseline_passes_on_this_tree() -> None:
    result = runner.invoke(
        app, ["check", "--baseline", str(ROOT / "results/baselines/compute.json")]
    )
    assert result.exit_code == 0, result.output


def _valid_doc() -> dict:
    """A well-formed baseline (numbers made up): input validation runs before any recount."""
    return {
        "format": FORMAT,
        "tolerance": 1e-3,
        "models": [{
            "grid": {"model": "tiny", "positions": [0.0], "tokens": [4]},
            "model": "tiny",
            "variants": {"baseline": {"gflops": 1e-3, "flops_ratio": 1.0},
                         "p0-s4": {"gflops": 5e-4, "flops_ratio": 0.5}},
            "zero_ops": ["aten::add"],
        }],
    }  # fmt: skip


DELETE = object()
V = ("models", 0, "variants", "p0-s4")
MALFORMED = [  # (key path to damage, new value or DELETE, what the message must say)
    pytest.param((), [], "not a tlbench compute baseline (format", id="not-an-object"),
    pytest.param(("format",), "tlbench-compute-baseline/0", "not a tlbench compute", id="format"),
    pytest.param(("tolerance",), "x", "tolerance must be a number, got 'x'", id="tolerance-text"),
    pytest.param(("tolerance",), None, "tolerance must be a number, got None", id="tolerance-null"),
    pytest.param(("models",), DELETE, "models is missing", id="models-missing"),
    pytest.param(("models",), [], "models must be a non-empty list, got []", id="models-empty"),
    pytest.param(("models",), {}, "models must be a non-empty list, got {}", id="models-object"),
    pytest.param(("models", 0), 3, "models[0] must be an object, got 3", id="entry"),
    pytest.param(("models", 0, "grid"), DELETE, "models[0].grid is missing", id="grid-missing"),
    pytest.param(("models", 0, "grid"), "tiny", "models[0].grid must be an object", id="grid"),
    pytest.param(("models", 0, "grid", "model"), 5, "models[0].grid.model must be a string, got 5",
                 id="grid-model"),
    pytest.param(("models", 0, "grid", "model"), DELETE, "models[0].grid.model is missing",
                 id="grid-model-missing"),
    pytest.param(("models", 0, "model"), None, "models[0].model must be a string, got None",
                 id="model"),
    pytest.param(("models", 0, "variants"), {}, "models[0].variants must be a non-empty object",
                 id="variants-empty"),
    pytest.param(("models", 0, "variants"), [], "models[0].variants must be a non-empty object",
                 id="variants-list"),
    pytest.param(V, 0.5, "models[0].variants.p0-s4 must be an object, got 0.5", id="variant"),
    pytest.param((*V, "gflops"), "x", "models[0].variants.p0-s4.gflops must be a positive number, "
                 "got 'x'", id="gflops-text"),
    pytest.param((*V, "gflops"), -1.0, "models[0].variants.p0-s4.gflops must be a positive "
                 "number, got -1.0", id="gflops-negative"),
    pytest.param(("models", 0, "variants", "baseline", "gflops"), 0,
                 "models[0].variants.baseline.gflops must be a positive number", id="gflops-zero"),
    pytest.param((*V, "gflops"), math.inf, "p0-s4.gflops must be a positive number, got inf",
                 id="gflops-inf"),
    pytest.param((*V, "flops_ratio"), math.nan, "p0-s4.flops_ratio must be a positive number, "
                 "got nan", id="ratio-nan"),
    pytest.param((*V, "flops_ratio"), True, "p0-s4.flops_ratio must be a positive number, got True",
                 id="ratio-bool"),
    pytest.param((*V, "flops_ratio"), DELETE, "models[0].variants.p0-s4.flops_ratio is missing",
                 id="ratio-missing"),
    pytest.param(("models", 0, "zero_ops"), "aten::add", "models[0].zero_ops must be a list of "
                 "strings", id="zero-ops-text"),
    pytest.param(("models", 0, "zero_ops"), [1], "models[0].zero_ops must be a list of strings",
                 id="zero-ops-items"),
    pytest.param(("models", 0, "zero_ops"), DELETE, "models[0].zero_ops is missing",
                 id="zero-ops-missing"),
    pytest.param(("models",), [_valid_doc()["models"][0], {}], "models[1].grid is missing",
                 id="second-entry"),
]  # fmt: skip


def _damaged(tmp_path: Path, keys: tuple, value) -> Path:
    doc = _valid_doc()
    if keys:
        *parents, last = keys
        target = doc
        for k in parents:
            target = target[k]
        if value is DELETE:
            del target[last]
        else:
            target[last] = value
    else:
        doc = value
    path = tmp_path / "compute.json"
    path.write_text(json.dumps(doc))
    return path


@pytest.mark.parametrize("keys, value, message", MALFORMED)
def test_malformed_baseline_names_the_key(tmp_path: Path, keys: tuple, value, message) -> None:
    path = _damaged(tmp_path, keys, value)
    with pytest.raises(ResultsError) as e:
        run_check(path)
    assert str(e.value).startswith(f"{path}: ") and message in str(e.value)
    assert "\n" not in str(e.value)


def test_the_valid_document_is_valid(tmp_path: Path) -> None:
    path = tmp_path / "compute.json"
    path.write_text(json.dumps(_valid_doc()))
    assert read_baseline(path) == _valid_doc()


@pytest.mark.parametrize(
    "tol", [math.nan, math.inf, -math.inf, -1e-3, 1.0, 2, "0.1", True], ids=repr
)
def test_bad_tolerance_argument_is_a_config_error(tmp_path: Path, tol) -> None:
    path = tmp_path / "compute.json"
    path.write_text(json.dumps(_valid_doc()))
    with pytest.raises(ConfigError, match=r"^tolerance must be a (finite )?number in \[0, 1\)"):
        run_check(path, tolerance=tol)


@pytest.mark.parametrize("tol", [math.nan, math.inf, -1.0, 1.0, 5])
def test_bad_tolerance_in_the_file_is_a_config_error(tmp_path: Path, tol) -> None:
    path = tmp_path / "compute.json"
    path.write_text(json.dumps({**_valid_doc(), "tolerance": tol}))
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}: tolerance must be a finite"):
        run_check(path)


@pytest.mark.parametrize("tol", ["nan", "inf", "-0.5", "1"])
def test_bad_tolerance_on_the_command_line_is_one_line(tmp_path: Path, tol: str) -> None:
    path = tmp_path / "compute.json"
    path.write_text(json.dumps(_valid_doc()))
    result = runner.invoke(app, ["check", "--baseline", str(path), f"--tolerance={tol}"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1 and "tolerance" in result.output


def test_zero_tolerance_is_allowed(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "compute.json"
    path.write_text(json.dumps(_valid_doc()))
    monkeypatch.setattr(tlbench.study.check, "measure", lambda grids: _valid_doc())
    findings, passed = run_check(path, tolerance=0)
    assert passed and {f.status for f in findings} == {"ok"}


def test_a_recount_with_another_number_of_models_is_one_line(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "compute.json"
    path.write_text(json.dumps(_valid_doc()))
    monkeypatch.setattr(tlbench.study.check, "measure", lambda grids: {**_valid_doc(), "models": []})
    with pytest.raises(ResultsError, match="recount yields 0 model entries for the baseline's 1"):
        run_check(path)


def test_compare_command_passes_a_run_against_itself_and_fails_a_changed_one(tmp_path: Path) -> None:
    import shutil

    committed = committed_run("default")
    ok = CliRunner().invoke(app, ["compare", str(committed), str(committed)])
    assert ok.exit_code == 0 and "reproduced" in ok.output, ok.output
    copy = tmp_path / "run"
    shutil.copytree(committed, copy, ignore=shutil.ignore_patterns("figures"))
    lines = (copy / "rows.jsonl").read_text().splitlines()
    kept = [line for line in lines if '"stage": "quality"' not in line or '"variant": "baseline"' not in line]
    (copy / "rows.jsonl").write_text("\n".join(kept) + "\n")
    bad = CliRunner().invoke(app, ["compare", str(copy), str(committed), "--format", "markdown"])
    assert bad.exit_code == 1 and "missing" in bad.output, bad.output
