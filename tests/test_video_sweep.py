"""A video sweep end to end: every stage on clips, the maps over time, resume, figures, check."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from tlbench.cli import app
from tlbench.study.check import new_baseline

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]
SETTINGS = [
    "--model", "vivit_cpu", "--positions", "0.5", "--tokens", "4", "--set", "grid.methods=['tokenlearner','random']",
    "--set", "name=video", "--set", "speed.device=cpu", "--set", "speed.batch_size=2", "--set", "speed.time_cap_s=1",
    "--set", "quality.train_data=moving_mnist:frames=4", "--set", "quality.probe_data=['moving_mnist:frames=4']",
    "--set", "quality.steps=3", "--set", "quality.batch_size=8", "--set", "quality.shots=[1]",
    "--set", "quality.seeds=1", "--set", "quality.workers=1", "--set", "quality.device=cpu",
]  # fmt: skip


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("video")
    result = runner.invoke(app, ["sweep", *SETTINGS, "--out", str(out)])
    assert result.exit_code == 0, result.output
    return next((out / "video").iterdir())


def test_every_stage_runs_on_clips(run_dir: Path) -> None:
    rows = pd.read_json(run_dir / "rows.jsonl", lines=True)
    assert set(rows["variant"]) == {"baseline", "p0.5-s4", "random-p0.5-s4"}
    for stage, metric in [
        ("compute", "gflops"),
        ("speed", "throughput"),
        ("quality", "fewshot_acc"),
    ]:
        got = rows[(rows["stage"] == stage) & (rows["metric"] == metric)]
        assert set(got["variant"]) == {"baseline", "p0.5-s4", "random-p0.5-s4"}, stage
    acc = rows[rows["metric"] == "fewshot_acc"]["value"]
    assert acc.between(0, 1).all()
    # the model reads 8 frames; the 4-frame clips are resampled to them
    assert (run_dir / "checkpoints").is_dir()


def test_maps_over_time_and_tracking_scores(run_dir: Path) -> None:
    figures = run_dir / "figures"
    assert (figures / "maps-p0.5-s4.png").stat().st_size > 0 and (
        figures / "maps-p0.5-s4.pdf"
    ).is_file()
    assert not (figures / "maps-random-p0.5-s4.png").exists()  # random drop has no maps
    tracking = pd.read_csv(figures / "tracking.csv")
    assert list(tracking["token"]) == [0, 1, 2, 3] and set(tracking["variant"]) == {"p0.5-s4"}
    assert (tracking["tracking_score"] >= 0).all() and (tracking["clips"] == 100).all()
    redrawn = runner.invoke(app, ["maps", str(run_dir), "--all"])
    assert redrawn.exit_code == 0, redrawn.output
    assert pd.read_csv(figures / "tracking.csv").equals(tracking)


def test_the_figures_say_per_clip(run_dir: Path) -> None:
    figures = {p.stem for p in (run_dir / "figures").glob("*.png")}
    assert {"accuracy_vs_position", "gflops_vs_position", "accuracy_vs_gflops"} <= figures


def test_resume_redoes_only_what_is_missing(run_dir: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    units = (copy / "units.jsonl").read_text().splitlines()
    kept = [u for u in units if not ('"random-p0.5-s4"' in u and '"quality"' in u)]
    (copy / "units.jsonl").write_text("\n".join(kept) + "\n")
    before = pd.read_json(copy / "rows.jsonl", lines=True)
    result = runner.invoke(app, ["sweep", "--resume", str(copy)])
    assert result.exit_code == 0, result.output
    after = pd.read_json(copy / "rows.jsonl", lines=True)
    quality = after[(after["stage"] == "quality") & (after["variant"] == "random-p0.5-s4")]
    assert len(after) == len(before) and len(quality) == len(
        before[(before["stage"] == "quality") & (before["variant"] == "random-p0.5-s4")]
    )


def test_check_gates_video_compute(tmp_path: Path) -> None:
    path = tmp_path / "video.json"
    new_baseline(
        path,
        [
            {
                "model": "vivit_cpu",
                "positions": [0.5],
                "tokens": [8],
                "method": "random",
                "frames": 4,
            }
        ],
    )
    doc = json.loads(path.read_text())
    assert set(doc["models"][0]["variants"]) == {"baseline", "random-p0.5-s8"}
    assert runner.invoke(app, ["check", "--baseline", str(path)]).exit_code == 0
    doc["models"][0]["variants"]["random-p0.5-s8"]["flops_ratio"] = (
        0.1  # claims more savings than real
    )
    path.write_text(json.dumps(doc))
    assert runner.invoke(app, ["check", "--baseline", str(path)]).exit_code == 1
