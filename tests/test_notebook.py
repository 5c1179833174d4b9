"""The notebook runs top to bottom on a smoke run, through the library only."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from typer.testing import CliRunner

from tlbench.cli import app

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_explore_results_notebook_executes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["sweep", str(ROOT / "sweeps/smoke.toml"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    (run_dir,) = (out / "smoke").iterdir()
    monkeypatch.setenv("TLBENCH_RUN", str(run_dir))
    monkeypatch.setenv("TLBENCH_FIGURES", str(tmp_path / "figures"))
    nb = nbformat.read(ROOT / "notebooks/01_explore_results.ipynb", as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()  # fmt: skip
    assert len(list((tmp_path / "figures").glob("*.png"))) == 5  # with the adaptation figure
