"""FLOPs: fvcore equals the analytic count exactly, FlopCounterMode agrees, no op goes uncounted."""

from __future__ import annotations

import pytest
import torch
from timm.layers import set_fused_attn

from tlbench.backbones.vit import model_info
from tlbench.errors import FlopCountError
from tlbench.measure.flops import (
    ZERO_COST_OPS,
    analytic_flops,
    count_flops,
    count_variants,
    einsum_macs,
    flopcounter_macs,
)
from tlbench.reducers.modules import TokenLearner, TokenLearnerLayer
from tlbench.variants import build_model, make_variants

TINY_VARIANTS = (
    make_variants("tiny", [0.0, 0.25, 0.5, 0.75, 1.0], [1, 4, 8])
    + make_variants("tiny", [0.0, 0.5, 0.75], [4], baseline=False, fuser=True)
    + make_variants("tiny", [0.0, 0.5, 1.0], [4], baseline=False, version="1.0")
    + make_variants("tiny", [0.25], [4], baseline=False, version="1.0", fuser=True)
)


@pytest.mark.parametrize("variant", TINY_VARIANTS, ids=lambda v: v.name)
def test_fvcore_equals_analytic_exactly(variant) -> None:
    info = model_info("tiny")
    report = count_flops(build_model(variant))
    assert report.flops == analytic_flops(info, variant)


@pytest.mark.parametrize("variant", TINY_VARIANTS[::3], ids=lambda v: v.name)
def test_flopcountermode_agrees_without_norms(variant) -> None:
    """torch's FlopCounterMode counts matmuls only, 2 per MAC: it must equal analytic minus LayerNorm."""
    model = build_model(variant)
    assert flopcounter_macs(model) == analytic_flops(model_info("tiny"), variant, norms=False)


def test_vit_b16_baseline_matches_timm_published_count() -> None:
    rows = count_variants(make_variants("vit_b16", [0.25], [8]))
    base, tl = rows
    assert base.gflops == pytest.approx(17.58, abs=0.005)  # timm's table: 17.58 GMACs
    assert base.gflops == base.gflops_analytic and tl.gflops == tl.gflops_analytic
    assert tl.gflops < base.gflops / 3  # the paper's claim at p = 1/4


def test_fused_attention_is_counted() -> None:
    """With timm's fused SDPA, plain fvcore drops attention; our handle must count it the same."""
    v = make_variants("tiny", None, [4])[0]
    fused = count_flops(build_model(v))
    set_fused_attn(False)
    try:
        unfused = count_flops(build_model(v))
    finally:
        set_fused_attn(True)
    assert "scaled_dot_product_attention" in fused.by_operator
    assert "matmul" in unfused.by_operator
    assert fused.flops == unfused.flops


@pytest.mark.parametrize("variant", TINY_VARIANTS, ids=lambda v: v.name)
def test_no_operator_left_uncounted_or_unlisted(variant) -> None:
    report = count_flops(build_model(variant))
    assert set(report.zero_ops) <= set(ZERO_COST_OPS)


def test_unknown_operator_is_an_error() -> None:
    model = build_model(make_variants("tiny", None, [4])[0])
    model.head = torch.nn.Sequential(model.head, torch.nn.Hardswish())  # aten::hardswish: no handle
    with pytest.raises(FlopCountError, match="hardswish"):
        count_flops(model)


@pytest.mark.parametrize("tokens", [1, 4, 8])  # fewer than tiny's 16 patch tokens
def test_flops_strictly_increase_with_block_index(tokens: int) -> None:
    base, *variants = count_variants(make_variants("tiny", None, [tokens]))
    flops = [r.gflops for r in variants]
    assert [r.block_index for r in variants] == [0, 1, 2, 3, 4]
    assert all(a < b for a, b in zip(flops, flops[1:], strict=False))
    assert all(f < base.gflops for f in flops[:-1])  # every k < depth is cheaper than the baseline


def test_after_the_last_block_costs_baseline_plus_the_module() -> None:
    base, last = count_variants(make_variants("tiny", [1.0], [4]))
    tl = TokenLearnerLayer(TokenLearner(64, 4), num_prefix_tokens=1)
    module = count_flops(_Wrap(tl), img_size=(17, 64), in_chans=1).flops
    head_norm_extra = 5 * 64 * (5 - 17)  # the final LayerNorm now sees 1 + 4 tokens, not 1 + 16
    assert round(last.gflops * 1e9) == round(base.gflops * 1e9) + module + head_norm_extra


class _Wrap(torch.nn.Module):
    """Feed a [1, 1, N, C] 'image' to a token module as [1, N, C] (count_flops takes images)."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x[:, 0])


@pytest.mark.parametrize(
    ("eq", "shapes", "macs"),
    [
        ("...si,...id->...sd", [[2, 8, 196], [2, 196, 768]], 2 * 8 * 196 * 768),  # fvcore: 4 sig. digits
        ("bsn,bnc->bsc", [[1, 8, 196], [1, 196, 768]], 8 * 196 * 768),
        ("ij,jk,kl->il", [[2, 3], [3, 4], [4, 5]], 2 * 3 * 4 + 2 * 4 * 5),
        ("bij->bji", [[2, 3, 4]], 0),
        ("ij,j", [[3, 4], [4]], 12),
    ],
)
def test_einsum_count_is_exact(eq: str, shapes: list[list[int]], macs: int) -> None:
    assert einsum_macs(eq, shapes) == macs


def _closed_form_macs(depth: int, width: int, tokens: int, patch: int, mlp: int, classes: int) -> int:
    """A ViT's multiply-adds without norms, written out here (independent of tlbench.measure.flops):
    patch embedding, per block qkv + QK^T + AV + projection + MLP, and the head."""
    block = tokens * width * 3 * width + 2 * tokens * tokens * width + tokens * width * width
    block += 2 * tokens * width * mlp
    return tokens * 3 * patch * patch * width + depth * block + width * classes


@pytest.mark.parametrize(
    "alias", ["vit_cpu6", "vit_cpu8", "vit_cpu12", "vit_cpu6_p8", "vit_cpu6_w32", "vit_cpu6_w32_p8"]
)
def test_cpu_models_match_a_closed_form_count(alias: str) -> None:
    info = model_info(alias)
    variants = make_variants(alias, [0.5, 0.75], [8])
    base = build_model(variants[0], num_classes=10)
    expected = _closed_form_macs(info.depth, info.embed_dim, (32 // info.patch_size) ** 2,
                                 info.patch_size, 2 * info.embed_dim, 10)  # fmt: skip
    assert flopcounter_macs(base) == expected
    for v in variants:
        assert count_flops(build_model(v)).flops == analytic_flops(info, v)
