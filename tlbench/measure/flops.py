"""Exact FLOP counts: fvcore with every operator accounted for, and an analytic cross-check.

Convention (fvcore's, and what ViT papers call GFLOPs): one fused multiply-add = one FLOP;
timm lists vit_base_patch16_224 at 17.58. Two fvcore gaps are closed here:
- timm's fused attention calls aten::scaled_dot_product_attention, which fvcore silently skips
  (4% of ViT-B/16, 14% of ViT-Ti/16, and exactly the term TokenLearner shrinks): handled.
- fvcore rounds a general einsum to 4 significant digits: counted exactly instead.
Any other operator fvcore cannot count must be on ZERO_COST_OPS (or on the zero_cost_ops of the
variant's reducer, each with its reason), or counting fails.
"""

from __future__ import annotations

import copy
import math
import string
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from tlbench.backbones.parts import standard_arch
from tlbench.backbones.video import input_shape
from tlbench.backbones.vit import model_info
from tlbench.core import ModelInfo, Variant
from tlbench.errors import FlopCountError
from tlbench.reducers import get_reducer, token_schedule
from tlbench.variants import build_sharing

# Operators counted as zero, and why: element-wise or reductions with at most a few operations per
# element, negligible next to the matmuls (fvcore's convention; its own ignore-list treats relu,
# clamp and max the same way). LayerNorm is *not* here: fvcore counts it (5 per element).
ZERO_COST_OPS: dict[str, str] = {
    "aten::add": "residual and position-embedding additions (element-wise)",
    "aten::add_": "in-place addition (element-wise)",
    "aten::sub": "element-wise",
    "aten::rsub": "element-wise",
    "aten::mul": "attention scale, layer scale (element-wise)",
    "aten::mul_": "element-wise",
    "aten::div": "element-wise (v1.0 mean pooling)",
    "aten::gelu": "MLP activation (element-wise)",
    "aten::silu": "activation (element-wise)",
    "aten::tanh": "pre-logits activation (element-wise)",
    "aten::sigmoid": "v1.0 maps and TokenFuser gate (element-wise)",
    "aten::softmax": "attention and v1.1 spatial softmax (a few ops per element)",
    "aten::mean": "global average pool (one add per element)",
    "aten::sum": "reduction (one add per element)",
    "aten::neg": "RoPE's rotation of q and k (element-wise)",
    "aten::sin": "RoPE table from the grid's coordinates (element-wise, once per forward)",
    "aten::cos": "RoPE table from the grid's coordinates (element-wise, once per forward)",
    "aten::meshgrid": "RoPE's grid coordinates (no arithmetic)",
    "aten::repeat_interleave": "grouped-query attention's K/V heads copied to every query head (no arithmetic)",
    "aten::exp": "DiffAttention's lambda, from 2 or 4 head-dim vectors (element-wise)",
}


def sdpa_flop_jit(inputs: list[Any], outputs: list[Any]) -> int:
    """aten::scaled_dot_product_attention: Q @ K^T plus P @ V = B*H*Nq*Nk*(d + dv) MACs."""
    from fvcore.nn.jit_handles import get_shape

    q, k, v = (get_shape(x) for x in inputs[:3])  # [B, H, Nq, d], [B, H, Nk, d], [B, H, Nk, dv]
    return math.prod(q[:-1]) * k[-2] * (q[-1] + v[-1])


def rms_norm_flop_jit(inputs: list[Any], outputs: list[Any]) -> int:
    """aten::rms_norm, which fvcore leaves uncounted: 3 per element with a weight, 2 without
    (LayerNorm's 5 and 4 less its mean and centring; measure/parts.py)."""
    from fvcore.nn.jit_handles import get_shape

    return math.prod(get_shape(inputs[0])) * (3 if get_shape(inputs[2]) is not None else 2)


def einsum_macs(equation: str, shapes: list[list[int]]) -> int:
    """Exact MACs of an einsum contracted pairwise left to right (torch's order without opt_einsum)."""
    eq = equation.replace(" ", "")
    lhs, _, out = eq.partition("->")
    terms = lhs.split(",")
    if not _:  # implicit output: letters seen once, sorted
        counts = Counter(c for c in lhs if c.isalpha())
        out = "".join(sorted(c for c, n in counts.items() if n == 1))
    free = iter(c for c in string.ascii_letters if c not in eq)
    ell_rank = max((len(s) - len(t.replace("...", "")) for t, s in zip(terms, shapes, strict=True) if "..." in t),
                   default=0)
    ell = "".join(next(free) for _ in range(ell_rank))
    terms = [t.replace("...", ell[len(ell) - (len(s) - len(t) + 3):] if "..." in t else "")
             for t, s in zip(terms, shapes, strict=True)]
    out = out.replace("...", ell)
    size: dict[str, int] = {}
    for term, shape in zip(terms, shapes, strict=True):
        for c, n in zip(term, shape, strict=False):
            size[c] = max(size.get(c, 1), n)  # size-1 dims broadcast
    if len(terms) < 2:
        return 0  # a permutation or reduction of one operand: no multiplications
    macs, acc = 0, terms[0]
    for i, term in enumerate(terms[1:], start=1):
        letters = set(acc) | set(term)
        macs += math.prod(size[c] for c in letters)
        later = set(out).union(*terms[i + 1:])
        acc = "".join(c for c in sorted(letters) if c in later)
    return macs


def einsum_flop_jit(inputs: list[Any], outputs: list[Any]) -> int:
    from fvcore.nn.jit_handles import get_shape

    equation = inputs[0].toIValue()
    shapes = [get_shape(v) for v in inputs[1].node().inputs()]
    return einsum_macs(equation, shapes)


@dataclass(frozen=True)
class FlopReport:
    """fvcore count of one forward pass of one image."""

    gflops: float  # 1 FMA = 1 FLOP, per image
    params_m: float  # parameters, millions
    by_operator: dict[str, int] = field(default_factory=dict)  # MACs per counted operator
    zero_ops: dict[str, int] = field(default_factory=dict)  # ZERO_COST_OPS seen: op -> calls

    @property
    def flops(self) -> int:
        return sum(self.by_operator.values())


def count_flops(model: nn.Module, img_size: int | tuple[int, int] | None = None, in_chans: int = 3,
                variant: Variant | None = None) -> FlopReport:  # fmt: skip
    """Count one image's forward pass with fvcore; raise FlopCountError on an unaccounted operator.

    `variant` (the one `model` was built as) adds its reducer's zero-cost operators to the allowed ones.

    Count the eager model, never a compiled one (fvcore cannot trace it, and FlopCounterMode
    perturbs it: pytorch/pytorch#140909).
    """
    x = torch.randn(input_shape(model, 1, _hw(model, img_size), in_chans), device=next(model.parameters()).device)
    by_operator, unsupported = _fvcore(model, x)
    return _report(model, by_operator, unsupported, variant)


def count_flops_composed(model: nn.Module, img_size: int | tuple[int, int] | None = None,
                         in_chans: int = 3, cache: dict | None = None,
                         variant: Variant | None = None) -> FlopReport:  # fmt: skip
    """count_flops, part by part: the stem, each entry of `model.blocks` in turn, the head, each
    traced once per (structure, input shape) in `cache` and summed.

    A grid of variants repeats the same blocks at a few token counts, so with one cache shared
    by the variants of a model the cost grows with the distinct (module, token count) pairs, not
    with the variants. Equal to count_flops (tests check it for every method)."""
    cache = {} if cache is None else cache
    device = next(model.parameters()).device
    by_operator: Counter[str] = Counter()
    unsupported: Counter[str] = Counter()
    shape = input_shape(model, 1, _hw(model, img_size), in_chans)
    for part in [_Stem(model), *model.blocks, _Head(model)]:
        key = (_signature(part), shape)
        if key not in cache:
            x = torch.randn(shape, device=device)
            ops, unknown = _fvcore(part, x)
            was_training = part.training
            with torch.no_grad():  # one part at batch 1: the next part's input shape
                out = tuple(part.eval()(x).shape)
            part.train(was_training)
            cache[key] = ops, unknown, out
        ops, unknown, shape = cache[key]
        by_operator.update(ops)
        unsupported.update(unknown)
    return _report(model, dict(by_operator), dict(unsupported), variant)


class _Stem(nn.Module):
    """What timm's forward_features does before the blocks."""

    def __init__(self, vit: nn.Module) -> None:
        super().__init__()
        self.vit = vit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = self.vit
        if hasattr(v, "stem"):  # a backbone other than VisionTransformer (tlbench.backbones.eva)
            return v.stem(x)
        return v.norm_pre(v.patch_drop(v._pos_embed(v.patch_embed(x))))


class _Head(nn.Module):
    """What follows the blocks: the final norm, the pool and the classifier."""

    def __init__(self, vit: nn.Module) -> None:
        super().__init__()
        self.vit = vit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.vit.forward_head(self.vit.norm(x))


def _signature(module: nn.Module) -> tuple:
    """What decides a module's FLOPs at a given input shape: its classes, parameter shapes and
    plain settings (token counts, versions, grids), submodule by submodule."""
    if isinstance(module, (_Stem, _Head)):  # shared by the variants of a model (build_sharing)
        v = module.vit
        parts = (v.patch_embed, v.norm_pre) if isinstance(module, _Stem) else (v.norm, v.head)
        return (type(module).__name__, *map(id, parts), v.num_prefix_tokens, v.global_pool)
    out = []
    for name, m in module.named_modules():
        plain = tuple(sorted((k, v) for k, v in vars(m).items()
                             if not k.startswith("_") and isinstance(v, (bool, int, float, str, tuple))))  # fmt: skip
        params = tuple((n, tuple(p.shape)) for n, p in m.named_parameters(recurse=False))
        out.append((name, type(m).__qualname__, plain, params))
    return tuple(out)


def _hw(model: nn.Module, img_size: int | tuple[int, int] | None) -> tuple[int, int]:
    size = tuple(model.patch_embed.img_size) if img_size is None else img_size
    return (size, size) if isinstance(size, int) else tuple(size)


def _fvcore(module: nn.Module, x: torch.Tensor) -> tuple[dict[str, int], dict[str, int]]:
    """fvcore's MACs per operator, and the operators it could not count (with their calls)."""
    with warnings.catch_warnings():  # fvcore's import touches the deprecated torch.jit.script
        warnings.simplefilter("ignore", FutureWarning)
        from fvcore.nn import FlopCountAnalysis

    was_training = module.training
    module.eval()
    try:
        analysis = FlopCountAnalysis(module, x)
        analysis.set_op_handle("aten::scaled_dot_product_attention", sdpa_flop_jit)
        analysis.set_op_handle("aten::einsum", einsum_flop_jit)
        analysis.set_op_handle("aten::rms_norm", rms_norm_flop_jit)
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        analysis.tracer_warnings("none")
        return {op: int(n) for op, n in analysis.by_operator().items()}, dict(analysis.unsupported_ops())
    finally:
        module.train(was_training)


def _report(model: nn.Module, by_operator: dict[str, int], unsupported: dict[str, int],
            variant: Variant | None) -> FlopReport:  # fmt: skip
    allowed = ZERO_COST_OPS | reducer_zero_cost_ops(variant)
    unknown = sorted(op for op in unsupported if op not in allowed)
    if unknown:
        raise FlopCountError(
            f"fvcore cannot count {', '.join(unknown)} in {type(model).__name__}; add a handle in "
            "tlbench/flops.py or, if element-wise, list it in ZERO_COST_OPS"
        )
    params = sum(p.numel() for p in model.parameters())
    return FlopReport(sum(by_operator.values()) / 1e9, params / 1e6, by_operator, dict(unsupported))


def reducer_zero_cost_ops(variant: Variant | None) -> dict[str, str]:
    """The operators a variant's reducer declares as zero-cost (none for the baseline)."""
    if variant is None or variant.is_baseline:
        return {}
    return dict(get_reducer(variant.method).zero_cost_ops)


def analytic_flops(info: ModelInfo, variant: Variant, norms: bool = True) -> int:
    """Closed-form MACs of a ViT with a reducer, per image, fvcore conventions, composed per part
    (tlbench.backbones.parts): patch embedding + norm_pre + every block at its token counts (the
    variant's TokenSchedule) + the reducer's own MACs + final norm and head.

    `norms=False` drops the norm terms (LayerNorm 5 per element, RmsNorm 3), which matmul-only
    counters such as torch's FlopCounterMode do not count.
    """

    sched = token_schedule(info, variant, norms=norms)
    d = info.embed_dim
    arch = info.arch or standard_arch(d, info.mlp_hidden, info.depth)
    n = 1 if norms else 0
    total = info.num_patches * info.tubelet * info.patch_size**2 * info.in_chans * d  # patch/tubelet embedding
    total += n * arch.embed_norm * info.num_patches * d  # a norm inside the patch embedding
    total += n * arch.stem_norm * (info.num_prefix_tokens + info.num_patches) * d  # norm_pre
    blocks = zip(arch.blocks, sched.attn_tokens, sched.mlp_tokens, strict=True)
    total += sum(b.macs(a, f, norms) for b, a, f in blocks)
    return total + sched.module_macs + n * arch.final_norm * sched.tokens_out * d + d * info.num_classes


@dataclass(frozen=True)
class VariantFlops:
    """One row of `tlbench flops`."""

    model: str
    variant: str
    position: float | None
    block_index: int | None
    num_tokens: int | None
    img_size: int
    gflops: float
    gflops_analytic: float
    params_m: float
    zero_ops: tuple[str, ...] = ()  # operators counted as zero (all on ZERO_COST_OPS)


def count_variants(variants: list[Variant], img_size: int | None = None,
                   frames: int | None = None) -> list[VariantFlops]:  # fmt: skip
    """Count every variant of one model (see iter_variant_flops)."""
    return list(iter_variant_flops(variants, img_size, frames))


def iter_variant_flops(variants: list[Variant], img_size: int | None = None,
                       frames: int | None = None) -> Iterator[VariantFlops]:  # fmt: skip
    """Count variants one by one; the stock model is built once and its weights shared."""

    if not variants:
        return
    info = model_info(variants[0].model, img_size, frames)
    models = build_sharing(variants, img_size, frames)
    cache: dict = {}  # shared: each distinct (module, token count) is traced once
    for v in variants:
        yield variant_flops(info, v, models[v.name], cache)


def variant_flops(info: ModelInfo, variant: Variant, model: nn.Module, cache: dict | None = None) -> VariantFlops:
    """fvcore and analytic count of one built variant; pass one `cache` for the variants of a
    model to trace each distinct part once (count_flops_composed)."""
    rep = count_flops_composed(model, info.img_size, info.in_chans, cache, variant)
    return VariantFlops(
        model=info.name, variant=variant.name, position=variant.position,
        block_index=variant.block_index, num_tokens=variant.num_tokens, img_size=info.img_size[0],
        gflops=rep.gflops, gflops_analytic=analytic_flops(info, variant) / 1e9,
        params_m=rep.params_m, zero_ops=tuple(sorted(rep.zero_ops)),
    )  # fmt: skip


def flopcounter_macs(model: nn.Module, img_size: int | None = None, in_chans: int = 3) -> int:
    """Cross-check with torch's FlopCounterMode (2 FLOPs per MAC, matmuls only), in MACs.

    Runs on a meta-device copy: on the CPU, FlopCounterMode counts fused attention as zero
    (pytorch/pytorch#195460); on meta, attention decomposes into counted bmm calls.
    """
    from torch.utils.flop_counter import FlopCounterMode

    size = img_size or model.patch_embed.img_size[0]
    meta = copy.deepcopy(model).to("meta")
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        meta(torch.empty(1, in_chans, size, size, device="meta"))
    return counter.get_total_flops() // 2
