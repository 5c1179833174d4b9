"""`tlbench maps`: TokenLearner maps from stored weights, their figure and the digit-mass number."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from tlbench.cli import app
from tlbench.data.sources import load_splits
from tlbench.errors import ConfigError
from tlbench.quality.probe import checkpoint_name
from tlbench.quality.train import train
from tlbench.report.maps import builtin_images, digit_mass, plot_maps
from tlbench.report.token_maps import from_checkpoint, load_model, token_maps
from tlbench.study.manifest import _variant_record
from tlbench.variants import build_variant, make_variant

runner = CliRunner()


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.Tensor]:
    """tiny + TokenLearner (4 tokens at 1/2), trained 3 steps: its checkpoint and its initial maps."""
    torch.manual_seed(0)
    model = build_variant("tiny", 0.5, 4, num_classes=10)
    before = token_maps(model, builtin_images("digits", 3))
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    train(model, load_splits("digits")[0], steps=3, batch_size=32, lr=3e-2, checkpoint_path=path)
    return path, before


@pytest.mark.parametrize("version", ["1.1", "1.0"])
def test_maps_cover_the_patch_grid(version: str) -> None:
    model = build_variant("tiny", 0.25, 5, version=version, num_classes=10)
    maps = token_maps(model, builtin_images("digits", 3))
    assert maps.shape == (3, 5, 4, 4)  # 32 px / 8 px patches
    if version == "1.1":  # softmax over space: each token's weights sum to 1
        assert torch.allclose(maps.sum((2, 3)), torch.ones(3, 5), atol=1e-5)
    else:  # sigmoid maps, not normalised
        assert ((maps > 0) & (maps < 1)).all()


def test_trained_maps_differ_from_initial(trained: tuple[Path, torch.Tensor]) -> None:
    path, before = trained
    model = load_model(from_checkpoint(path, "tiny", 0.5, 4))
    after = token_maps(model, builtin_images("digits", 3))
    assert after.shape == before.shape
    assert not torch.allclose(after, before, atol=1e-4)
    assert torch.allclose(after.sum((2, 3)), torch.ones(3, 4), atol=1e-5)


def test_digit_mass_prefers_the_digit() -> None:
    images = torch.zeros(1, 1, 32, 32)
    images[..., :16, :16] = 1.0  # the "digit": the top-left quarter
    on = torch.zeros(1, 1, 4, 4)
    on[..., :2, :2] = 0.25  # all of the token's weight on the digit's patches
    uniform = torch.full((1, 1, 4, 4), 1 / 16)
    assert digit_mass(images, on)["mass_on_digit"] == pytest.approx(1.0)
    assert digit_mass(images, uniform)["mass_on_digit"] == pytest.approx(0.25)
    assert digit_mass(images, on)["area_of_digit"] == pytest.approx(0.25)
    assert digit_mass(images, on)["ratio"] == pytest.approx(4.0)


def test_plot_writes_png_and_pdf(tmp_path: Path) -> None:
    maps = torch.rand(2, 3, 4, 4)
    paths = plot_maps(torch.rand(2, 1, 32, 32), maps, tmp_path / "m")
    assert [p.suffix for p in paths] == [".png", ".pdf"]
    assert all(p.stat().st_size > 0 for p in paths)


def test_cli_from_checkpoint(trained: tuple[Path, torch.Tensor], tmp_path: Path) -> None:
    path, _ = trained
    res = runner.invoke(app, ["maps", "--checkpoint", str(path), "-m", "tiny", "--position", "0.5",
                              "--tokens", "4", "--count", "3", "--out", str(tmp_path / "maps")])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "digit mass" in res.output
    assert (tmp_path / "maps.png").stat().st_size > 0 and (tmp_path / "maps.pdf").stat().st_size > 0


def test_cli_from_run_dir_and_image_folder(trained: tuple[Path, torch.Tensor], tmp_path: Path) -> None:
    path, _ = trained
    v = make_variant("tiny", 0.5, 4)
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    base = make_variant("tiny")
    (run / "manifest.json").write_text(json.dumps({"variants": [_variant_record(base), _variant_record(v)],
                                                   "config": {"model": {"img_size": None}}}))  # fmt: skip
    (run / "checkpoints" / checkpoint_name(v, "digits", 3, 0, "random")).write_bytes(path.read_bytes())
    pics = tmp_path / "pics"
    pics.mkdir()
    for i in range(2):
        Image.new("RGB", (40, 30), (60 * i, 100, 200)).save(pics / f"{i}.png")
    res = runner.invoke(app, ["maps", str(run), "--variant", v.name, "--images", str(pics),
                              "--out", str(tmp_path / "mine")])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert (tmp_path / "mine.png").is_file() and (tmp_path / "mine.pdf").is_file()
    res = runner.invoke(app, ["maps", str(run), "--variant", "baseline"])
    assert res.exit_code == 2 and "no TokenLearner" in res.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--checkpoint", "nope.pt", "-m", "tiny", "--position", "0.5"], "not found"),
        (["--checkpoint", "nope.pt", "-m", "tiny"], "baseline"),
        (["--checkpoint", "nope.pt", "-m", "tiny", "--position", "0.5", "--method-typo"], None),
        ([], "RUN_DIR"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], message: str | None) -> None:
    res = runner.invoke(app, ["maps", *args])
    assert res.exit_code == 2
    if message:
        assert message in res.output and "Traceback" not in res.output


def test_empty_image_folder_is_an_error(trained: tuple[Path, torch.Tensor], tmp_path: Path) -> None:
    path, _ = trained
    res = runner.invoke(app, ["maps", "--checkpoint", str(path), "-m", "tiny", "--position", "0.5",
                              "--tokens", "4", "--images", str(tmp_path)])  # fmt: skip
    assert res.exit_code == 2
    assert "no images in" in res.output


def test_baseline_model_has_no_tokenlearner() -> None:
    with pytest.raises(ConfigError, match="no TokenLearner"):
        token_maps(build_variant("tiny"), torch.rand(1, 1, 32, 32))
