"""timm ViTs as tlbench builds them: names resolved, the stock model created with tlbench's head,
architecture facts read off a meta build, checkpoints loaded, and which timm ViTs are supported.

Head design (the paper's `gap` classifier): every variant, the baseline included, pools by global
average over the non-prefix tokens, i.e. the S learned tokens after TokenLearner. Class/register
tokens stay in the sequence, untouched by TokenLearner (pretrained blocks expect them), but are
not pooled. timm models are built with `global_pool='avg', fc_norm=False`, so the final
LayerNorm stays before the pool and timm checkpoints load with their original key names.

Supported timm ViTs are those whose FLOPs measure.flops.analytic_flops models exactly
(support.py): `vit_names()` lists them, and any other is refused by name with the reason.
"""

from __future__ import annotations

import copy
import difflib
import functools
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tlbench.backbones import dinov2, eva, parts
from tlbench.backbones.distilled import with_average_pool
from tlbench.backbones.eva import eva_names
from tlbench.backbones.registry import ALIASES, CUSTOM_MODELS, REPATCHED, SINCOS_INIT
from tlbench.backbones.support import NO_INIT, SUPPORTED, unsupported_reason
from tlbench.backbones.video import IMAGE_SOURCES, VIDEO_MODELS, create_video, inflate, is_video
from tlbench.core import ModelInfo
from tlbench.errors import ConfigError


def resolve_model(name: str) -> str:
    """Alias or timm name -> the resolved name; ConfigError with the closest names otherwise."""
    import timm

    name = name.strip()
    if name in ALIASES:
        return ALIASES[name]
    if name in CUSTOM_MODELS or name in REPATCHED or name in VIDEO_MODELS or name == dinov2.ALIAS:
        return name
    if name.split(".")[0] in _timm_vit_names():
        reason = _probe_reason(name.split(".")[0])
        if reason:
            raise ConfigError(reason)
        return name
    if timm.is_model(name):
        raise ConfigError(
            f"{name} is a timm model but not a VisionTransformer; `tlbench models --all` lists those"
        )
    close = difflib.get_close_matches(name, [*ALIASES, *CUSTOM_MODELS, *VIDEO_MODELS, *vit_names()], n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else "; `tlbench models` lists them"
    raise ConfigError(f"unknown model {name!r}{hint}")


def create(
    name: str, *, img_size: int | None, pretrained: bool, num_classes: int, frames: int | None = None,
    **kw: Any,
) -> nn.Module:
    """Instantiate the stock (unmodified) model with tlbench's head convention."""
    import timm
    from timm.models.vision_transformer import VisionTransformer

    if name in VIDEO_MODELS:
        source = _image_source(name) if pretrained else None  # first: the hub may be out of reach
        model = create_video(name, img_size=img_size, frames=frames, num_classes=num_classes, **kw)
        if source is not None:  # its hub weights, inflated (scenic's ViViT init)
            inflate(source.state_dict(), model)
    elif name in CUSTOM_MODELS:
        args = dict(CUSTOM_MODELS[name], num_classes=num_classes, global_pool="avg", fc_norm=False)
        if img_size is not None:
            args["img_size"] = img_size
        model = VisionTransformer(**{**args, **kw})  # kw may override weight_init
        if name in SINCOS_INIT and model.pos_embed is not None:
            from timm.layers import build_sincos2d_pos_embed

            grid = list(model.patch_embed.grid_size)
            with torch.no_grad():
                pe = build_sincos2d_pos_embed(grid, model.embed_dim, device=model.pos_embed.device)
                model.pos_embed.copy_(pe.unsqueeze(0))
    else:
        args = dict(num_classes=num_classes, global_pool="avg", fc_norm=False, **kw)
        if img_size is not None:
            args["img_size"] = img_size
        stock = name
        if name in eva_names():  # timm's Eva names its fc_norm switch differently
            args["use_fc_norm"] = args.pop("fc_norm")
            args.pop("weight_init", None)  # Eva has no switch to skip its init
        if name == dinov2.ALIAS:  # timm's model; its weights come offline, below, not from the hub
            stock, args["img_size"] = dinov2.TIMM_NAME, img_size or dinov2.DEFAULT_IMG_SIZE
        if name in REPATCHED:  # the stock model's weights, resampled by timm to the new patch
            stock, args["patch_size"] = REPATCHED[name]
        hub = pretrained and name != dinov2.ALIAS
        try:
            try:
                model = timm.create_model(stock, pretrained=hub, **args)
            except AssertionError as e:  # timm asserts on head args: distilled DeiTs read 2 tokens
                if "distilled" not in str(e):
                    raise ConfigError(f"{name} cannot take tlbench's average-pool head: {_first_line(e)}") from None
                token_args = {**args, "global_pool": "token"}
                model = with_average_pool(timm.create_model(stock, pretrained=hub, **token_args))
        except (RuntimeError, OSError, ValueError, TypeError) as e:  # no network, bad kwargs, missing weights
            what = "load pretrained weights for" if pretrained else "build"
            raise ConfigError(f"could not {what} {name}: {_first_line(e)}") from None
        if pretrained and name == dinov2.ALIAS:
            dinov2.load_pretrained(model)
    if isinstance(model, eva.Eva):
        model = eva.adapt(model)
    elif not isinstance(model, VisionTransformer):
        raise ConfigError(f"{name} is a {type(model).__name__}, not a timm VisionTransformer")
    if getattr(model, "pool_include_prefix", False):  # e.g. test_vit3: keep the head convention
        model.pool_include_prefix = False
    return model


def _image_source(video: str) -> nn.Module:
    """The hub-pretrained image ViT whose weights inflate into the video model `video`."""
    source = resolve_model(IMAGE_SOURCES[video])
    if source in CUSTOM_MODELS:
        raise ConfigError(f"{video} inflates {source}, which has no hub weights: train {source} "
                          "and give its checkpoint (--checkpoint, model.checkpoint)")  # fmt: skip
    try:
        return create(source, img_size=None, pretrained=True, num_classes=0)
    except ConfigError as e:
        raise ConfigError(f"{video} inflates {source}'s weights; {e}") from None


def _first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


@functools.cache
def model_info(name: str, img_size: int | None = None, frames: int | None = None) -> ModelInfo:
    """Architecture of a model (built on the meta device: instant, no weights); `frames` for video."""
    resolved = resolve_model(name)
    if frames is not None:
        _check_frames(resolved, frames)
    with torch.device("meta"):
        m = create(resolved, img_size=img_size, pretrained=False, num_classes=1000, frames=frames, **NO_INIT)
    if reason := unsupported_reason(m):
        raise ConfigError(f"{resolved} {reason}; {SUPPORTED}")
    patch = m.patch_embed.patch_size
    size = m.patch_embed.img_size
    # A repatched model keeps its stock image size (224 px with 10 px patches: a 22 x 22 grid).
    stock_size = img_size is not None and resolved in REPATCHED and img_size == model_info(resolved).img_size[0]
    if img_size is not None and (img_size % patch[0] or img_size % patch[1]) and not stock_size:
        raise ConfigError(
            f"image size {img_size} is not divisible by {resolved}'s patch size {patch[0]}"
        )
    if patch[0] != patch[1]:
        raise ConfigError(
            f"{resolved} has a non-square patch {patch}; tlbench needs square patches"
        )
    return ModelInfo(
        name=resolved,
        depth=len(m.blocks),
        embed_dim=m.embed_dim,
        num_heads=parts.num_heads(m.blocks[0]),
        mlp_hidden=parts.mlp_hidden(m.blocks[0]),
        patch_size=patch[0],
        img_size=tuple(size),
        in_chans=m.patch_embed.proj.in_channels,
        num_patches=m.patch_embed.num_patches,
        num_prefix_tokens=m.num_prefix_tokens,
        num_classes=m.num_classes,
        class_token=m.cls_token is not None,
        time_steps=getattr(m.patch_embed, "time_steps", 1),
        tubelet=getattr(m.patch_embed, "tubelet", 1),
        arch=parts.vit_arch(m),
    )


def _check_frames(resolved: str, frames: int) -> None:
    """Frames are for video models, a positive multiple of the tubelet's time size."""
    if resolved not in VIDEO_MODELS:
        raise ConfigError(f"{resolved} is an image model; --frames is for video models ({', '.join(VIDEO_MODELS)})")
    t = VIDEO_MODELS[resolved]["tubelet"]
    if isinstance(frames, bool) or not isinstance(frames, int) or frames < 1 or frames % t:
        raise ConfigError(f"frames must be a positive multiple of {resolved}'s tubelet time size {t}, got {frames!r}")


def load_backbone(model: nn.Module, path: str | Path) -> None:
    """Load a timm-format state dict into a stock ViT; pos-embed resampled, mismatched head dropped.

    A video model takes an image ViT's checkpoint (its IMAGE_SOURCES alias, or any of the same
    geometry) and inflates it (tlbench.backbones.video.inflate, central-frame init).
    """
    from timm.models import load_state_dict
    from timm.models.vision_transformer import checkpoint_filter_fn

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"checkpoint file not found: {path}")
    try:
        raw = load_state_dict(str(path))
        if type(model).__name__ == "TLEva":  # timm's Eva checkpoints have their own key mapping
            from timm.models.eva import checkpoint_filter_fn
        state = raw if is_video(model) else checkpoint_filter_fn(raw, model)
    except Exception as e:  # a corrupt or foreign file: say which, in one line
        raise ConfigError(f"could not read checkpoint {path}: {type(e).__name__}: {e}") from None
    if is_video(model):
        try:
            inflate(state, model)
        except ConfigError as e:
            raise ConfigError(f"checkpoint {path}: {e}") from None
        return
    own = model.state_dict()
    for key in [k for k in state if k.startswith("head.") and k in own]:
        if state[key].shape != own[key].shape:  # a different number of classes: keep a fresh head
            del state[key]
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("head.")]
    if missing or unexpected:
        raise ConfigError(
            f"checkpoint {path} does not fit {type(model).__name__}: "
            f"missing {missing[:3]}, unexpected {unexpected[:3]}"
        )


def shared_weights_copy(model: nn.Module) -> nn.Module:
    """A copy whose module tree can be edited while sharing the weights (for FLOP counting)."""
    new = copy.copy(model)
    new._modules = dict(model._modules)
    return new


def pre_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Frozen features for probing: the pooled representation before the classifier, [B, D]."""
    return model.forward_head(model.forward_features(x), pre_logits=True)


@functools.cache
def vit_names() -> tuple[str, ...]:
    """timm ViT names tlbench supports: those `unsupported_reason` passes (all of them: ~0.5 s)."""
    return tuple(n for n in _timm_vit_names() if _probe_reason(n) is None)


@functools.cache
def _timm_vit_names() -> tuple[str, ...]:
    """Every model of timm's vision_transformer, deit and eva modules, supported or not."""
    import timm

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
    timm_class = "Eva" if name in eva_names() else "VisionTransformer"
    try:
        with torch.device("meta"):
            try:
                m = create(name, img_size=None, pretrained=False, num_classes=1000, depth=1, **NO_INIT)
            except ConfigError:  # per-block settings (sapiens2's num_kv_heads) need the full depth
                m = create(name, img_size=None, pretrained=False, num_classes=1000, **NO_INIT)
    except ConfigError as e:
        return timm_class, str(e)
    if type(m).__name__ == "AvgPoolDistilled":
        timm_class = "VisionTransformerDistilled"
    reason = unsupported_reason(m)
    return timm_class, f"{name} {reason}; {SUPPORTED}" if reason else None
