"""CLI: models/flops output formats, one-line errors with exit 2, fast --help."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from tlbench.cli import app

runner = CliRunner()


def test_flops_json_records() -> None:
    result = runner.invoke(app, ["flops", "-m", "tiny", "--positions", "0,0.5", "--tokens", "4", "--format", "json"])
    assert result.exit_code == 0, result.output
    records = json.loads(result.output)
    assert [r["variant"] for r in records] == ["baseline", "p0-s4", "p0.5-s4"]
    keys = {"model", "variant", "position", "block_index", "num_tokens", "img_size", "gflops", "params_m"}
    assert keys <= set(records[0])
    assert records[0]["position"] is None and records[0]["block_index"] is None
    assert records[2]["block_index"] == 2 and records[2]["gflops"] < records[0]["gflops"]


def test_flops_table_and_csv() -> None:
    table = runner.invoke(app, ["flops", "-m", "tiny", "--tokens", "4"])
    assert table.exit_code == 0 and "× baseline" in table.output and "p1-s4" in table.output
    csv = runner.invoke(app, ["flops", "-m", "tiny", "--tokens", "4", "--no-baseline", "--format", "csv"])
    assert csv.exit_code == 0 and csv.output.splitlines()[0].startswith("model,variant")
    assert len(csv.output.strip().splitlines()) == 1 + 5


def test_models_lists_aliases() -> None:
    result = runner.invoke(app, ["models"])
    assert result.exit_code == 0 and "vit_b16" in result.output and "vit_cpu12" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["flops", "-m", "vit_b61"], "did you mean vit_b16"),
        (["flops", "-m", "tiny", "--positions", "1.5"], "[0, 1]"),
        (["flops", "-m", "tiny", "--positions", "0.2,x"], "--positions must be a number in [0, 1], got 'x'"),
        (["flops", "-m", "tiny", "--tokens", "0"], "--tokens must be an integer in [1, 4096], got 0"),
        (["flops", "-m", "tiny", "--tokens", "17"], "more than the 16 patch tokens"),
        (["flops", "-m", "tiny", "--img-size", "36"], "not divisible"),
        (["flops", "-m", "tiny", "--format", "xml"], "--format"),
        (["flops", "-m", "tiny", "--version", "2.0"], "version"),
        (["flops", "-m", "resnet50"], "not a VisionTransformer"),
        (["probe", "-m", "tiny", "--train-data", "folder:/nonexistent/x"], "/nonexistent/x"),
        (["bench", "-m", "tiny", "--device", "tpu"], "device"),
    ],
)
def test_bad_input_is_one_line_exit_2(args: list[str], message: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and message in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_help_does_not_import_torch() -> None:
    code = "import sys; from tlbench.cli import app; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_python_dash_m_runs_the_cli() -> None:
    out = subprocess.run([sys.executable, "-m", "tlbench", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "sweep" in out.stdout and "check" in out.stdout
