"""`tlbench compare-models`: several models' compute in one table and figure."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from tlbench.cli import app
from tlbench.study.compare_models import compare_models, label


def test_rows_cover_variants_then_references() -> None:
    rows = compare_models(["tiny"], [0.5], [4], ["vit_cpu6"])
    assert [label(r) for r in rows] == ["tiny", "tiny + 4 TL at 1/2", "vit_cpu6"]
    assert all(r.gflops == r.gflops_analytic for r in rows)  # every count exact
    assert rows[1].gflops < rows[0].gflops


def test_cli_writes_table_and_figure(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["compare-models", "-m", "tiny", "--positions", "0.5",
                                   "--tokens", "4", "-r", "vit_cpu6", "--out", str(tmp_path)])  # fmt: skip
    assert res.exit_code == 0, res.output
    for name in ("compute.csv", "compute.json", "compute.png", "compute.pdf"):
        assert (tmp_path / name).stat().st_size > 0
    rows = json.loads((tmp_path / "compute.json").read_text())["rows"]
    assert [r["label"] for r in rows][-1] == "vit_cpu6"


def test_unknown_model_is_one_line_and_exit_2() -> None:
    res = CliRunner().invoke(app, ["compare-models", "-m", "vit_nope"])
    assert res.exit_code == 2
    assert "unknown model" in res.output
