"""The quality stage end to end on the tiny model, and `tlbench probe` through CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from tlbench.cli import app
from tlbench.errors import ConfigError
from tlbench.quality.probe import run_probe, summary_rows
from tlbench.quality.train import BudgetExceeded

FAST = {
    "train_data": "digits",
    "probe_data": ["digits"],
    "batch_size": 16,
    "shots": [1, 3],
    "seeds": 2,
    "init_reference": True,
}
FAST_CLI = [
    "-m",
    "tiny",
    "--position",
    "0.5",
    "--tokens",
    "4",
    "--train-data",
    "digits",
    "--probe-data",
    "digits",
    "--batch-size",
    "16",
    "--shots",
    "1,3",
    "--seeds",
    "2",
    "--init-reference",
]


def test_run_probe_trains_probes_and_reuses_checkpoint(tmp_path: Path) -> None:
    first = run_probe("tiny", 0.5, 4, steps=2, checkpoint_dir=tmp_path, **FAST)
    assert first.variant.name == "p0.5-s4" and first.train is not None and not first.train.loaded
    assert len(first.records) == 2 * 2 * 2  # stages x shots x seeds
    assert {r.stage for r in first.records} == {"init", "trained"}
    assert all(0.0 <= r.accuracy <= 1.0 and r.dataset == "digits" for r in first.records)
    assert len(list(tmp_path.glob("*.pt"))) == 1
    again = run_probe("tiny", 0.5, 4, steps=2, checkpoint_dir=tmp_path, **FAST)
    assert again.train is not None and again.train.loaded
    assert again.records == first.records  # same seeds, same weights: same accuracies
    (row, _) = summary_rows(first)
    assert {"init_mean", "trained_std"} <= set(row)


def test_zero_steps_probes_initial_features_only() -> None:
    result = run_probe("tiny", None, steps=0, **FAST)
    assert result.train is None and {r.stage for r in result.records} == {"init"}
    assert result.variant.is_baseline


def test_over_budget_is_skipped_with_the_estimate() -> None:
    with pytest.raises(BudgetExceeded, match=r"estimated at .* over the budget of 0 s$"):
        run_probe("tiny", 0.5, 4, steps=1000, budget_s=1e-6, **FAST)


def test_cli_probe_over_budget_names_its_own_option() -> None:
    result = CliRunner().invoke(app, ["probe", *FAST_CLI, "--steps", "1000", "--budget", "0.000001"])
    assert result.exit_code == 2 and "run it anyway with --budget 0" in result.output, result.output


def test_unknown_quality_setting_is_one_line() -> None:
    with pytest.raises(ConfigError, match="unknown quality setting in \\['stepz'\\]"):
        run_probe("tiny", 0.5, 4, stepz=3)


def test_cli_probe_json() -> None:
    result = CliRunner().invoke(app, ["probe", *FAST_CLI, "--steps", "2", "--format", "json"])
    assert result.exit_code == 0, result.output
    start = result.stdout.index("[")
    records = json.loads(result.stdout[start:])
    assert len(records) == 8 and records[0]["variant"] == "p0.5-s4"


def write_folder(root: Path, n: int) -> None:
    for c in ("cat", "dog"):
        (root / c).mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(root / c / f"{i}.png")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--probe-data", "folder:/no/such/dir"], "data folder not found"),
        (["--train-data", "cifar11"], "unknown dataset 'cifar11'"),
        (["--position", "1.5"], "--position must be a number in [0, 1], got 1.5"),
        (["--shots", "1,x"], "--shots"),
    ],
)
def test_cli_bad_input_is_one_line(args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["probe", *FAST_CLI, "--steps", "0", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_cli_too_few_images_per_class(tmp_path: Path) -> None:
    write_folder(tmp_path, 4)  # 80/20 split: 3 train images per class
    args = ["probe", *FAST_CLI, "--probe-data", str(tmp_path), "--shots", "1,5", "--steps", "0"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "class 'cat' has 3 train images, fewer than the 5 shots" in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


def test_hopeless_budget_is_refused_from_flops_before_building(monkeypatch) -> None:
    import tlbench.quality.probe

    def no_build(*args, **kwargs):
        raise AssertionError("the FLOP floor must refuse before any model is built")

    monkeypatch.setattr(tlbench.quality.probe, "build_model", no_build)
    with pytest.raises(BudgetExceeded, match=r"from its FLOPs.*over the budget"):
        run_probe("vit_b16", 0.25, 8, steps=400, budget_s=60, device="cpu")


@pytest.mark.parametrize("lam", ["-1", "0", "nan"])
def test_cli_refuses_a_ridge_lambda_that_is_not_positive(lam: str) -> None:
    result = CliRunner().invoke(app, ["probe", "-m", "tiny", "--steps", "0", "--l2-reg", lam,
                                      "--probe-data", "digits", "--shots", "1"])  # fmt: skip
    assert result.exit_code == 2 and "--l2-reg must be a" in result.output and "in (0, " in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1
