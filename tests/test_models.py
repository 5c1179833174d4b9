"""Aliases, position -> block mapping, variants at every position, pretrained loading, and
which timm ViTs are supported (listed) or refused by name."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import timm
import torch
from timm.layers import LayerNorm, RmsNorm, SwiGLU
from timm.models.vision_transformer import ParallelScalingBlock, VisionTransformer

from tlbench.backbones.support import unsupported_reason
from tlbench.backbones.vit import model_info, pre_logits, resolve_model, vit_names
from tlbench.errors import ConfigError
from tlbench.measure.flops import analytic_flops, count_flops
from tlbench.reducers.modules import TokenFuserBlock, TokenLearnerLayer
from tlbench.variants import block_index, build_sharing, build_variant, make_variant, make_variants


def test_aliases_resolve_to_timm_names() -> None:
    assert resolve_model("vit_b16") == "vit_base_patch16_224"
    assert resolve_model("vit_base_patch32_224") == "vit_base_patch32_224"
    assert resolve_model("vit_base_patch16_224.augreg_in21k") == "vit_base_patch16_224.augreg_in21k"


def test_unknown_model_suggests_close_names() -> None:
    with pytest.raises(ConfigError, match="did you mean vit_b16"):
        resolve_model("vit_b61")


def test_non_vit_timm_model_is_refused() -> None:
    with pytest.raises(ConfigError, match="not a VisionTransformer"):
        resolve_model("resnet50")


@pytest.mark.parametrize(
    ("p", "k"), [(0.0, 0), (0.25, 3), (0.375, 5), (0.5, 6), (1 / 24, 1), (0.74, 9), (1.0, 12)]
)
def test_position_rounds_half_up(p: float, k: int) -> None:
    assert block_index(p, 12) == k  # round() would give 4 for 0.375 * 12 = 4.5


@pytest.mark.parametrize("p", [-0.1, 1.5, float("nan"), float("inf")])
def test_position_outside_unit_interval_is_an_error(p: float) -> None:
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        block_index(p, 12)


def test_model_info_of_b16() -> None:
    i = model_info("vit_b16")
    assert (i.depth, i.embed_dim, i.num_heads, i.patch_size, i.num_patches, i.num_prefix_tokens) == (
        12, 768, 12, 16, 196, 1,
    )  # fmt: skip
    assert model_info("vit_l16", 384).num_patches == 576


def test_variants_are_deduplicated_and_sorted() -> None:
    vs = make_variants("tiny", [0.5, 0.49, 0.0, 1.0], [8, 4])  # 0.5 and 0.49 -> block 2 of 4
    assert [v.name for v in vs] == [
        "baseline", "p0-s4", "p0-s8", "p0.5-s4", "p0.5-s8", "p1-s4", "p1-s8",
    ]  # fmt: skip
    assert len(make_variants("vit_b16")) == 1 + 13 * 2


@pytest.mark.parametrize("tokens", [0, -1, 17])
def test_bad_token_counts(tokens: int) -> None:
    with pytest.raises(ConfigError, match="token"):
        make_variant("tiny", 0.5, tokens)  # tiny has 16 patch tokens


def test_image_size_must_be_divisible_by_patch() -> None:
    with pytest.raises(ConfigError, match="not divisible"):
        make_variant("vit_b16", 0.5, 8, img_size=225)


def test_fuser_after_last_block_is_an_error() -> None:
    with pytest.raises(ConfigError, match="no block is left"):
        make_variant("tiny", 1.0, 8, fuser=True)


CASES = [
    (p, v, f)
    for p in (None, 0.0, 0.25, 0.5, 0.75, 1.0)
    for v in ("1.1", "1.0")
    for f in (False, True)
    if not (f and p == 1.0)
]  # the fuser needs a block after p


@pytest.mark.parametrize(("position", "version", "fuser"), CASES)
def test_forward_shapes_at_every_position(
    position: float | None, version: str, fuser: bool
) -> None:
    model = build_variant("tiny", position, 4, version=version, fuser=fuser, num_classes=7)
    x = torch.randn(2, 3, 32, 32)
    feats = model.forward_features(x)
    tokens = 1 + (16 if position is None or fuser else 4)  # class token + grid or learned tokens
    assert feats.shape == (2, tokens, 64)
    assert model(x).shape == (2, 7)
    assert pre_logits(model, x).shape == (2, 64)


def test_head_pools_all_learned_tokens_and_not_the_class_token() -> None:
    model = build_variant("tiny", 0.5, 4)
    x = torch.randn(2, 3, 32, 32)
    feats = model.forward_features(x)
    torch.testing.assert_close(pre_logits(model, x), feats[:, 1:].mean(1))


def test_insertion_places_the_module_before_block_k() -> None:
    m = build_variant("tiny", 0.25, 4)
    assert isinstance(m.blocks[1], TokenLearnerLayer) and len(m.blocks) == 5
    m = build_variant("tiny", 0.5, 4, fuser=True)
    assert [isinstance(b, TokenFuserBlock) for b in m.blocks] == [False, False, True, True]


def test_p1_runs_every_block_on_the_full_grid() -> None:
    """p = 1 puts TokenLearner after the last block: everything before it equals the baseline."""
    torch.manual_seed(0)
    base = build_variant("tiny")
    tl = build_variant("tiny", 1.0, 4)
    tl.load_state_dict(base.state_dict(), strict=False)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(
            base.blocks(base.norm_pre(base._pos_embed(base.patch_embed(x)))),
            tl.blocks[:-1](tl.norm_pre(tl._pos_embed(tl.patch_embed(x)))),
        )


def test_pretrained_round_trip_from_a_local_checkpoint(tmp_path: Path) -> None:
    src = timm.create_model("vit_tiny_patch16_224", img_size=64, num_classes=5)
    path = tmp_path / "vit_ti.pth"
    torch.save(src.state_dict(), path)
    model = build_variant("vit_ti16", 0.5, 8, img_size=64, pretrained=True, checkpoint_path=path,
                          num_classes=10)  # fmt: skip
    own = model.state_dict()
    torch.testing.assert_close(
        own["patch_embed.proj.weight"], src.state_dict()["patch_embed.proj.weight"]
    )
    torch.testing.assert_close(
        own["blocks.0.attn.qkv.weight"], src.state_dict()["blocks.0.attn.qkv.weight"]
    )
    # blocks after the insertion point shift by one; the TokenLearner starts fresh
    torch.testing.assert_close(
        own["blocks.7.mlp.fc2.weight"], src.state_dict()["blocks.6.mlp.fc2.weight"]
    )
    assert own["head.weight"].shape == (10, 192)  # other class count: fresh head


def test_pretrained_loading_resamples_the_position_embedding(tmp_path: Path) -> None:
    src = timm.create_model("vit_tiny_patch16_224", img_size=64)
    path = tmp_path / "vit_ti.pth"
    torch.save(src.state_dict(), path)
    model = build_variant("vit_ti16", None, img_size=96, pretrained=True, checkpoint_path=path)
    assert model.pos_embed.shape == (1, 1 + 36, 192)


def test_missing_or_corrupt_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        build_variant("tiny", pretrained=True, checkpoint_path=tmp_path / "nope.pth")
    bad = tmp_path / "bad.pth"
    bad.write_text("not a checkpoint")
    with pytest.raises(ConfigError, match="could not read"):
        build_variant("tiny", pretrained=True, checkpoint_path=bad)


# --- which timm ViTs tlbench supports -------------------------------------------------------

# Every timm VisionTransformer name is accepted since the analytic count composes per part
# (tests/test_parts.py); what remains refused is refused by structure. One name per refused
# family, and the words its one-line error must contain.
REFUSED = [
    ("vit_small_patch16_rope_mixed_224", "depth-dependent (mixed) RoPE"),  # Eva: RoPE per block
    ("convnext_tiny", "not a VisionTransformer"),  # a timm model of another family
]

# One name per supported structure: block type, layer scale, prefix tokens (class, registers,
# none), position embedding with or without the prefix, MLP activation. Fast: timm's test models
# and the smallest reg-token ViT (~2 s each); the rest take 5-10 s each on 2 busy cores.
SUPPORTED_FAST = [
    "test_vit",  # class token
    "test_vit2",  # 1 register, no class token, layer scale
    "test_vit3",  # as test_vit2, but timm would pool the register; tlbench's head does not
    "vit_wee_patch16_reg1_gap_256",  # 1 register outside the position embedding (no_embed_class)
]
SUPPORTED_SLOW = [
    "vit_little_patch16_reg4_gap_256",  # 4 registers, no_embed_class
    "flexivit_small",  # class token outside the position embedding
    "deit3_small_patch16_224",  # as flexivit, with layer scale
    "vit_small_patch14_reg4_dinov2",  # class + 4 registers, 14 px patches
    "vit_base_patch16_rpn_224",  # ResPostBlock (post-norm), no class token
    "vit_base_patch32_siglip_256",  # GELU (tanh), no prefix tokens
    "vit_base_patch16_gap_224",
    "vit_base_patch16_reg4_gap_256",
    "vit_betwixt_patch16_gap_256",
    "vit_base_patch14_reg1_tipsv2",  # class + 1 register
    "vit_so150m_patch16_reg4_gap_256",
]


@pytest.mark.parametrize("name", vit_names())
def test_every_listed_name_passes_the_full_check(name: str) -> None:
    """The listing checks a one-block probe; the full meta build (every block) must agree."""
    assert model_info(name).name == name


@pytest.mark.parametrize(("name", "why"), REFUSED)
def test_excluded_families_are_refused_by_name(name: str, why: str) -> None:
    if not timm.is_model(name):
        pytest.skip(f"{name} is not in this timm")
    assert name not in vit_names()
    for call in (lambda: resolve_model(name), lambda: make_variant(name, 0.5, 8)):
        with pytest.raises(ConfigError, match=re.escape(why)) as e:
            call()
        assert str(e.value).startswith(name) and "\n" not in str(e.value)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"block_fn": ParallelScalingBlock},
        {"mlp_layer": SwiGLU},
        {"norm_layer": RmsNorm},
        {"scale_attn_norm": True},
        {"qk_norm": True},
        {"pre_norm": True},
        {"final_norm": False},
        {"embed_norm_layer": LayerNorm},
    ],
)
def test_predicate_accepts_each_counted_structure(kwargs: dict[str, object]) -> None:
    """Each of these was refused before the count composed per part (measure/parts.py)."""
    args = dict(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=2, weight_init="skip")
    with torch.device("meta"):
        assert unsupported_reason(VisionTransformer(**args, **kwargs)) is None


def test_predicate_refuses_a_part_with_no_formula() -> None:
    """Structure, not names: an MLP class no formula covers is refused, in one phrase."""
    from timm.layers import Mlp

    class OwnMlp(Mlp):
        pass

    args = dict(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=2, weight_init="skip")
    with torch.device("meta"):
        assert unsupported_reason(VisionTransformer(**args, mlp_layer=OwnMlp)) == (
            "uses OwnMlp, an MLP tlbench has no count for"
        )


def _fvcore_equals_analytic(name: str) -> None:
    """p = 0.5, S = 8 at 4x4 patches: forward runs, fvcore == analytic for both variants."""
    img = model_info(name).patch_size * 4
    info = model_info(name, img)
    variants = make_variants(name, [0.5], [8], img_size=img)
    models = build_sharing(variants, img)
    x = torch.randn(1, info.in_chans, img, img)
    for v in variants:
        with torch.no_grad():
            assert models[v.name](x).shape == (1, info.num_classes)
        assert count_flops(models[v.name], img, info.in_chans).flops == analytic_flops(info, v)


@pytest.mark.parametrize("name", SUPPORTED_FAST)
def test_supported_family_counts_exactly(name: str) -> None:
    _fvcore_equals_analytic(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", SUPPORTED_SLOW)
def test_supported_family_counts_exactly_base_size(name: str) -> None:
    _fvcore_equals_analytic(name)


def test_head_never_pools_prefix_tokens() -> None:
    """test_vit3 asks timm to pool its register token; tlbench's head convention wins."""
    model = build_variant("test_vit3", img_size=32)
    x = torch.randn(2, 3, 32, 32)
    feats = model.forward_features(x)
    torch.testing.assert_close(pre_logits(model, x), feats[:, 1:].mean(1))
