"""Which timm ViT structures tlbench supports: those whose analytic FLOP count equals fvcore's exactly.

flops.analytic_flops is a closed form for one ViT shape, so a norm, gate or MLP it leaves out
would be silently miscounted; such families are refused by name, with the reason, instead.
The check reads the structure of a one-block meta build, so listing every timm ViT is cheap.
"""

from __future__ import annotations

from torch import nn

from tlbench.backbones.video import TubeletEmbed

# What flops.analytic_flops models, so that fvcore == analytic holds exactly.
SUPPORTED = (
    "tlbench supports timm VisionTransformers made of a conv patch embedding, standard LayerNorm "
    "blocks (attn.qkv/proj, mlp.fc1/fc2) and a final LayerNorm"
)
NO_INIT = {"weight_init": "skip"}  # meta builds: init is most of their time and means nothing


def unsupported_reason(model: nn.Module) -> str | None:
    """Why tlbench cannot use this (meta-built) ViT, as a phrase after its name; None if it can.

    Supported means: TokenLearner can be inserted (blocks with `attn` and `mlp`), fvcore counts
    every operator, and flops.analytic_flops equals fvcore exactly, so any norm, gate or MLP
    shape that the closed form leaves out is refused rather than silently miscounted.
    """
    from timm.layers import Mlp, PatchEmbed
    from timm.models.vision_transformer import Attention, Block, ResPostBlock, VisionTransformer


    if type(model) is not VisionTransformer:
        return f"is a {type(model).__name__}, not a plain VisionTransformer"
    d = model.embed_dim
    for b in model.blocks:
        kind = type(b).__name__
        if type(b) not in (Block, ResPostBlock):  # ResPostBlock: post-norm, the same FLOPs
            return f"uses {'parallel ' if 'Parallel' in kind else ''}blocks ({kind})"
        if type(b.attn) is not Attention:
            return f"uses {type(b.attn).__name__} instead of timm's Attention"
        if type(b.mlp) is not Mlp:
            return f"uses a gated MLP ({type(b.mlp).__name__}), not fc1 -> act -> fc2"
        a, f = b.attn, b.mlp
        norms = (a.q_norm, a.k_norm, getattr(a, "norm", None), f.norm)  # attn.norm: newer timm
        if not all(x is None or isinstance(x, nn.Identity) for x in norms):
            return "has extra norms inside attention or MLP (qk-norm or sub-LN)"
        if getattr(a, "gate", None) is not None:
            return "has a gated attention output"
        widths = (a.qkv.in_features, a.qkv.out_features, a.proj.in_features, a.proj.out_features)
        if widths != (d, 3 * d, d, d) or (f.fc1.in_features, f.fc2.out_features) != (d, d):
            return "has attention or MLP widths other than the embedding width"
        for norm in (b.norm1, b.norm2):
            if reason := _norm_reason(norm, "block"):
                return reason
    pe = model.patch_embed
    if type(pe) is TubeletEmbed:  # video: a 3-D conv over t x p x p tubelets
        if pe.proj.padding != (0, 0, 0) or not pe.proj.kernel_size == pe.proj.stride == (pe.tubelet, *pe.patch_size):
            return "has overlapping or strided tubelets"
    else:
        conv = pe.proj if isinstance(pe.proj, nn.Conv2d) else None
        if type(pe) is not PatchEmbed or conv is None or conv.padding != (0, 0):
            return f"has a non-standard patch embedding ({type(pe).__name__})"
        if not conv.kernel_size == conv.stride == tuple(pe.patch_size):
            return "has overlapping or strided patches"
    if not isinstance(pe.norm, nn.Identity):
        return f"normalises the patch embedding ({type(pe.norm).__name__})"
    if not isinstance(model.norm_pre, nn.Identity):
        return "has a norm before the first block (norm_pre, CLIP-style)"
    if isinstance(model.norm, nn.Identity):
        return "has no final norm"
    if reason := _norm_reason(model.norm, "final"):
        return reason
    if getattr(model, "attn_pool", None) is not None or not isinstance(model.fc_norm, nn.Identity):
        return "has a head other than tlbench's average pool"
    return None


def _norm_reason(norm: nn.Module, where: str) -> str | None:
    """fvcore counts an affine LayerNorm as 5 per element (4 without affine; RMSNorm not at all)."""
    if not isinstance(norm, nn.LayerNorm):
        return f"uses {type(norm).__name__} as {where} norm (tlbench counts LayerNorm only)"
    if not norm.elementwise_affine:
        return f"has a {where} LayerNorm without affine parameters"
    return None
