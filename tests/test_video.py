"""Video: the ViViT backbone, reducers per time step, exact FLOPs, the paper's ViViT-L numbers,
inflation of image weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from timm.layers import resample_abs_pos_embed
from timm.models.vision_transformer import VisionTransformer
from typer.testing import CliRunner

from tlbench.backbones.registry import CUSTOM_MODELS
from tlbench.backbones.video import IMAGE_SOURCES, TubeletEmbed, inflate, video_pos_embed
from tlbench.backbones.vit import model_info, pre_logits
from tlbench.cli import app
from tlbench.errors import ConfigError
from tlbench.measure.flops import analytic_flops, count_flops, count_variants
from tlbench.reducers import REDUCERS
from tlbench.reducers.base import PerTimeStep
from tlbench.reducers.modules import TokenLearner
from tlbench.variants import build_model, build_sharing, make_variant, make_variants

runner = CliRunner()


pytestmark = pytest.mark.usefixtures("one_thread")


def test_vivit_cpu_geometry_and_time_major_tokens() -> None:
    info = model_info("vivit_cpu")
    assert (info.time_steps, info.tubelet, info.frames, info.spatial_patches) == (4, 2, 8, 64)
    assert info.num_patches == 256 and info.num_prefix_tokens == 0 and not info.class_token
    embed = TubeletEmbed(32, 4, 3, 8, frames=8, tubelet=2)
    x = torch.zeros(1, 3, 8, 32, 32)
    x[:, :, 2:4] = 1.0  # only time step 1 differs from the others
    tokens = embed(x)  # [1, T*h*w, C]
    assert tokens.shape == (1, 256, 8)
    changed = (tokens - embed(torch.zeros_like(x))).abs().sum(-1)[0] > 0
    assert changed[64:128].all() and not changed[:64].any() and not changed[128:].any()


def test_pos_embed_is_spatial_tiled_plus_temporal() -> None:
    pe = video_pos_embed(4, (8, 8), 48).reshape(4, 64, 48)
    spatial = pe - pe[:, :1]  # removes the temporal term: the same for every time step
    assert torch.allclose(spatial, spatial[:1].expand_as(spatial), atol=1e-6)
    assert not torch.allclose(pe[0], pe[1])


@pytest.mark.parametrize("frames", [2, 4, 8])
@pytest.mark.parametrize("version", ["1.1", "1.0"])
def test_shapes_at_every_position_token_count_and_time_steps(frames: int, version: str) -> None:
    info = model_info("vivit_cpu", None, frames)
    t = frames // 2
    x = torch.randn(2, 3, frames, 32, 32)
    variants = make_variants("vivit_cpu", None, [1, 8], version=version, frames=frames)
    models = build_sharing(variants, frames=frames)  # one backbone, a reducer per variant
    for v in variants:
        model = models[v.name]
        with torch.no_grad():
            feats = model.forward_features(x)
            logits = model(x)
        n = info.num_patches if v.is_baseline else t * v.num_tokens  # T*S from block k on
        assert feats.shape == (2, n, 48), v.name
        assert logits.shape == (2, 1000)


@pytest.mark.parametrize("version", ["1.1", "1.0"])
def test_per_time_step_equals_frame_by_frame(version: str) -> None:
    torch.manual_seed(0)
    learner = TokenLearner(48, 8, version, 64, (8, 8)).eval()
    x = torch.randn(3, 4 * 64, 48)  # [B, T*N, C], time-major
    with torch.no_grad():
        joint = PerTimeStep(learner, 4)(x)  # [B, T*S, C]
        steps = [learner(x[:, i * 64 : (i + 1) * 64]) for i in range(4)]  # each [B, S, C]
    assert joint.shape == (3, 32, 48)
    assert torch.allclose(joint, torch.cat(steps, dim=1), atol=1e-6)


def test_built_model_runs_the_learner_per_time_step() -> None:
    torch.manual_seed(0)
    model = build_model(make_variant("vivit_cpu", 0.5, 8))
    layer = model.blocks[4]
    learner = layer.tokenlearner.reduce
    x = torch.randn(2, 256, 48)
    with torch.no_grad():
        expected = torch.cat([learner(x[:, i * 64 : (i + 1) * 64]) for i in range(4)], dim=1)
        assert torch.allclose(layer(x), expected, atol=1e-6)


def test_random_drop_keeps_s_tokens_from_each_time_step() -> None:
    model = build_model(make_variant("vivit_cpu", 0.0, 8, method="random"))
    steps = torch.arange(4).repeat_interleave(64).float()  # each token carries its time step
    x = steps[None, :, None].expand(2, 256, 48)
    with torch.no_grad():
        out = model.blocks[0](x)  # the random drop layer, before block 0
    assert out.shape == (2, 32, 48)
    assert torch.equal(out[..., 0], torch.arange(4).repeat_interleave(8).float().expand(2, 32))


def test_fvcore_equals_analytic_exactly_on_the_small_video_model() -> None:
    variants = make_variants("vivit_cpu", [0, 0.25, 0.5, 1], [1, 8, 16])
    variants += make_variants("vivit_cpu", [0.25, 0.75], [4, 16], version="1.0", baseline=False)
    variants += make_variants("vivit_cpu", [0, 0.5], [8], method="random", baseline=False)
    rows = count_variants(variants)
    for row in rows:
        assert round(row.gflops * 1e9) == round(row.gflops_analytic * 1e9), row.variant
    stem = model_info("vivit_cpu").num_patches * 2 * 4 * 4 * 3 * 48
    model = build_model(variants[0])
    rep = count_flops(model)  # the whole model in one trace: the 3-D conv stem is counted
    assert rep.by_operator["conv"] == stem
    assert rep.flops == round(rows[0].gflops * 1e9)


@pytest.mark.parametrize("version", ["1.1", "1.0"])
def test_fuser_shapes_at_every_position(version: str) -> None:
    x = torch.randn(2, 3, 4, 32, 32)  # 2 time steps
    variants = make_variants("vivit_cpu", None, [1, 8], version=version, fuser=True, frames=4)
    assert [v.block_index for v in variants[1::2]] == list(range(8))  # every block but p = 1
    models = build_sharing(variants, frames=4)
    for v in variants:
        with torch.no_grad():
            feats = models[v.name].forward_features(x)
            logits = models[v.name](x)
        assert feats.shape == (2, 2 * 64, 48), v.name  # fused back: T*N tokens reach the pool
        assert logits.shape == (2, 1000)
    with pytest.raises(ConfigError, match="no block is left to fuse around"):
        make_variant("vivit_cpu", 1.0, 8, fuser=True)


def test_fuser_learns_and_fuses_per_time_step_around_a_joint_block() -> None:
    torch.manual_seed(0)
    model = build_model(make_variant("vivit_cpu", 0.5, 8, fuser=True))
    layer = model.blocks[4]
    with torch.no_grad():  # the zero init makes the fuser output zero: give it weights
        layer.fuser.mix.weight.normal_(0, 0.5)
    seen: dict[str, torch.Tensor] = {}

    def keep(module: torch.nn.Module, args: tuple, out: torch.Tensor) -> None:
        seen.update(block_in=args[0], block_out=out)

    layer.block.register_forward_hook(keep)
    x = torch.randn(2, 256, 48)  # [B, T*N, C]
    with torch.no_grad():
        out = layer(x)
        frames = [x[:, i * 64 : (i + 1) * 64] for i in range(4)]  # each [B, N, C]
        learned = torch.cat([layer.tokenlearner(f) for f in frames], dim=1)  # [B, T*S, C]
        torch.testing.assert_close(seen["block_in"], learned, atol=1e-6, rtol=1e-6)
        y = seen["block_out"]  # [B, T*S, C]: one block over all 32 tokens, not 4 blocks over 8
        fused = [layer.fuser(y[:, i * 8 : (i + 1) * 8], f) + f for i, f in enumerate(frames)]
        torch.testing.assert_close(out, torch.cat(fused, dim=1), atol=1e-6, rtol=1e-6)
        apart = torch.cat([layer.block(learned[:, i * 8 : (i + 1) * 8]) for i in range(4)], 1)
        assert not torch.allclose(y, apart, atol=1e-3)  # attention is joint over time


def test_fvcore_equals_analytic_exactly_with_the_fuser_on_video() -> None:
    variants = make_variants("vivit_cpu", [0, 0.5, 0.875], [1, 8], fuser=True)
    v10 = dict(version="1.0", fuser=True, baseline=False)
    variants += make_variants("vivit_cpu", [0.25, 0.75], [4, 16], **v10)
    for row in count_variants(variants):
        assert round(row.gflops * 1e9) == round(row.gflops_analytic * 1e9), row.variant


def test_vivit_l_matches_the_papers_compute() -> None:
    info = model_info("vivit_l16x2")
    assert (info.time_steps, info.spatial_patches, info.num_patches) == (16, 196, 3136)
    base = analytic_flops(info, make_variant("vivit_l16x2")) / 1e9
    tl = analytic_flops(info, make_variant("vivit_l16x2", 0.5, 16)) / 1e9
    assert make_variant("vivit_l16x2", 0.5, 16).block_index == 12
    assert abs(base / 1436 - 1) < 0.01 and abs(tl / 761 - 1) < 0.01
    assert abs(tl / base - 0.53) < 0.005


@pytest.mark.slow
def test_vivit_l_fvcore_equals_analytic() -> None:
    rows = count_variants([make_variant("vivit_l16x2"), make_variant("vivit_l16x2", 0.5, 16)])
    assert [round(r.gflops * 1e9) for r in rows] == [round(r.gflops_analytic * 1e9) for r in rows]


def test_reducers_that_cannot_act_per_time_step_refuse_video() -> None:
    per_step = {name for name, r in REDUCERS.items() if getattr(r, "per_time_step", False)}
    assert per_step == {"tokenlearner", "random"}
    for method in sorted(set(REDUCERS) - per_step):
        with pytest.raises(ConfigError, match="cannot act per time step"):
            make_variant("vivit_cpu", 0.5, 8, method=method, params={"r": 2} if method == "tome_r" else None)
    with pytest.raises(ConfigError, match="per time step"):
        make_variant("vivit_cpu", 0.5, 65)  # 64 patches per time step


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--frames", "7"], "tubelet time size 2"),
        (["--frames", "0"], "--frames must be an integer in [1, 256], got 0"),
        (["--img-size", "30"], "not divisible"),
        (["--method", "pool"], "cannot act per time step"),
    ],
)
def test_bad_video_input_is_one_line_and_exit_2(args: list[str], message: str) -> None:
    result = runner.invoke(app, ["flops", "-m", "vivit_cpu", "--positions", "0.5", "--tokens", "8", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_frames_on_an_image_model_is_refused() -> None:
    result = runner.invoke(app, ["flops", "-m", "tiny", "--frames", "8"])
    assert result.exit_code == 2 and "image model" in result.output


@pytest.mark.parametrize(("extra", "name"), [([], "p0.5-s8"), (["--fuser"], "p0.5-s8-fuser")])
def test_cli_flops_on_video_with_frames(extra: list[str], name: str) -> None:
    result = runner.invoke(app, ["flops", "-m", "vivit_cpu", "--frames", "4", "--positions", "0.5",
                                 "--tokens", "8", "--format", "csv", *extra])  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 3 and name in lines[2]


SWEEP = ["sweep", "--model", "vivit_cpu", "--positions", "0.5", "--tokens", "8"]


def test_sweep_on_video_with_image_data_is_one_line(tmp_path) -> None:
    refused = runner.invoke(app, [*SWEEP, "--out", str(tmp_path)])  # the default data: mnist images
    assert refused.exit_code == 2, refused.output
    assert refused.output.strip() == ("error: mnist holds images, but vivit_cpu is a video model: "
                                      "give it clips (moving_mnist, videos:PATH)")  # fmt: skip
    assert not any(tmp_path.iterdir())


def test_image_model_with_clips_is_one_line(tmp_path) -> None:
    args = ["sweep", "--set", "quality.probe_data=['moving_mnist']", "--out", str(tmp_path)]
    refused = runner.invoke(app, args)
    assert refused.exit_code == 2, refused.output
    assert "moving_mnist holds video clips, but vit_cpu6 is an image model" in refused.output
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_sweep_on_video_runs_the_compute_stage(tmp_path) -> None:
    args = [*SWEEP, "--out", str(tmp_path)]
    ok = runner.invoke(app, [*args, "--set", "name=v", "--set", "speed.enabled=false",
                             "--set", "quality.enabled=false"])  # fmt: skip
    assert ok.exit_code == 0, ok.output
    rows = (next((tmp_path / "v").iterdir()) / "results.csv").read_text()
    assert "vivit_cpu" in rows and "p0.5-s8" in rows


def _image_vit(**kw) -> VisionTransformer:
    """vivit_cpu's image source as tlbench builds it (GAP head, no class token), every weight random."""
    torch.manual_seed(0)
    model = VisionTransformer(**{**CUSTOM_MODELS["vit_cpu8"], "num_classes": 10, "global_pool": "avg",
                                 "fc_norm": False, **kw})  # fmt: skip
    with torch.no_grad():
        for p in model.parameters():  # jax init zeros the biases: make every copied tensor count
            p.normal_(0, 0.2)
    return model.eval()


@pytest.fixture
def image_checkpoint(tmp_path: Path) -> tuple[VisionTransformer, Path]:
    model = _image_vit()
    path = tmp_path / "vit_cpu8.pth"
    torch.save(model.state_dict(), path)
    return model, path


def _inflated(image: VisionTransformer, init: str = "central", **kw) -> torch.nn.Module:
    video = build_model(make_variant("vivit_cpu"), num_classes=5, **kw)
    inflate(image.state_dict(), video, init)
    return video


def test_every_video_model_names_an_image_source_of_its_geometry() -> None:
    for video, image in IMAGE_SOURCES.items():
        v, i = model_info(video), model_info(image)
        assert (v.depth, v.embed_dim, v.num_heads, v.mlp_hidden, v.patch_size, v.img_size) == (
            i.depth, i.embed_dim, i.num_heads, i.mlp_hidden, i.patch_size, i.img_size)  # fmt: skip


@pytest.mark.parametrize("init", ["central", "average"])
def test_inflated_tubelet_embeds_frames_as_the_image_model(init: str) -> None:
    image = _image_vit()
    video = _inflated(image, init)
    clip = torch.randn(2, 3, 8, 32, 32)
    if init == "average":  # only a clip that is still in time embeds as its frame
        clip = clip[:, :, :1].expand_as(clip)
    with torch.no_grad():
        tokens = video.patch_embed(clip).reshape(2, 4, 64, 48)  # [B, T, h*w, D]
        for t in range(4):  # "central": time step t sees frame 2t + 1 of its tubelet (2t, 2t + 1)
            frame = image.patch_embed(clip[:, :, 2 * t + 1])  # [B, h*w, D]
            torch.testing.assert_close(tokens[:, t], frame, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("class_token", [False, True])
def test_inflation_copies_blocks_norm_and_tiles_the_pos_embed(class_token: bool) -> None:
    image = _image_vit(class_token=class_token)
    video = _inflated(image)
    own, src = video.state_dict(), image.state_dict()
    copied = [k for k in src if k.startswith(("blocks.", "norm.", "patch_embed.proj.bias"))]
    assert len(copied) == 8 * 12 + 3
    for key in copied:
        assert torch.equal(own[key], src[key]), key
    grid = src["pos_embed"][:, 1:] if class_token else src["pos_embed"]  # [1, 64, D]
    assert torch.equal(own["pos_embed"], grid.repeat(1, 4, 1))  # tiled over T = 4, time-major
    assert own["head.weight"].shape == (5, 48) and "cls_token" not in own  # fresh head, GAP


def test_inflated_model_on_a_still_clip_pools_as_the_image_model() -> None:
    image = _image_vit()
    video = _inflated(image)
    x = torch.randn(3, 3, 32, 32)
    clip = x[:, :, None].expand(3, 3, 8, 32, 32)  # every frame the same image
    with torch.no_grad():  # T copies of each key: joint attention = the image's; GAP over T = one
        torch.testing.assert_close(pre_logits(video, clip), pre_logits(image, x), atol=1e-5, rtol=0)


def test_inflation_resamples_the_spatial_grid(image_checkpoint) -> None:
    image, path = image_checkpoint
    video = build_model(make_variant("vivit_cpu", img_size=64), img_size=64, checkpoint_path=path)
    grid = resample_abs_pos_embed(image.pos_embed.detach(), [16, 16], [8, 8], num_prefix_tokens=0)
    torch.testing.assert_close(video.pos_embed.detach(), grid.repeat(1, 4, 1))


def test_a_checkpoint_of_the_source_inflates_through_build_model(image_checkpoint) -> None:
    image, path = image_checkpoint
    model = build_model(make_variant("vivit_cpu", 0.5, 8), checkpoint_path=path)  # reducer after
    assert torch.equal(model.blocks[0].attn.qkv.weight, image.blocks[0].attn.qkv.weight)
    # the TokenLearner is block 4: the image's block 4 is now block 5
    assert torch.equal(model.blocks[5].mlp.fc1.weight, image.blocks[4].mlp.fc1.weight)


def test_a_checkpoint_that_does_not_fit_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "tiny.pth"
    torch.save(VisionTransformer(**CUSTOM_MODELS["tiny"], num_classes=10).state_dict(), path)
    with pytest.raises(ConfigError) as err:
        build_model(make_variant("vivit_cpu"), checkpoint_path=path)
    message = str(err.value)
    assert "width 64, not 48; depth 4, not 8; patch (8, 8), not (4, 4)" in message
    assert len(message.splitlines()) == 1
    with pytest.raises(ConfigError, match="inflation init must be one of central, average"):
        inflate(_image_vit().state_dict(), build_model(make_variant("vivit_cpu")), "mean")


def test_hub_inflation_without_network_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(name: str, pretrained: bool = False, **kw):
        raise OSError("we cannot find the requested files in the local cache")

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(ConfigError) as err:
        build_model(make_variant("vivit_b16x2"), pretrained=True)
    message = "vivit_b16x2 inflates vit_base_patch16_224's weights; could not load pretrained"
    assert str(err.value).startswith(message) and len(str(err.value).splitlines()) == 1
    with pytest.raises(ConfigError, match="vivit_cpu inflates vit_cpu8, which has no hub weights"):
        build_model(make_variant("vivit_cpu"), pretrained=True)


PROBE = ["probe", "-m", "vivit_cpu", "--probe-data", "moving_mnist", "--steps", "0", "--shots", "1",
         "--seeds", "1", "--format", "csv"]  # fmt: skip


@pytest.mark.slow
def test_probe_with_an_image_checkpoint_on_video(image_checkpoint) -> None:
    result = runner.invoke(app, [*PROBE, "--checkpoint", str(image_checkpoint[1])])
    assert result.exit_code == 0, result.output
    assert "moving_mnist" in result.output and "not built" not in result.output


def test_probe_with_a_checkpoint_that_does_not_fit_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "vit_cpu6.pth"
    torch.save(VisionTransformer(**CUSTOM_MODELS["vit_cpu6"], global_pool="avg").state_dict(), path)
    result = runner.invoke(app, [*PROBE, "--checkpoint", str(path)])
    assert result.exit_code == 2, result.output
    fit = "image weights do not fit the video model: depth 6, not 8"
    assert result.output.strip() == f"error: checkpoint {path}: {fit}"


@pytest.mark.parametrize("method", ["tokenlearner", "random"])
def test_prefix_tokens_pass_and_each_time_step_is_reduced(method: str) -> None:
    """A video ViT with register tokens: they pass the reducer untouched, every step gives S tokens."""
    import dataclasses

    from tlbench.backbones.video import create_video
    from tlbench.reducers import get_reducer

    torch.manual_seed(0)
    model = create_video("vivit_cpu", img_size=None, frames=None, num_classes=10, reg_tokens=2).eval()
    info = dataclasses.replace(model_info("vivit_cpu"), num_prefix_tokens=2)
    variant = make_variant("vivit_cpu", 0.5, 8, method=method)
    get_reducer(method).apply(model, info, variant)
    layer = model.blocks[variant.block_index]
    steps = torch.arange(4).repeat_interleave(64).float()  # each patch token carries its time step
    patches = torch.randn(2, 256, 48) + 100 * steps[None, :, None]
    prefix = torch.randn(2, 2, 48)
    with torch.no_grad():
        out = layer(torch.cat([prefix, patches], dim=1))
        logits = model(torch.randn(2, 3, 8, 32, 32))
    assert out.shape == (2, 2 + 4 * 8, 48) and logits.shape == (2, 10)
    assert torch.equal(out[:, :2], prefix)
    per_step = out[:, 2:].reshape(2, 4, 8, 48).mean(-1)  # TL pools a step's tokens, random keeps them
    assert torch.all((per_step / 100).round() == torch.arange(4).float()[None, :, None])


def test_cli_bench_times_clips() -> None:
    result = runner.invoke(app, ["bench", "-m", "vivit_cpu", "--positions", "0.5", "--tokens", "8", "--rounds", "1",
                                 "--batch-size", "1", "--device", "cpu", "--format", "csv"])  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 3 and lines[1].startswith("vivit_cpu,baseline") and "p0.5-s8" in lines[2]
