"""Video maps over time: per-time-step maps, box masks, tracking scores, the figure, the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from tlbench.cli import app
from tlbench.data.sources import load_splits
from tlbench.quality.train import train
from tlbench.report.token_maps import token_maps
from tlbench.report.tracking import (
    box_masks,
    builtin_clips,
    clip_tracking,
    plot_maps_over_time,
    tracking_scores,
)
from tlbench.variants import build_model, make_variant

runner = CliRunner()


pytestmark = pytest.mark.usefixtures("one_thread")


def test_maps_per_time_step_equal_the_learner_on_each_step() -> None:
    torch.manual_seed(0)
    model = build_model(make_variant("vivit_cpu", 0.5, 8), num_classes=10)
    clips = torch.rand(2, 1, 8, 32, 32)
    maps = token_maps(model, clips)  # [B, T, S, h, w]
    assert maps.shape == (2, 4, 8, 8, 8)
    assert torch.allclose(maps.sum((-2, -1)), torch.ones(2, 4, 8), atol=1e-5)  # softmax over space
    seen = []
    learner = model.blocks[4].tokenlearner.reduce  # the TokenLearner inside PerTimeStep
    handle = model.blocks[4].register_forward_hook(lambda m, i, o: seen.append(i[0]))
    with torch.no_grad():
        model(((clips - 0.5) / 0.5).expand(-1, 3, -1, -1, -1))
    handle.remove()
    x = seen[0]  # [B, T*N, C] entering the layer
    for t in range(4):
        with torch.no_grad():
            expected = learner.attention(x[:, t * 64 : (t + 1) * 64])  # [B, S, N]
        assert torch.allclose(maps[:, t].flatten(2), expected, atol=1e-6)


def test_box_masks_are_the_union_over_each_tubelet() -> None:
    boxes = np.array([[[0, 0, 2, 2], [4, 4, 6, 6], [1, 1, 2, 2], [1, 1, 2, 2]]])  # [B=1, F=4, 4]
    masks = box_masks(boxes, frames=4, tubelet=2, size=(8, 8))
    assert masks.shape == (1, 2, 8, 8)
    assert masks[0, 0].sum() == 8 and masks[0, 0, 0, 0] == 1 and masks[0, 0, 5, 5] == 1
    assert masks[0, 1].sum() == 1 and masks[0, 1, 1, 1] == 1


def test_tracking_score_is_one_for_a_uniform_map_and_one_over_share_inside() -> None:
    masks = torch.zeros(1, 1, 32, 32)
    masks[0, 0, 8:16, 4:16] = 1  # 3 x 2 patches of 4 px, box share 96 / 1024
    uniform = torch.full((1, 1, 1, 8, 8), 1 / 64)
    assert tracking_scores(uniform, masks).item() == pytest.approx(1.0)
    inside = torch.zeros(1, 1, 1, 8, 8)
    inside[0, 0, 0, 2, 1] = 1.0  # one patch wholly inside the box
    assert tracking_scores(inside, masks).item() == pytest.approx(1024 / 96)
    outside = torch.zeros(1, 1, 1, 8, 8)
    outside[0, 0, 0, 7, 7] = 1.0
    assert tracking_scores(outside, masks).item() == 0.0


def test_builtin_clips_one_group_per_digit() -> None:
    clips, boxes, labels = builtin_clips("moving_mnist", 3, per_class=2)
    assert clips.shape == (6, 1, 8, 32, 32) and boxes.shape == (6, 8, 4)
    assert labels.tolist() == [0, 0, 1, 1, 2, 2]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """vivit_cpu with TokenLearner at p = 1/2, trained a few steps on moving_mnist."""
    path = tmp_path_factory.mktemp("ckpt") / "vivit_cpu-p0.5-s8.pt"
    torch.manual_seed(0)
    model = build_model(make_variant("vivit_cpu", 0.5, 8), num_classes=10)
    train(model, load_splits("moving_mnist")[0], steps=3, batch_size=8, checkpoint_path=path)
    return path


def test_cli_maps_over_time_from_a_checkpoint(trained: Path, tmp_path: Path) -> None:
    out = tmp_path / "m"
    result = runner.invoke(app, ["maps", "--checkpoint", str(trained), "-m", "vivit_cpu", "--position", "0.5",
                                 "--count", "2", "--out", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "tracking score" in result.output and "best token" in result.output
    assert (tmp_path / "m.png").stat().st_size > 0 and (tmp_path / "m.pdf").stat().st_size > 0


def test_cli_maps_of_a_video_model_refuse_an_image_folder(trained: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["maps", "--checkpoint", str(trained), "-m", "vivit_cpu", "--position", "0.5",
                                 "--images", str(tmp_path)])  # fmt: skip
    assert result.exit_code == 2 and result.output.startswith("error: --images is for image models")


def test_plot_maps_over_time_writes_png_and_pdf(tmp_path: Path) -> None:
    clips, boxes, labels = builtin_clips("moving_mnist", 2, per_class=1)
    maps = torch.rand(2, 4, 3, 8, 8)
    masks = box_masks(boxes, 8, 2, (32, 32))
    paths = plot_maps_over_time(
        clips, masks, maps, np.array([1.0, 2.0, 3.0]), tmp_path / "f", "t", labels
    )
    assert [p.suffix for p in paths] == [".png", ".pdf"] and all(
        p.stat().st_size > 0 for p in paths
    )


def test_clip_tracking_shapes(trained: Path) -> None:
    from tlbench.report.token_maps import from_checkpoint, load_model

    model = load_model(from_checkpoint(trained, "vivit_cpu", 0.5, 8))
    clips, boxes, _ = builtin_clips("moving_mnist", 2, per_class=1)
    maps, masks, scores = clip_tracking(model, clips, boxes)
    assert (
        maps.shape == (2, 4, 8, 8, 8)
        and masks.shape == (2, 4, 32, 32)
        and scores.shape == (2, 4, 8)
    )
    assert torch.all(scores >= 0)
