"""The sweep: smoke run end to end, resume after SIGKILL without duplicates, CLI errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tlbench import load_results, results
from tlbench.cli import app
from tlbench.config import load_sweep
from tlbench.errors import ResultsError
from tlbench.sweep import run_sweep

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "sweeps" / "smoke.toml"
runner = CliRunner()
KEY = ["model", "variant", "stage", "metric", "dataset", "shots", "seed"]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("out")
    result = runner.invoke(app, ["sweep", str(SMOKE), "--out", str(out)])
    assert result.exit_code == 0, result.output
    (run_dir,) = (out / "smoke").iterdir()
    return run_dir


def test_smoke_sweep_writes_manifest_rows_csv_and_figures(smoke_run: Path) -> None:
    manifest = json.loads((smoke_run / "manifest.json").read_text())
    assert manifest["config"]["name"] == "smoke" and {"torch", "timm", "fvcore"} <= set(manifest["versions"])
    df = load_results(smoke_run)
    assert set(df["variant"]) == {"baseline", "p0-s4", "p0.5-s4", "p1-s4"}
    assert set(df["stage"]) == {"compute", "speed", "quality", "quality_init"}
    assert not df.duplicated(KEY).any()
    acc = df[df["metric"] == "fewshot_acc"]
    assert acc["value"].between(0, 1).all() and set(acc["shots"]) == {1, 5}
    assert (smoke_run / "results.csv").is_file()
    figures = {p.name for p in (smoke_run / "figures").iterdir()}
    assert {"accuracy_vs_position.png", "accuracy_vs_position.pdf", "gflops_vs_position.pdf",
            "accuracy_vs_gflops.png", "speedup_vs_flops.png"} <= figures  # fmt: skip


def test_plot_command_redraws_from_the_table(smoke_run: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["plot", str(smoke_run), "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert len(list(tmp_path.glob("*.png"))) == 4


def test_a_run_without_quality_still_plots(tmp_path: Path) -> None:
    cfg = load_sweep(SMOKE, ["quality.enabled=false", "speed.enabled=false"])
    res = run_sweep(cfg, tmp_path)
    assert {p.name for p in res.figures} == {"gflops_vs_position.png", "gflops_vs_position.pdf"}


def test_resume_skips_finished_units(smoke_run: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / smoke_run.name
    shutil.copytree(smoke_run, copy)
    before = (copy / "rows.jsonl").read_text()
    result = runner.invoke(app, ["sweep", "--resume", str(copy)])
    assert result.exit_code == 0, result.output
    assert (copy / "rows.jsonl").read_text() == before


def test_resume_refuses_a_corrupt_middle_line(smoke_run: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / smoke_run.name
    shutil.copytree(smoke_run, copy)
    lines = (copy / "rows.jsonl").read_text().splitlines()
    lines[3] = lines[3][:20]
    (copy / "rows.jsonl").write_text("\n".join(lines) + "\n")
    result = runner.invoke(app, ["sweep", "--resume", str(copy)])
    assert result.exit_code == 2 and "rows.jsonl:4" in result.output
    assert (copy / "rows.jsonl").read_text().splitlines()[0] == lines[0]  # nothing written was lost


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "vit_b61"], "did you mean"),
        (["--positions", "0.5,1.5"], "[0, 1]"),
        (["--tokens", "0"], "tokens"),
        (["sweeps/nope.toml"], "not found"),
        (["--set", "grid.bogus=1"], "unknown key grid.bogus"),
        (["--resume", "/nonexistent/run"], "not a tlbench run"),
    ],
)
def test_bad_input_is_one_line(args: list[str], message: str, tmp_path: Path) -> None:
    result = runner.invoke(app, ["sweep", *args, "--out", str(tmp_path)] if "--resume" not in args
                           else ["sweep", *args])  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and message in result.output
    assert len(result.output.strip().splitlines()) == 1


def _stable(run_dir: Path) -> list[tuple]:
    """Rows that do not depend on the clock: compute and quality (seeded), sorted."""
    df = load_results(run_dir)
    df = df[df["stage"].isin(["compute", "quality", "quality_init"]) & (df["metric"] != "adapt_seconds")]
    return sorted(tuple(str(x) for x in r) for r in df[KEY + ["value"]].itertuples(index=False))


@pytest.mark.slow
@pytest.mark.parametrize("kill_after_rows", [0, 1, 5, 9, 13])
def test_sigkill_then_resume_equals_an_uninterrupted_run(
    kill_after_rows: int, smoke_run: Path, tmp_path: Path
) -> None:
    cmd = [sys.executable, "-m", "tlbench", "sweep", str(SMOKE), "--out", str(tmp_path)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})  # fmt: skip
    deadline = time.time() + 120
    rows = None
    while time.time() < deadline and proc.poll() is None:
        found = list((tmp_path / "smoke").glob("*/rows.jsonl"))
        if found and kill_after_rows == 0 or found and len(found[0].read_bytes().splitlines()) >= kill_after_rows:
            rows = found[0]
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the sweep finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    run_dir = rows.parent if rows else next((tmp_path / "smoke").iterdir())
    result = runner.invoke(app, ["sweep", "--resume", str(run_dir)])
    assert result.exit_code == 0, result.output
    df = load_results(run_dir)
    assert not df.duplicated(KEY).any()
    assert _stable(run_dir) == _stable(smoke_run)


def test_results_error_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ResultsError, match="no such run"):
        results.load_results(tmp_path / "missing")


def test_zero_steps_probes_the_initial_features_as_the_quality(tmp_path: Path) -> None:
    cfg = load_sweep(SMOKE, ["quality.steps=0", "speed.enabled=false", "grid.positions=[0.5]"])
    res = run_sweep(cfg, tmp_path)
    df = load_results(res.run_dir)
    assert set(df[df["metric"] == "fewshot_acc"]["stage"]) == {"quality"}
    assert "accuracy_vs_position.png" in {p.name for p in res.figures}


def test_over_budget_quality_is_skipped_with_one_line_each(tmp_path: Path) -> None:
    result = runner.invoke(app, ["sweep", str(SMOKE), "--out", str(tmp_path), "--set", "quality.budget_s=1e-6",
                                 "--set", "speed.enabled=false"])  # fmt: skip
    assert result.exit_code == 0, result.output
    skips = [line for line in result.output.splitlines() if line.startswith("skipped: quality")]
    assert len(skips) == 4 and all("--set quality.budget_s=0" in line for line in skips)
    (run_dir,) = (tmp_path / "smoke").iterdir()
    assert set(load_results(run_dir)["stage"]) == {"compute"}


@pytest.mark.slow
def test_two_quality_workers_give_the_same_rows_as_one(smoke_run: Path, tmp_path: Path) -> None:
    """Spawned workers (the default sweep's setting) are seeded like the in-process path."""
    res = run_sweep(load_sweep(SMOKE, ["quality.workers=2"]), tmp_path)
    assert _stable(res.run_dir) == _stable(smoke_run)
