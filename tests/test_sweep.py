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
from tlbench.study.sweep import run_sweep

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
            "accuracy_vs_gflops.png", "speedup_vs_flops.png", "accuracy_vs_position_adapt.pdf"} <= figures  # fmt: skip
    assert '"run_id":"' + smoke_run.name in (smoke_run / "report.html").read_text()  # the sweep wrote it
    assert "report: " in runner.invoke(app, ["report", str(smoke_run)]).output  # the CLI rewrites it


def test_the_sweep_draws_the_trained_tokenlearners_maps(smoke_run: Path, tmp_path: Path) -> None:
    import shutil

    import pandas as pd

    figures = {p.name for p in (smoke_run / "figures").iterdir()}
    tl = ["p0-s4", "p0.5-s4", "p1-s4"]
    assert {f"maps-{v}.{ext}" for v in tl for ext in ("png", "pdf")} | {"maps.csv"} <= figures
    mass = pd.read_csv(smoke_run / "figures" / "maps.csv")
    assert sorted(mass["variant"]) == tl and (mass["images"] == 10).all()
    assert mass["mass_on_digit"].between(0, 1).all() and mass["area_of_digit"].between(0, 1).all()
    # `tlbench maps RUN --all` redraws the same maps from the checkpoints alone
    copy = tmp_path / "run"
    shutil.copytree(smoke_run, copy)
    shutil.rmtree(copy / "figures")
    res = runner.invoke(app, ["maps", str(copy), "--all"])
    assert res.exit_code == 0, res.output
    again = pd.read_csv(copy / "figures" / "maps.csv")
    pd.testing.assert_frame_equal(again, mass)
    for args in (["maps", str(copy), "--all", "--variant", "p0-s4"], ["maps", "--all"]):
        res = runner.invoke(app, args)
        assert res.exit_code == 2 and "--all takes RUN_DIR alone" in res.output
    shutil.rmtree(copy / "checkpoints")
    res = runner.invoke(app, ["maps", str(copy), "--all"])
    assert res.exit_code == 2 and "no maps for" in res.output and "Traceback" not in res.output


def test_speed_rows_record_the_attention_kernel(smoke_run: Path) -> None:
    df = load_results(smoke_run)
    speed = df[df["stage"] == "speed"]
    assert len(speed) and speed["attn_kernel"].isin(["flash", "efficient", "cudnn", "fused"]).all()
    assert df[df["stage"] != "speed"]["attn_kernel"].isna().all()
    # where it was timed (a cluster's speed job names its node); no GPU on a CPU run
    import socket

    assert (speed["host"] == socket.gethostname()).all() and speed["gpu"].isna().all()


def test_plot_command_redraws_from_the_table(smoke_run: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["plot", str(smoke_run), "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert len(list(tmp_path.glob("*.png"))) == 5  # quality_init and quality: the adaptation figure


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
    df = df[df["stage"].isin(["compute", "quality", "quality_init"])
            & ~df["metric"].isin(["adapt_seconds", "estimate_seconds"])]
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


# ---- reliability: crash regression, failures contained, resume, lock, bad input ----------------


def _run_dir(out: Path, name: str = "smoke") -> Path:
    (run_dir,) = (out / name).iterdir()
    return run_dir


def test_partial_saves_inside_a_sweep_create_their_folder(tmp_path: Path) -> None:
    """Regression: the 60 s partial checkpoint was written before anything created checkpoints/."""
    cfg = load_sweep(SMOKE, ["quality.save_every_s=0", "speed.enabled=false", "grid.positions=[0.5]"])
    res = run_sweep(cfg, tmp_path)
    assert not res.failed and not res.skipped
    assert len(list((res.run_dir / "checkpoints").glob("*.pt"))) == 2
    assert not list((res.run_dir / "checkpoints").glob("*.partial"))


@pytest.mark.slow
def test_the_built_in_study_path_saves_partials_in_its_workers(tmp_path: Path) -> None:
    """The built-in study's own quality path (its model, 2 spawned workers), saving every step."""
    cfg = load_sweep(None, ["quality.save_every_s=0", "quality.steps=3", "quality.batch_size=16",
                            "quality.shots=[1]", "quality.seeds=1", "speed.enabled=false",
                            "compute.enabled=false", "grid.positions=[0.5]",
                            "quality.workers=2"])  # fmt: skip  (auto is 2 on the 2-core class)
    assert cfg.model.name == "vit_cpu6" and cfg.quality.threads == 1
    res = run_sweep(cfg, tmp_path)
    assert not res.failed and not res.skipped
    df = load_results(res.run_dir)
    assert set(df[df["stage"] == "quality"]["variant"]) == {"baseline", "p0.5-s8"}


def test_a_failing_unit_keeps_the_others_and_resume_retries_it(tmp_path: Path, monkeypatch) -> None:
    import tlbench.study.stages

    real = tlbench.study.stages.run_probe_variant

    def flaky(v, *args, **kw):  # noqa: ANN001, ANN002, ANN003, ANN202
        if v.name == "p0.5-s4":
            raise RuntimeError("boom\nsecond line of the message")
        return real(v, *args, **kw)

    monkeypatch.setattr(tlbench.study.stages, "run_probe_variant", flaky)
    args = ["sweep", str(SMOKE), "--out", str(tmp_path), "--set", "speed.enabled=false"]
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    assert "failed: quality p0.5-s4: RuntimeError: boom" in result.output
    assert "Traceback" not in result.output and "second line" not in result.output
    run_dir = _run_dir(tmp_path)
    df = load_results(run_dir)
    assert set(df[df["stage"] == "quality"]["variant"]) == {"baseline", "p0-s4", "p1-s4"}
    unit = results.read_units(run_dir)[(df["model"][0], "p0.5-s4", "quality")]
    assert unit["status"] == "failed" and unit["error"] == "RuntimeError"
    assert "Traceback" in (run_dir / unit["log"]).read_text()
    assert {p.name for p in (run_dir / "figures").glob("*.png")} >= {"accuracy_vs_position.png"}

    monkeypatch.setattr(tlbench.study.stages, "run_probe_variant", real)
    again = runner.invoke(app, ["sweep", "--resume", str(run_dir)])
    assert again.exit_code == 0, again.output
    df = load_results(run_dir)
    assert set(df[df["stage"] == "quality"]["variant"]) == {"baseline", "p0-s4", "p0.5-s4", "p1-s4"}
    assert not df.duplicated(KEY).any()


@pytest.mark.slow
def test_failures_in_worker_processes_are_contained(tmp_path: Path) -> None:
    """An unreadable image fails every quality unit in the spawned workers; compute is kept."""
    from PIL import Image

    for split in ("train", "test"):
        for c in ("a", "b"):
            (tmp_path / "data" / split / c).mkdir(parents=True)
            for i in range(4):
                Image.new("RGB", (8, 8), (40 * i, 100 if c == "a" else 200, 0)).save(
                    tmp_path / "data" / split / c / f"{i}.png")  # fmt: skip
    (tmp_path / "data" / "test" / "a" / "4.png").write_bytes(b"")  # zero bytes, in the test split
    result = runner.invoke(app, ["sweep", str(SMOKE), "--out", str(tmp_path / "out"), "--set", "speed.enabled=false",
                                 "--set", "quality.workers=2", "--set", "quality.shots=[1]",
                                 "--set", f'quality.probe_data=["folder:{tmp_path / "data"}"]'])  # fmt: skip
    assert result.exit_code == 1, result.output
    failed = [line for line in result.output.splitlines() if line.startswith("failed: quality")]
    assert len(failed) == 4 and all("cannot read image" in line for line in failed)
    assert "Traceback" not in result.output
    df = load_results(_run_dir(tmp_path / "out"))
    assert set(df["stage"]) == {"compute"} and df["variant"].nunique() == 4


def test_resume_accepts_its_own_config_and_refuses_another(smoke_run: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / smoke_run.name
    shutil.copytree(smoke_run, copy)
    before = (copy / "rows.jsonl").read_text()
    for extra in ([], ["--set", "quality.steps=4"]):  # the file's own value
        result = runner.invoke(app, ["sweep", str(SMOKE), *extra, "--resume", str(copy)])
        assert result.exit_code == 0, result.output
    assert (copy / "rows.jsonl").read_text() == before
    result = runner.invoke(app, ["sweep", str(SMOKE), "--set", "quality.steps=5", "--set", "grid.tokens=[2]",
                                 "--resume", str(copy)])  # fmt: skip
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "grid.tokens: [4] -> [2]" in result.output and "quality.steps: 4 -> 5" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_a_locked_run_refuses_a_second_process(smoke_run: Path, tmp_path: Path) -> None:
    import shutil

    from tlbench.files import RunLock

    copy = tmp_path / smoke_run.name
    shutil.copytree(smoke_run, copy)
    with RunLock(copy):
        result = runner.invoke(app, ["sweep", "--resume", str(copy)])
    assert result.exit_code == 2 and "is in use by tlbench pid" in result.output
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize("cut", ["ledger", "rows-and-ledger"])
def test_a_unit_is_done_when_recorded_not_when_a_row_exists(smoke_run: Path, tmp_path: Path, cut: str) -> None:
    """A kill between a unit's rows and its ledger line, or one that cut its rows short."""
    import shutil

    copy = tmp_path / smoke_run.name
    shutil.copytree(smoke_run, copy)
    ledger = (copy / results.UNITS).read_text().splitlines(keepends=True)
    last = json.loads(ledger[-1])
    (copy / results.UNITS).write_text("".join(ledger[:-1]))
    if cut == "rows-and-ledger":  # keep only the first of the unit's rows
        lines = (copy / "rows.jsonl").read_text().splitlines(keepends=True)
        mine = [i for i, line in enumerate(lines)
                if (json.loads(line)["variant"], json.loads(line)["stage"]) == (last["variant"], last["stage"])]  # fmt: skip
        (copy / "rows.jsonl").write_text("".join(lines[: mine[1]]))
    result = runner.invoke(app, ["sweep", "--resume", str(copy)])
    assert result.exit_code == 0, result.output
    assert not load_results(copy).duplicated(KEY).any()
    assert _stable(copy) == _stable(smoke_run)
    assert results.read_units(copy)[(last["model"], last["variant"], last["stage"])]["status"] == "done"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", 'quality.train_data="folder:/nonexistent/train"'], "data folder not found"),
        (["--set", 'name="../../escape"'], "name must be letters"),
        (["--set", "quality.l2_reg=-1.0"], "quality.l2_reg must be a number in (0, 1,000,000,000,000], got -1"),
    ],
)
def test_bad_sweep_settings_fail_before_any_work(args: list[str], message: str, tmp_path: Path) -> None:
    result = runner.invoke(app, ["sweep", str(SMOKE), "--out", str(tmp_path), *args])
    assert result.exit_code == 2 and message in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1 and not any(tmp_path.iterdir())


def test_an_unwritable_output_folder_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = runner.invoke(app, ["sweep", str(SMOKE), "--out", str(blocker)])
    assert result.exit_code == 2 and "cannot create the directory" in result.output
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize("value", ["NaN", "null", "Infinity", "-Infinity"])
def test_missing_values_plot_and_resume(smoke_run: Path, tmp_path: Path, value: str) -> None:
    import shutil

    copy = tmp_path / smoke_run.name
    shutil.copytree(smoke_run, copy)
    lines = (copy / "rows.jsonl").read_text().splitlines()
    for i in (0, len(lines) // 2):  # a compute row and a later one
        row = json.loads(lines[i])
        lines[i] = json.dumps(row).replace(json.dumps(row["value"]), value, 1)
    (copy / "rows.jsonl").write_text("\n".join(lines) + "\n")
    assert runner.invoke(app, ["plot", str(copy)]).exit_code == 0
    result = runner.invoke(app, ["sweep", "--resume", str(copy)])
    assert result.exit_code == 0, result.output


def test_damaged_rows_and_manifests_are_one_line(smoke_run: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / smoke_run.name
    shutil.copytree(smoke_run, copy)
    lines = (copy / "rows.jsonl").read_text().splitlines()
    row = json.loads(lines[2])
    lines[2] = json.dumps({**row, "value": "fast"})
    (copy / "rows.jsonl").write_text("\n".join(lines) + "\n")
    for args in (["plot", str(copy)], ["sweep", "--resume", str(copy)]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2 and "rows.jsonl:3: value must be a number" in result.output
    (copy / "manifest.json").write_text("[1, 2]")
    for args in (["plot", str(copy)], ["sweep", "--resume", str(copy)]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2 and "not a tlbench manifest" in result.output
        assert len(result.output.strip().splitlines()) == 1


def test_skips_are_said_in_the_summary(tmp_path: Path) -> None:
    res = run_sweep(load_sweep(SMOKE, ["quality.budget_s=1e-6", "speed.enabled=false"]), tmp_path)
    table = results.summary(load_results(res.run_dir), units=results.read_units(res.run_dir))
    assert table["notes"].str.startswith("quality skipped").all()
    assert results.not_done(res.run_dir)[0][0] == "quality"


@pytest.mark.slow
@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_an_interrupted_sweep_stops_its_workers_in_one_line(tmp_path: Path, how: str) -> None:
    cmd = [sys.executable, "-m", "tlbench", "sweep", str(SMOKE), "--out", str(tmp_path),
           "--set", "speed.enabled=false", "--set", "quality.steps=100000", "--set", "quality.workers=2",
           "--set", "quality.budget_s=0"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # fmt: skip
    deadline = time.time() + 120
    while time.time() < deadline and len(_ledger_lines(tmp_path)) < 4:
        time.sleep(0.2)  # compute is done, then the quality stage starts its workers
    time.sleep(8)  # the workers are training
    if how == "ctrl-c":
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal does: the whole process group
    else:
        os.kill(proc.pid, signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err + out and "interrupted" in err and "--resume" in err
    time.sleep(2)
    left = subprocess.run(["pgrep", "-g", str(proc.pid)], capture_output=True, text=True).stdout.split()
    assert not left, f"processes left in the sweep's group: {left}"


def _ledger_lines(out: Path) -> list[str]:
    found = list(out.glob("smoke/*/units.jsonl"))
    return found[0].read_text().splitlines() if found else []


@pytest.mark.slow
@pytest.mark.parametrize(
    ("sweep", "overrides"),
    [
        (SMOKE, ["quality.steps=60", "grid.positions=[0.0, 1.0]"]),
        (None, ["quality.steps=20", "grid.positions=[0.0, 0.5]", "quality.shots=[1]", "quality.seeds=1"]),
    ],
    ids=["tiny", "built-in"],
)
def test_the_cost_estimate_is_within_2x_of_the_training_time(sweep: Path | None, overrides: list[str],
                                                             tmp_path: Path) -> None:  # fmt: skip
    """Both are measured in the same run, so the ratio holds on a busy machine too."""
    cfg = load_sweep(sweep, [*overrides, "speed.enabled=false", "compute.enabled=false"])
    res = run_sweep(cfg, tmp_path)
    assert not res.failed and not res.skipped
    df = load_results(res.run_dir)
    secs = df[df["metric"].isin(["estimate_seconds", "adapt_seconds"])]
    table = secs.pivot_table(index="variant", columns="metric", values="value")
    ratio = table["estimate_seconds"] / table["adapt_seconds"]
    assert len(ratio) == 3 and ratio.between(0.5, 2.0).all(), table
