"""The backbone contract, over every name the registry builds (backbones/registry.py and the video
models): it builds, is supported, forwards to [B, classes], counts exactly (fvcore = analytic),
loads its own checkpoint, and says whether it takes images or clips. A new backbone is a row in
the registry; this test then covers it without being edited."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tlbench.backbones.registry import ALIASES, CUSTOM_MODELS, REPATCHED
from tlbench.backbones.support import NO_INIT, unsupported_reason
from tlbench.backbones.video import IMAGE_SOURCES, VIDEO_MODELS, is_video
from tlbench.backbones.vit import create, load_backbone, model_info, resolve_model
from tlbench.measure.flops import analytic_flops, count_flops, flopcounter_macs
from tlbench.measure.throughput import input_size_of
from tlbench.variants import build_model, make_variant

SMALL = [*CUSTOM_MODELS, "vivit_cpu"]  # built for real: seconds on a CPU
LARGE = [*ALIASES, *REPATCHED, *(n for n in VIDEO_MODELS if n != "vivit_cpu")]  # meta builds only
REGISTERED = SMALL + LARGE


def test_every_registered_name_is_covered_once() -> None:
    assert len(set(REGISTERED)) == len(REGISTERED) == len(CUSTOM_MODELS) + len(ALIASES) + len(REPATCHED) + len(VIDEO_MODELS)


@pytest.mark.parametrize("name", REGISTERED)
def test_builds_on_meta_and_is_supported(name: str) -> None:
    info = model_info(name)
    with torch.device("meta"):
        model = create(resolve_model(name), img_size=None, pretrained=False, num_classes=10, depth=1, **NO_INIT)
    assert unsupported_reason(model) is None
    assert info.is_video == is_video(model) == (name in VIDEO_MODELS)
    assert info.num_patches % info.time_steps == 0 and info.depth >= 1


@pytest.mark.parametrize("name", SMALL)
def test_forward_count_and_checkpoint(name: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    info = model_info(name)
    base = build_model(make_variant(name), num_classes=7)
    x = torch.randn(2, *input_size_of(base))
    with torch.no_grad():
        out = base(x)
    assert out.shape == (2, 7)
    for v in (make_variant(name), make_variant(name, 0.5, 4)):
        assert count_flops(build_model(v), variant=v).flops == analytic_flops(info, v), v.name
    path = tmp_path / "backbone.pt"
    if info.is_video:  # a video model takes its image source's checkpoint and inflates it
        torch.save(build_model(make_variant(IMAGE_SOURCES[name]), num_classes=7).state_dict(), path)
        load_backbone(build_model(make_variant(name), num_classes=7), path)
        return
    torch.save(base.state_dict(), path)
    again = build_model(make_variant(name), num_classes=7)
    load_backbone(again, path)
    with torch.no_grad():
        torch.testing.assert_close(again(x), out)


@pytest.mark.slow
@pytest.mark.parametrize("name", LARGE)
def test_large_models_count_as_the_closed_form(name: str) -> None:
    """FlopCounterMode on a meta copy (matmuls only) equals the closed form without norms."""
    info = model_info(name)
    v = make_variant(name)
    with torch.device("meta"):
        model = create(resolve_model(name), img_size=None, pretrained=False, num_classes=info.num_classes, **NO_INIT)
    if is_video(model):
        pytest.skip("FlopCounterMode's meta pass takes images; video counts are checked in test_video.py")
    assert flopcounter_macs(model) == analytic_flops(info, v, norms=False)
