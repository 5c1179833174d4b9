"""Which timm ViTs tlbench supports: those whose analytic FLOP count equals fvcore's exactly.

flops.analytic_flops composes one formula per part kind (tlbench.measure.parts), so a norm, block,
attention or MLP kind with no formula would be silently miscounted; such models are refused by
name, with the reason, instead.
The check reads the structure of a one-block meta build, so listing every timm ViT is cheap.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from tlbench.errors import ConfigError

# What flops.analytic_flops models, so that fvcore == analytic holds exactly.
SUPPORTED = (
    "tlbench supports timm VisionTransformers made of a conv patch embedding, LayerNorm or RmsNorm, "
    "Attention or DiffAttention, Mlp, GluMlp or SwiGLU, in sequential or parallel blocks "
    "(tlbench/measure/parts.py)"
)
NO_INIT = {"weight_init": "skip"}  # meta builds: init is most of their time and means nothing


@functools.cache
def vit_names() -> tuple[str, ...]:
    """timm ViT names tlbench supports: those `unsupported_reason` passes (all of them: ~0.5 s)."""
    return tuple(n for n in _timm_vit_names() if _probe_reason(n) is None)


@functools.cache
def _timm_vit_names() -> tuple[str, ...]:
    """Every model of timm's vision_transformer, deit and eva modules, supported or not."""
    import timm

    from tlbench.backbones.eva import eva_names

    return tuple(timm.list_models(module="vision_transformer") + timm.list_models(module="deit")) + eva_names()


def _probe_reason(name: str) -> str | None:
    """Why `name` is refused (one line), or None (see _probe)."""
    return _probe(name)[1]


def coverage() -> dict[str, tuple[tuple[str, ...], dict[str, str]]]:
    """Per timm class (VisionTransformer, VisionTransformerDistilled, Eva): the names tlbench
    accepts and the refused ones with their one-line reasons."""
    out: dict[str, tuple[list[str], dict[str, str]]] = {}
    for name in _timm_vit_names():
        cls, reason = _probe(name)
        ok, refused = out.setdefault(cls, ([], {}))
        if reason:
            refused[name] = reason
        else:
            ok.append(name)
    return {cls: (tuple(ok), refused) for cls, (ok, refused) in out.items()}


@functools.cache
def _probe(name: str) -> tuple[str, str | None]:
    """`name`'s timm class and why it is refused (one line) or None; from a one-block meta build
    without init.

    Blocks of a timm ViT all have one class, so one block tells; skipping depth and weight
    init makes the check ~100x cheaper (all names: ~0.5 s instead of ~50 s).
    """
    from tlbench.backbones.eva import eva_names
    from tlbench.models import _create  # models imports this module at the top

    timm_class = "Eva" if name in eva_names() else "VisionTransformer"
    try:
        with torch.device("meta"):
            try:
                m = _create(name, img_size=None, pretrained=False, num_classes=1000, depth=1, **NO_INIT)
            except ConfigError:  # per-block settings (sapiens2's num_kv_heads) need the full depth
                m = _create(name, img_size=None, pretrained=False, num_classes=1000, **NO_INIT)
    except ConfigError as e:
        return timm_class, str(e)
    if type(m).__name__ == "AvgPoolDistilled":
        timm_class = "VisionTransformerDistilled"
    reason = unsupported_reason(m)
    return timm_class, f"{name} {reason}; {SUPPORTED}" if reason else None


def unsupported_reason(model: nn.Module) -> str | None:
    """Why tlbench cannot use this (meta-built) ViT, as a phrase after its name; None if it can.

    Supported means: a reducer can be inserted before any block, fvcore counts every operator,
    and flops.analytic_flops (composed per part, tlbench.measure.parts) equals fvcore exactly; a
    part no formula covers is refused rather than silently miscounted. Whether an in-block method
    can split a block is a separate, per-method question (BlockParts.in_block).
    """
    from timm.layers import PatchEmbed
    from timm.models.vision_transformer import VisionTransformer

    from tlbench.backbones import eva
    from tlbench.measure.parts import UnsupportedPart, vit_arch
    from tlbench.video import TubeletEmbed

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
