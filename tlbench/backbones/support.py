"""Which timm ViT structures tlbench supports: those whose analytic FLOP count equals fvcore's exactly.

measure.flops.analytic_flops composes one formula per part kind (backbones/parts.py), so a norm, block,
attention or MLP kind with no formula would be silently miscounted; such models are refused by
name, with the reason, instead.
The check reads the structure of a one-block meta build, so listing every timm ViT is cheap.
"""

from __future__ import annotations

from torch import nn

from tlbench.backbones import eva
from tlbench.backbones.parts import UnsupportedPart, vit_arch
from tlbench.backbones.video import TubeletEmbed

# What flops.analytic_flops models, so that fvcore == analytic holds exactly.
SUPPORTED = (
    "tlbench supports timm VisionTransformers made of a conv patch embedding, LayerNorm or RmsNorm, "
    "Attention or DiffAttention, Mlp, GluMlp or SwiGLU, in sequential or parallel blocks "
    "(tlbench/backbones/parts.py)"
)
NO_INIT = {"weight_init": "skip"}  # meta builds: init is most of their time and means nothing


def unsupported_reason(model: nn.Module) -> str | None:
    """Why tlbench cannot use this (meta-built) ViT, as a phrase after its name; None if it can.

    Supported means: a reducer can be inserted before any block, fvcore counts every operator,
    and flops.analytic_flops (composed per part, backbones/parts.py) equals fvcore exactly; a
    part no formula covers is refused rather than silently miscounted. Whether an in-block method
    can split a block is a separate, per-method question (BlockParts.in_block).
    """
    from timm.layers import PatchEmbed
    from timm.models.vision_transformer import VisionTransformer


    if type(model) is eva.TLEva:
        if reason := eva.unsupported_reason(model):
            return reason
    elif not isinstance(model, VisionTransformer) or (
        type(model) is not VisionTransformer and type(model).__name__ != "AvgPoolDistilled"
    ):
        return f"is a {type(model).__name__}, not a plain VisionTransformer or Eva"
    try:
        vit_arch(model)
    except UnsupportedPart as e:
        return str(e)
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
    if getattr(model, "attn_pool", None) is not None or not isinstance(model.fc_norm, nn.Identity):
        return "has a head other than tlbench's average pool"
    return None
