"""The paper's large models: L/10 and L/8 (ViT-L/16 at smaller patches) and G/14.

Their FLOPs are checked against a formula written out here, independent of flops.analytic_flops,
and L/16 weights must load into L/10 with the patch and position embeddings resampled as timm does.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from timm.layers import resample_abs_pos_embed, resample_patch_embed

from tlbench.backbones.support import NO_INIT
from tlbench.backbones.vit import create, load_backbone, model_info
from tlbench.measure.flops import analytic_flops, count_flops_composed
from tlbench.variants import apply_reducer, build_variant, make_variant

GEOMETRY = {  # alias: (depth, width, heads, MLP, patch, patch tokens at 224 px)
    "vit_l10": (24, 1024, 16, 4096, 10, 22 * 22),
    "vit_l8": (24, 1024, 16, 4096, 8, 28 * 28),
    "vit_g14": (48, 1664, 16, 8192, 14, 16 * 16),
    "vit_l16": (24, 1024, 16, 4096, 16, 14 * 14),
}


def vit_macs(depth: int, d: int, mlp: int, patch: int, n: int, k: int | None = None, s: int = 0,
             classes: int = 1000) -> int:  # fmt: skip
    """MACs of a class-token ViT at 224 px, fvcore's convention (affine LayerNorm = 5 per element),
    with a v1.1 TokenLearner of `s` tokens before block k (the class token kept beside them)."""
    def block(t: int) -> int:  # LN, qkv 3td², QKᵀ and PV 2t²d, proj td², LN, MLP 2tdm
        return 5 * t * d + 3 * t * d * d + 2 * t * t * d + t * d * d + 5 * t * d + 2 * t * d * mlp

    total = n * patch * patch * 3 * d  # patch embedding: a conv, one output per patch
    k = depth if k is None else k
    total += k * block(n + 1)
    if s:  # LN, Dense(d -> 64), Dense(64 -> S), the weighted sum S x n x d
        total += 5 * n * d + n * d * 64 + n * 64 * s + s * n * d
    total += (depth - k) * block((s or n) + 1)
    return total + 5 * ((s or n) + 1) * d + d * classes  # final LayerNorm, head


@pytest.mark.parametrize("alias", GEOMETRY)
def test_geometry_of_the_papers_models(alias: str) -> None:
    depth, d, heads, mlp, patch, n = GEOMETRY[alias]
    i = model_info(alias)
    assert (i.depth, i.embed_dim, i.num_heads, i.mlp_hidden, i.patch_size, i.num_patches) == (
        depth, d, heads, mlp, patch, n)  # fmt: skip
    assert i.img_size == (224, 224)
    assert model_info(alias, 224).num_patches == n  # 224 px is accepted though 224 % 10 != 0


@pytest.mark.parametrize("alias", GEOMETRY)
@pytest.mark.parametrize(("p", "s"), [(None, 0), (0.5, 8), (0.75, 16)])
def test_analytic_flops_match_the_explicit_formula(alias: str, p: float | None, s: int) -> None:
    depth, d, _, mlp, patch, n = GEOMETRY[alias]
    v = make_variant(alias, p, s or 8)
    k = None if p is None else round(p * depth)
    assert analytic_flops(model_info(alias), v) == vit_macs(depth, d, mlp, patch, n, k, s)


@pytest.mark.parametrize("alias", ["vit_l10", "vit_l8"])
def test_fvcore_count_matches_the_explicit_formula(alias: str) -> None:
    """fvcore on the built model, cut to 2 blocks (its geometry otherwise): baseline, TL at 1/2."""
    _, d, _, mlp, patch, n = GEOMETRY[alias]
    info = model_info(alias)
    for p, s in [(None, 0), (0.5, 8)]:
        model = create(alias, img_size=None, pretrained=False, num_classes=1000, depth=2, **NO_INIT)
        v = make_variant(alias, p, s or 8)
        if p is not None:  # TL before block 1 of 2
            v = replace(v, block_index=1)
        model = apply_reducer(model, v) if p is not None else model
        got = count_flops_composed(model, info.img_size, info.in_chans).gflops * 1e9
        assert round(got) == vit_macs(2, d, mlp, patch, n, None if p is None else 1, s)


@pytest.mark.slow
def test_full_vit_l10_fvcore_count_matches_the_explicit_formula() -> None:
    depth, d, _, mlp, patch, n = GEOMETRY["vit_l10"]
    for p, s in [(None, 0), (0.5, 8)]:
        model = build_variant("vit_l10", p, s or 8)
        assert round(count_flops_composed(model).gflops * 1e9) == vit_macs(
            depth, d, mlp, patch, n, None if p is None else depth // 2, s)  # fmt: skip


def test_l16_weights_load_into_l10_resampled_like_timm(tmp_path: Path) -> None:
    """A ViT-L/16 checkpoint (cut to one block to stay small) in an L/10: timm's resampling."""
    torch.manual_seed(0)
    l16 = create("vit_large_patch16_224", img_size=None, pretrained=False, num_classes=10, depth=1)
    path = tmp_path / "l16.pth"
    torch.save(l16.state_dict(), path)
    l10 = create("vit_l10", img_size=None, pretrained=False, num_classes=10, depth=1)
    load_backbone(l10, path)
    w = l10.patch_embed.proj.weight
    assert w.shape == (1024, 3, 10, 10)
    assert torch.allclose(w, resample_patch_embed(l16.patch_embed.proj.weight, [10, 10]))
    assert l10.pos_embed.shape == (1, 1 + 22 * 22, 1024)
    expect = resample_abs_pos_embed(l16.pos_embed, [22, 22], num_prefix_tokens=1)
    assert torch.allclose(l10.pos_embed, expect)
    assert torch.equal(l10.blocks[0].attn.qkv.weight, l16.blocks[0].attn.qkv.weight)
    x = torch.randn(1, 3, 224, 224)
    assert l10.eval()(x).shape == (1, 10)
