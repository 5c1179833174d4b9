"""Contract tests of the per-part analytic count (tlbench.backbones.parts).

Each part kind's formula against fvcore (every operator counted or on the zero list) and, without
norms, against torch's FlopCounterMode on the meta device; then every block structure timm's
VisionTransformer uses, as a tiny ViT, through every reducer: fvcore == analytic to the integer.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
import torch
from timm.layers import Attention, GluMlp, LayerNorm, Mlp, RmsNorm, SwiGLU, SwiGLUPacked
from timm.layers.diff_attention import DiffAttention
from timm.models.vision_transformer import (
    Block,
    DiffParallelScalingBlock,
    ParallelScalingBlock,
    ParallelThingsBlock,
    ResPostBlock,
)
from torch import nn

from tlbench.backbones import parts
from tlbench.backbones.registry import CUSTOM_MODELS
from tlbench.backbones.vit import model_info, vit_names
from tlbench.errors import ConfigError
from tlbench.measure.flops import ZERO_COST_OPS, _fvcore, analytic_flops, count_flops_composed
from tlbench.reducers import REDUCERS
from tlbench.variants import build_sharing, make_variants

D, H, N = 32, 2, 7  # width, heads, tokens: small enough for seconds, odd N to catch N vs N^2


def _fvcore_macs(module: nn.Module, n: int = N) -> int:
    ops, unknown = _fvcore(module, torch.randn(1, n, D))
    assert set(unknown) <= set(ZERO_COST_OPS), unknown
    return sum(ops.values())


def _flopcounter_macs(module: nn.Module, n: int = N) -> int:
    """FlopCounterMode on meta (SDPA decomposes into counted matmuls), in MACs; no norms."""
    from torch.utils.flop_counter import FlopCounterMode

    meta = module.to("meta").eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        meta(torch.empty(1, n, D, device="meta"))
    return counter.get_total_flops() // 2


NORMS: dict[str, Callable[[], nn.Module]] = {
    "layernorm": lambda: LayerNorm(D),
    "layernorm-no-affine": lambda: nn.LayerNorm(D, elementwise_affine=False),
    "rmsnorm": lambda: RmsNorm(D),
    "rmsnorm-no-affine": lambda: RmsNorm(D, affine=False),
}


@pytest.mark.parametrize("kind", NORMS)
def test_norm_formula_equals_fvcore(kind: str) -> None:
    norm = NORMS[kind]()
    assert _fvcore_macs(norm) == N * parts.norm_macs(norm)
    assert (
        parts.norm_cost(norm)
        == {"layernorm": 5, "layernorm-no-affine": 4, "rmsnorm": 3, "rmsnorm-no-affine": 2}[kind]
    )


ATTENTIONS: dict[str, Callable[[], nn.Module]] = {
    "attention": lambda: Attention(D, H, qkv_bias=True),
    "qk-norm": lambda: Attention(D, H, qk_norm=True, norm_layer=LayerNorm),
    "qk-rmsnorm": lambda: Attention(D, H, qk_norm=True, norm_layer=RmsNorm),
    "sub-ln": lambda: Attention(D, H, scale_norm=True, norm_layer=LayerNorm),
    "gated": lambda: Attention(D, H, gated=True),
    "diff": lambda: DiffAttention(D, H),
    "diff-qk-norm": lambda: DiffAttention(D, H, qk_norm=True, scale_norm=True),
}


@pytest.mark.parametrize("kind", ATTENTIONS)
def test_attention_formula_equals_fvcore_and_flopcounter(kind: str) -> None:
    attn = ATTENTIONS[kind]().eval()
    lin, norm, pairs = parts.attention_parts(attn)
    assert _fvcore_macs(attn) == N * (lin + norm) + N * N * pairs
    assert _flopcounter_macs(attn) == N * lin + N * N * pairs


MLPS: dict[str, Callable[[], nn.Module]] = {
    "mlp": lambda: Mlp(D, 3 * D),
    "mlp-sub-ln": lambda: Mlp(D, 3 * D, norm_layer=LayerNorm),
    "glu": lambda: GluMlp(D, 4 * D),
    "swiglu-packed": lambda: SwiGLUPacked(D, 4 * D),
    "swiglu": lambda: SwiGLU(D, 3 * D, norm_layer=RmsNorm),
}


@pytest.mark.parametrize("kind", MLPS)
def test_mlp_formula_equals_fvcore_and_flopcounter(kind: str) -> None:
    mlp = MLPS[kind]().eval()
    lin, norm = parts.mlp_parts(mlp)
    assert _fvcore_macs(mlp) == N * (lin + norm)
    assert _flopcounter_macs(mlp) == N * lin


BLOCKS: dict[str, Callable[[], nn.Module]] = {
    "block": lambda: Block(D, H),
    "block-layer-scale-qk-norm": lambda: Block(
        D, H, init_values=1e-5, qk_norm=True, scale_mlp_norm=True
    ),
    "block-rmsnorm-swiglu": lambda: Block(D, H, norm_layer=RmsNorm, mlp_layer=SwiGLU),
    "block-diff": lambda: Block(D, H, attn_layer="diff"),
    "res-post": lambda: ResPostBlock(D, H),
    "parallel-scaling": lambda: ParallelScalingBlock(D, H, qk_norm=True),
    "parallel-scaling-fused-out": lambda: ParallelScalingBlock(
        D, H, qkv_bias=True, fuse_out_proj=True
    ),
    "diff-parallel-scaling": lambda: DiffParallelScalingBlock(D, H),
    "parallel-things": lambda: ParallelThingsBlock(D, H, num_parallel=2, init_values=1e-5),
}


@pytest.mark.parametrize("kind", BLOCKS)
def test_block_formula_equals_fvcore_and_flopcounter(kind: str) -> None:
    block = BLOCKS[kind]().eval()
    bp = parts.block_parts(block)
    assert _fvcore_macs(block) == bp.macs(N, N)
    assert _flopcounter_macs(block) == bp.macs(N, N, norms=False)
    parallel = "parallel" in kind
    assert (bp.in_block is None) == (kind.startswith("block") and "diff" not in kind), bp.in_block
    assert parallel <= (bp.in_block is not None)


def test_a_part_with_no_formula_is_refused() -> None:
    class OwnNorm(nn.LayerNorm.__base__):  # a plain Module: no formula
        pass

    with pytest.raises(parts.UnsupportedPart, match="OwnNorm, a norm tlbench has no count for"):
        parts.norm_cost(OwnNorm())


def test_standard_arch_is_what_a_plain_vit_reads_as() -> None:
    info = model_info("tiny")
    assert info.arch == parts.standard_arch(info.embed_dim, info.mlp_hidden, info.depth)


# --- every block structure, as a tiny ViT, through every reducer ------------------------------

TINY = dict(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0)
STRUCTURES: dict[str, dict[str, object]] = {
    "pre-norm": {},
    "clip-norm-pre": dict(pre_norm=True),
    "no-final-norm-registers": dict(final_norm=False, reg_tokens=2),
    "layer-scale-no-class": dict(init_values=1e-5, class_token=False),
    "qk-norm-sub-ln": dict(qk_norm=True, scale_attn_norm=True, scale_mlp_norm=True),
    "rmsnorm-swiglu": dict(norm_layer=RmsNorm, mlp_layer=SwiGLU, embed_norm_layer=RmsNorm),
    "glu-mlp": dict(mlp_layer=SwiGLUPacked, mlp_ratio=4.0),
    "diff-attention": dict(attn_layer="diff"),
    "res-post": dict(block_fn=ResPostBlock),
    "parallel-scaling": dict(block_fn=ParallelScalingBlock),
    "diff-parallel-scaling": dict(block_fn=DiffParallelScalingBlock),
    "parallel-things": dict(block_fn=ParallelThingsBlock),
}
IN_BLOCK_OK = {"pre-norm", "clip-norm-pre", "no-final-norm-registers", "layer-scale-no-class",
               "qk-norm-sub-ln", "rmsnorm-swiglu", "glu-mlp"}  # fmt: skip


@pytest.fixture
def structure(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    name = f"_test_{request.param}"
    monkeypatch.setitem(CUSTOM_MODELS, name, {**TINY, **STRUCTURES[request.param]})
    return name


def _contract(name: str, methods: list[str], img: int | None = None) -> None:
    """Build, every method at p = 0 and 1/2 (S = 4), fvcore == analytic to the integer, forward
    shape, baseline untouched; a method that cannot split the block is refused in one line."""
    info = model_info(name, img)
    x = torch.randn(2, info.in_chans, *info.img_size)
    cache: dict = {}
    for method in methods:
        params = {"r": 3} if method == "tome_r" else None
        try:
            variants = make_variants(
                name, [0, 0.5], [4], img_size=img, method=method, params=params
            )
        except ConfigError as e:
            assert REDUCERS[method].where == "in_block", e
            assert re.fullmatch(rf"{method} acts between .* on {name} it cannot: .+", str(e)), e
            continue
        models = build_sharing(variants, img)
        with torch.no_grad():
            before = models["baseline"](x)
        for v in variants:
            with torch.no_grad():
                assert models[v.name](x).shape == (2, info.num_classes)
            got = count_flops_composed(models[v.name], img, cache=cache, variant=v).flops
            assert got == analytic_flops(info, v), (method, v.name)
        with torch.no_grad():
            torch.testing.assert_close(models["baseline"](x), before)


@pytest.mark.parametrize("structure", list(STRUCTURES), indirect=True)
def test_every_structure_counts_exactly_before_and_in_block(structure: str) -> None:
    """Fast: one before-block and one in-block method (every reducer: the slow test below)."""
    _contract(structure, ["pool", "topk"])
    kind = structure.removeprefix("_test_")
    in_block = [b.in_block for b in model_info(structure).arch.blocks]
    assert all(w is None for w in in_block) == (kind in IN_BLOCK_OK)


@pytest.mark.slow
@pytest.mark.parametrize("structure", list(STRUCTURES), indirect=True)
def test_every_structure_counts_exactly_with_every_reducer(structure: str) -> None:
    _contract(structure, list(REDUCERS))


def test_distilled_deit_pools_patch_tokens_and_counts_exactly() -> None:
    """Both prefix tokens stay in the sequence, unpooled; head_dist is kept but never runs."""
    name = "deit_tiny_distilled_patch16_224"
    info = model_info(name, 64)
    assert info.num_prefix_tokens == 2
    variants = make_variants(name, [0.5], [4], img_size=64, method="pool")
    models = build_sharing(variants, 64)
    base = models["baseline"]
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        feats = base.forward_features(x)
        torch.testing.assert_close(base.forward_head(feats, pre_logits=True), feats[:, 2:].mean(1))
    for v in variants:
        assert count_flops_composed(models[v.name], 64, variant=v).flops == analytic_flops(info, v)


# --- timm's Eva class (EVA-02: RoPE, SwiGLU, sub-LN) -------------------------------------------


def _eva_block(**kw: object) -> nn.Module:
    from timm.models.eva import EvaBlock

    return EvaBlock(D, H, **kw)


EVA_BLOCKS: dict[str, Callable[[], nn.Module]] = {
    "eva02": lambda: _eva_block(
        swiglu_mlp=True, scale_mlp=True, qkv_fused=False, norm_layer=LayerNorm
    ),
    "eva-fused-qkv-glu": lambda: _eva_block(swiglu_mlp=True, qkv_fused=True, init_values=1e-5),
    "rope-gqa-qk-norm": lambda: _eva_block(
        attn_type="rope", num_kv_heads=1, qkv_fused=False, qk_norm=True
    ),
}


@pytest.mark.parametrize("kind", EVA_BLOCKS)
def test_eva_block_formula_equals_fvcore_and_flopcounter(kind: str) -> None:
    block = EVA_BLOCKS[kind]().eval()
    bp = parts.block_parts(block)
    assert _fvcore_macs(block) == bp.macs(N, N)
    assert _flopcounter_macs(block) == bp.macs(N, N, norms=False)
    assert bp.in_block is not None  # RoPE by grid position: in-block methods are refused


@pytest.mark.slow
@pytest.mark.parametrize("name", ["eva02_tiny_patch14_224", "vit_medium_patch16_rope_reg1_gap_256"])
def test_eva_counts_exactly_with_every_reducer(name: str) -> None:
    """EVA-02 (class token) and a RoPE ViT with a register: every method, refused or exact."""
    _contract(name, list(REDUCERS), img=4 * model_info(name).patch_size)


@pytest.mark.slow
def test_eva_baseline_applies_rope_and_reducers_stop_it() -> None:
    """The baseline runs timm's own Eva forward (RoPE in every block); after a reducer the
    blocks run without RoPE, so a reducer after the last block leaves the features as they were."""
    from timm.models.eva import Eva

    name, img = "eva02_tiny_patch14_224", 56
    variants = make_variants(name, [0.5, 1.0], [16], img_size=img, method="pool")
    models = build_sharing(variants, img)
    base, x = models["baseline"], torch.randn(1, 3, img, img)
    with torch.no_grad():
        feats = base.forward_features(x)
        torch.testing.assert_close(feats, Eva.forward_features(base, x))  # RoPE applied
        k = model_info(name, img).depth
        blocks = list(models["pool-p1-s16"].blocks)
        assert len(blocks) == k + 1 and not isinstance(blocks[k], type(blocks[0]))
        assert count_flops_composed(models["pool-p0.5-s16"], img, variant=variants[1]).flops == analytic_flops(
            model_info(name, img), variants[1]
        )
    with pytest.raises(ConfigError, match="EvaAttention .RoPE by grid position."):
        make_variants(name, [0.5], [4], img_size=img, method="tome")


def test_models_all_lists_every_name_per_class_with_reasons() -> None:
    from typer.testing import CliRunner

    from tlbench.backbones.vit import coverage
    from tlbench.cli import app

    cov = coverage()
    assert set(cov) == {"VisionTransformer", "VisionTransformerDistilled", "Eva"}
    assert not cov["VisionTransformer"][1] and not cov["VisionTransformerDistilled"][1]
    refused = cov["Eva"][1]
    assert refused and all("mixed" in name for name in refused)  # mixed RoPE only
    assert all(why.startswith(name) and "\n" not in why for name, why in refused.items())
    out = CliRunner().invoke(app, ["models", "--all"], terminal_width=400).output
    for cls, (names, why) in cov.items():
        assert f"timm {cls}: {len(names)} of {len(names) + len(why)} names accepted" in out
    assert "eva02_base_patch14_224" in out and "deit_base_distilled_patch16_224" in out


# --- every accepted name -----------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", vit_names())
def test_every_listed_name_counts_exactly(name: str) -> None:
    """Each accepted timm name at its full width but two blocks and 2 x 2 patches (its blocks are
    all of one kind): one whole-model fvcore trace == the composed analytic count."""
    from dataclasses import replace

    from tlbench.backbones.vit import create as _create
    from tlbench.core import Variant
    from tlbench.measure.flops import count_flops

    info = model_info(name)
    img = 2 * info.patch_size
    info = model_info(name, img)
    try:
        model = _create(name, img_size=img, pretrained=False, num_classes=10, depth=2)
    except ConfigError:  # per-block settings (sapiens2's num_kv_heads) need the full depth
        pytest.skip(f"{name} cannot be built with two blocks")
    two = replace(
        info, depth=2, num_classes=10, arch=replace(info.arch, blocks=info.arch.blocks[:2])
    )
    assert count_flops(model.eval(), img, info.in_chans).flops == analytic_flops(
        two, Variant(name, None, None, None)
    )
