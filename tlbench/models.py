"""ViT variants with a token reducer at relative position p: aliases, position -> block, building.

Position p in [0, 1] maps to block index k = floor(p * depth + 0.5) (round half up); the
TokenLearner runs before block k, and k = depth means after the last block. The unmodified
model (`position=None`) is the baseline. The reducer (TokenLearner unless a variant names another
method) is a plug-in from tlbench.reducers.

Head design (the paper's `gap` classifier): every variant, the baseline included, pools by global
average over the non-prefix tokens, i.e. the S learned tokens after TokenLearner. Class/register
tokens stay in the sequence, untouched by TokenLearner (pretrained blocks expect them), but are
not pooled. timm models are built with `global_pool='avg', fc_norm=False`, so the final
LayerNorm stays before the pool and timm checkpoints load with their original key names.

Supported timm ViTs are those whose FLOPs flops.analytic_flops models exactly (support.py):
`vit_names()` lists them, and any other is refused by name with the reason.
"""

from __future__ import annotations

import copy
import difflib
import functools
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tlbench.backbones import dinov2
from tlbench.errors import ConfigError
from tlbench.reducers import DEFAULT_METHOD, REDUCERS, check_params, get_reducer
from tlbench.support import (
    NO_INIT,
    SUPPORTED,
    _probe_reason,
    _timm_vit_names,
    unsupported_reason,
    vit_names,
)
from tlbench.video import (
    IMAGE_SOURCES,
    VIDEO_DESCRIPTIONS,
    VIDEO_MODELS,
    create_video,
    inflate,
    is_video,
)

# The one alias table: short names for the paper's models and a few more.
ALIASES: dict[str, str] = {
    "vit_ti16": "vit_tiny_patch16_224",
    "vit_s16": "vit_small_patch16_224",
    "vit_s32": "vit_small_patch32_224",
    "vit_b16": "vit_base_patch16_224",
    "vit_b32": "vit_base_patch32_224",
    "vit_b8": "vit_base_patch8_224",
    "vit_l16": "vit_large_patch16_224",
    "vit_l32": "vit_large_patch32_224",
    "vit_h14": "vit_huge_patch14_224",
    # The paper's ViT-G/14 (Zhai et al., "Scaling Vision Transformers"): 48 blocks, width 1664,
    # MLP 8192, 16 heads, 14 px patches; timm's name for this geometry is "gigantic".
    "vit_g14": "vit_gigantic_patch14_224",
}

# Models that are not in timm's registry: timm VisionTransformer built from these arguments.
CUSTOM_MODELS: dict[str, dict[str, Any]] = {
    # For tests: timm's `test_vit` shape, 16 patches.
    "tiny": dict(img_size=32, patch_size=8, embed_dim=64, depth=4, num_heads=2, mlp_ratio=2.0),
    # CPU-sized ViTs that a 2-core machine trains in minutes. No class token (as in the paper);
    # jax init + 2-D sin-cos pos-embed init: with timm's default init they stay on a plateau for
    # hundreds of steps (shared/reference/cpu-demo-feasibility.md). Width 48, not 64: at the same
    # training budget the features are better and a step costs 0.7x (results/README.md).
    # vit_cpu6 is the built-in study's model; vit_cpu12 has B/16's depth (p = 1/4 is block 3).
    "vit_cpu6": dict(img_size=32, patch_size=4, embed_dim=48, depth=6, num_heads=2, mlp_ratio=2.0,
                     class_token=False, weight_init="jax"),  # fmt: skip
    "vit_cpu12": dict(img_size=32, patch_size=4, embed_dim=48, depth=12, num_heads=2,
                      mlp_ratio=2.0, class_token=False, weight_init="jax"),  # fmt: skip
    # vit_cpu6's family for the model-family figure on a CPU (sweeps/vit_family_cpu.toml): two
    # widths x two patch sizes, as the paper's S and B at /32 and /16: width 32 or 48, 8 px patches
    # (16 tokens) or 4 px (64 tokens, vit_cpu6 itself).
    "vit_cpu6_p8": dict(img_size=32, patch_size=8, embed_dim=48, depth=6, num_heads=2,
                        mlp_ratio=2.0, class_token=False, weight_init="jax"),  # fmt: skip
    "vit_cpu6_w32": dict(img_size=32, patch_size=4, embed_dim=32, depth=6, num_heads=2,
                         mlp_ratio=2.0, class_token=False, weight_init="jax"),  # fmt: skip
    "vit_cpu6_w32_p8": dict(img_size=32, patch_size=8, embed_dim=32, depth=6, num_heads=2,
                            mlp_ratio=2.0, class_token=False, weight_init="jax"),  # fmt: skip
}
# vivit_cpu's image source (tlbench.video.IMAGE_SOURCES): vit_cpu6 at vivit_cpu's depth. Train it
# on images and give its checkpoint to vivit_cpu, which inflates it.
CUSTOM_MODELS["vit_cpu8"] = dict(CUSTOM_MODELS["vit_cpu6"], depth=8)
SINCOS_INIT = set(CUSTOM_MODELS) - {"tiny"}  # every CPU-sized model; tiny keeps timm's init

# timm ViTs at another patch size: (timm name, patch size). Built by timm with `patch_size=`, so a
# pretrained or local checkpoint of the stock model loads through timm's checkpoint_filter_fn,
# which resamples the patch embedding to the new patch (resample_patch_embed, PI-resize) and the
# position embedding to the new grid (resample_abs_pos_embed). The paper's L/10 and L/8 are
# ViT-L/16 with smaller patches: at 224 px a 10 px patch gives a 22 x 22 grid (the last 4 pixel
# rows and columns fall outside it, as in any strided conv) and an 8 px patch a 28 x 28 grid.
REPATCHED: dict[str, tuple[str, int]] = {
    "vit_l10": ("vit_large_patch16_224", 10),
    "vit_l8": ("vit_large_patch16_224", 8),
}
DESCRIPTIONS = {
    "tiny": "test model: 32 px, patch 8, width 64, depth 4, 2 heads",
    "vit_cpu6": "CPU-sized depth-6 ViT: 32 px, patch 4, width 48, 2 heads, no class token",
    "vit_cpu8": "CPU-sized depth-8 ViT, vit_cpu6 at vivit_cpu's depth: its checkpoints inflate into vivit_cpu",
    "vit_cpu12": "CPU-sized depth-12 ViT: 32 px, patch 4, width 48, 2 heads, no class token",
    "vit_cpu6_p8": "vit_cpu6 with 8 px patches (16 tokens)",
    "vit_cpu6_w32": "vit_cpu6 at width 32",
    "vit_cpu6_w32_p8": "vit_cpu6 at width 32 with 8 px patches (16 tokens)",
    "vit_l10": "ViT-L/16 with 10 px patches (paper's L/10): 22 x 22 grid at 224 px",
    "vit_l8": "ViT-L/16 with 8 px patches (paper's L/8): 28 x 28 grid at 224 px",
    "vit_g14": "ViT-G/14 (vit_gigantic_patch14_224): 48 blocks, width 1664, MLP 8192",
    "dinov2_s14": "vit_small_patch14_dinov2 at 224 px; --pretrained: DINOv2 offline (docs/dinov2.md)",
    **VIDEO_DESCRIPTIONS,
}


@dataclass(frozen=True)
class ModelInfo:
    """Architecture facts needed to place TokenLearner and count FLOPs."""

    name: str
    depth: int
    embed_dim: int
    num_heads: int
    mlp_hidden: int
    patch_size: int
    img_size: tuple[int, int]
    in_chans: int
    num_patches: int
    num_prefix_tokens: int
    num_classes: int
    class_token: bool = False  # the first prefix token is a class token (others are registers)
    # Video (tlbench.video): num_patches = time_steps * the spatial patches, each a tubelet of
    # `tubelet` frames; an image is one time step of one frame, so these stay 1 for images.
    time_steps: int = 1
    tubelet: int = 1

    @property
    def spatial_patches(self) -> int:
        """Patch tokens per time step: what a per-time-step reducer reduces (all of them for images)."""
        return self.num_patches // self.time_steps

    @property
    def frames(self) -> int:
        return self.time_steps * self.tubelet

    @property
    def clip_frames(self) -> int | None:
        """Frames of a video model's input clip; None for an image model (its data are images)."""
        return self.frames if self.time_steps > 1 else None


@dataclass(frozen=True)
class Variant:
    """One point of the study: the baseline (position None) or a reducer at one block."""

    model: str  # resolved name (timm name or a tlbench custom model)
    position: float | None  # relative position p as requested
    block_index: int | None  # k actually used: the reducer acts at block k
    num_tokens: int | None  # S, the tokens the reducer keeps
    version: str = "1.1"  # TokenLearner's module version
    fuser: bool = False  # TokenLearner with the TokenFuser
    method: str = DEFAULT_METHOD  # the reducer, a key of tlbench.reducers.REDUCERS
    # The method's own integer parameters, sorted by name (ToMe's r); empty for most methods,
    # so every name and row from before parameters existed stays as it was.
    params: tuple[tuple[str, int], ...] = ()

    def param(self, name: str, default: int | None = None) -> int | None:
        """One method parameter's value, or `default` when the variant does not set it."""
        return dict(self.params).get(name, default)

    @property
    def is_baseline(self) -> bool:
        return self.block_index is None

    @property
    def name(self) -> str:
        """Stable id: 'baseline', 'p0.25-s8' (+ '-v1.0', '-fuser') for TokenLearner, the method as
        a prefix for any other ('tome-p0.5-s8'); with `model` the resume and CI-baseline key."""
        if self.is_baseline:
            return "baseline"
        label = get_reducer(self.method).label(self)
        return label if self.method == DEFAULT_METHOD else f"{self.method}-{label}"


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


def block_index(position: float, depth: int) -> int:
    """Relative position p -> block index k = floor(p * depth + 0.5), round half up."""
    if (
        not isinstance(position, (int, float))
        or not math.isfinite(position)
        or not 0 <= position <= 1
    ):
        raise ConfigError(
            f"position must be in [0, 1] (0 = before the first block), got {position}"
        )
    return math.floor(position * depth + 0.5)


def _create(
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
        if name == dinov2.ALIAS:  # timm's model; its weights come offline, below, not from the hub
            stock, args["img_size"] = dinov2.TIMM_NAME, img_size or dinov2.DEFAULT_IMG_SIZE
        if name in REPATCHED:  # the stock model's weights, resampled by timm to the new patch
            stock, args["patch_size"] = REPATCHED[name]
        try:
            model = timm.create_model(stock, pretrained=pretrained and name != dinov2.ALIAS, **args)
        except (
            RuntimeError,
            OSError,
            ValueError,
            TypeError,
        ) as e:  # no network, bad kwargs, missing weights
            what = "load pretrained weights for" if pretrained else "build"
            raise ConfigError(f"could not {what} {name}: {_first_line(e)}") from None
        except AssertionError as e:  # timm asserts on head args: distilled DeiTs read 2 tokens
            raise ConfigError(
                f"{name} cannot take tlbench's average-pool head: {_first_line(e)}"
            ) from None
        if pretrained and name == dinov2.ALIAS:
            dinov2.load_pretrained(model)
    if not isinstance(model, VisionTransformer):
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
        return _create(source, img_size=None, pretrained=True, num_classes=0)
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
        m = _create(resolved, img_size=img_size, pretrained=False, num_classes=1000, frames=frames, **NO_INIT)
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
        num_heads=m.blocks[0].attn.num_heads,
        mlp_hidden=m.blocks[0].mlp.fc1.out_features,
        patch_size=patch[0],
        img_size=tuple(size),
        in_chans=m.patch_embed.proj.in_channels,
        num_patches=m.patch_embed.num_patches,
        num_prefix_tokens=m.num_prefix_tokens,
        num_classes=m.num_classes,
        class_token=m.cls_token is not None,
        time_steps=getattr(m.patch_embed, "time_steps", 1),
        tubelet=getattr(m.patch_embed, "tubelet", 1),
    )


def _check_frames(resolved: str, frames: int) -> None:
    """Frames are for video models, a positive multiple of the tubelet's time size."""
    if resolved not in VIDEO_MODELS:
        raise ConfigError(f"{resolved} is an image model; --frames is for video models ({', '.join(VIDEO_MODELS)})")
    t = VIDEO_MODELS[resolved]["tubelet"]
    if isinstance(frames, bool) or not isinstance(frames, int) or frames < 1 or frames % t:
        raise ConfigError(f"frames must be a positive multiple of {resolved}'s tubelet time size {t}, got {frames!r}")


def make_variant(
    model: str,
    position: float | None = None,
    num_tokens: int = 8,
    *,
    version: str = "1.1",
    fuser: bool = False,
    img_size: int | None = None,
    method: str = DEFAULT_METHOD,
    params: Mapping[str, int] | None = None,
    frames: int | None = None,
) -> Variant:
    """Validate one (model, method, p, S, params) and return its Variant (block index resolved).

    A method whose S follows from its parameters (tome_r) ignores `num_tokens` and records the
    patch tokens it leaves after the last block instead. On a video model S is per time step.
    """
    info = model_info(model, img_size, frames)
    if position is None:
        return Variant(info.name, None, None, None)
    reducer = get_reducer(method)
    if info.time_steps > 1 and not getattr(reducer, "per_time_step", False):
        per_step = ", ".join(sorted(n for n, r in REDUCERS.items() if getattr(r, "per_time_step", False)))
        raise ConfigError(f"{method} cannot act per time step on the video model {info.name}; video takes {per_step}")
    k = block_index(position, info.depth)
    pairs = tuple(sorted((params or {}).items()))
    check_params(method, pairs)
    derived = getattr(reducer, "derived_tokens", None)
    if derived is not None:
        num_tokens = 1  # a placeholder until the method's parameters are checked
    elif isinstance(num_tokens, bool) or not isinstance(num_tokens, int) or num_tokens < 1:
        raise ConfigError(f"number of tokens must be a positive integer, got {num_tokens!r}")
    elif num_tokens > info.spatial_patches:
        per_step = " per time step" if info.time_steps > 1 else ""
        raise ConfigError(
            f"{num_tokens} tokens is more than the {info.spatial_patches} patch tokens{per_step} it would reduce"
        )
    variant = Variant(info.name, float(position), k, num_tokens, version, fuser, method, pairs)
    reducer.check(info, variant)
    return replace(variant, num_tokens=derived(info, variant)) if derived is not None else variant


def param_grid(params: Mapping[str, int | Sequence[int]] | None) -> list[dict[str, int]]:
    """{'r': [13, 8]} -> [{'r': 13}, {'r': 8}]: every combination, in the order given."""
    if not params:
        return [{}]
    lists = {k: [v] if isinstance(v, int) else list(v) for k, v in params.items()}
    return [dict(zip(lists, combo, strict=True)) for combo in itertools.product(*lists.values())]


def make_variants(
    model: str,
    positions: list[float] | None = None,
    tokens: list[int] | tuple[int, ...] = (8, 16),
    *,
    baseline: bool = True,
    version: str = "1.1",
    fuser: bool = False,
    img_size: int | None = None,
    method: str = DEFAULT_METHOD,
    params: Mapping[str, int | Sequence[int]] | None = None,
    frames: int | None = None,
) -> list[Variant]:
    """Baseline first, then the reducer at each position x token count x parameter combination
    (`params` maps a name to one value or a list), sorted by (k, S, params).

    `positions=None` means every block index 0..depth (0..depth-1 with the fuser). Positions that
    map to the same block index are one variant: the first one given names it.
    """
    info = model_info(model, img_size, frames)
    if positions is None:
        last = info.depth - 1 if fuser else info.depth
        positions = [k / info.depth for k in range(last + 1)]
    out = [make_variant(model, img_size=img_size, frames=frames)] if baseline else []
    seen: dict[tuple[int, int, tuple[tuple[str, int], ...]], Variant] = {}
    for combo in param_grid(params):
        for p in positions:
            for s in tokens:
                v = make_variant(model, p, s, version=version, fuser=fuser, img_size=img_size,
                                 method=method, params=combo, frames=frames)  # fmt: skip
                seen.setdefault((v.block_index, v.num_tokens, v.params), v)
    return out + [seen[key] for key in sorted(seen)]


def apply_reducer(model: nn.Module, variant: Variant) -> nn.Module:
    """Put a fresh reducer into a stock timm ViT as `variant` says; returns the model.

    The model's `blocks` container is replaced, never edited, and its blocks are wrapped, never
    changed, so a copy made by shared_weights_copy leaves the original intact.
    """
    model.tl_variant = variant
    if variant.is_baseline:
        return model
    info = model_info(variant.model, int(model.patch_embed.img_size[0]), getattr(model.patch_embed, "num_frames", None))
    return get_reducer(variant.method).apply(model, info, variant)


def build_model(
    variant: Variant,
    *,
    img_size: int | None = None,
    pretrained: bool = False,
    num_classes: int = 1000,
    checkpoint_path: str | Path | None = None,
    frames: int | None = None,
) -> nn.Module:
    """Build `variant` (eval mode): stock model, optional pretrained backbone, fresh TokenLearner."""
    model_info(variant.model, img_size, frames)  # validates the image size (and a video's frames)
    model = _create(
        variant.model,
        img_size=img_size,
        pretrained=pretrained and not checkpoint_path,
        num_classes=num_classes,
        frames=frames,
    )
    if checkpoint_path is not None:
        load_backbone(model, checkpoint_path)
    return apply_reducer(model, variant).eval()


def build_variant(
    model: str,
    position: float | None = None,
    num_tokens: int = 8,
    img_size: int | None = None,
    version: str = "1.1",
    fuser: bool = False,
    pretrained: bool = False,
    num_classes: int = 1000,
    checkpoint_path: str | Path | None = None,
) -> nn.Module:
    """The notebook entry point: a timm ViT with TokenLearner before block round(p * depth).

    Args:
        model: alias (`tlbench models`) or any timm ViT name.
        position: relative position p in [0, 1]; None builds the unmodified baseline.
        num_tokens: S learned tokens.
        img_size: input size (default: the model's).
        version: TokenLearner "1.1" (MLP + softmax, default) or "1.0" (convs + sigmoid).
        fuser: the paper's TokenLearner + TokenFuser in every layer from p on.
        pretrained: load timm weights into the backbone (the TokenLearner starts fresh).
        num_classes: classifier outputs.
        checkpoint_path: a local timm-format checkpoint instead of the hub (implies pretrained).

    Returns:
        The model in eval mode, with `model.tl_variant` set.
    """
    variant = make_variant(
        model, position, num_tokens, version=version, fuser=fuser, img_size=img_size
    )
    return build_model(
        variant,
        img_size=img_size,
        pretrained=pretrained,
        num_classes=num_classes,
        checkpoint_path=checkpoint_path,
    )


def build_sharing(
    variants: list[Variant], img_size: int | None = None, frames: int | None = None
) -> dict[str, nn.Module]:
    """Variants of one model whose backbones share one set of weights (eval mode), by name.

    For timing and counting, where weights do not matter: one copy in memory however many variants.
    A reducer that edits a shared module instead of replacing it (a class swap, a patched forward)
    would change the baseline too: that raises here.
    """
    if not variants:
        return {}
    base = build_model(Variant(variants[0].model, None, None, None), img_size=img_size, frames=frames)
    before = _module_tree(base)
    out = {}
    for v in variants:
        out[v.name] = base if v.is_baseline else apply_reducer(shared_weights_copy(base), v).eval()
        if _module_tree(base) != before:
            raise RuntimeError(f"reducer {v.method!r} mutated the baseline's modules building {v.name}")
    return out


def _module_tree(model: nn.Module) -> list[tuple[str, int, type, Any]]:
    """Every module's name, identity, class and forward: what applying a reducer must not change."""
    return [(name, id(m), type(m), m.__dict__.get("forward")) for name, m in model.named_modules()]


def load_backbone(model: nn.Module, path: str | Path) -> None:
    """Load a timm-format state dict into a stock ViT; pos-embed resampled, mismatched head dropped.

    A video model takes an image ViT's checkpoint (its IMAGE_SOURCES alias, or any of the same
    geometry) and inflates it (tlbench.video.inflate, central-frame init).
    """
    from timm.models import load_state_dict
    from timm.models.vision_transformer import checkpoint_filter_fn

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"checkpoint file not found: {path}")
    try:
        raw = load_state_dict(str(path))
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
