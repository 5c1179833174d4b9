"""A variant is backbone x reducer x placement: position p -> block index, validation, building.

Position p in [0, 1] maps to block index k = floor(p * depth + 0.5) (round half up); the reducer
acts at block k (before it, or inside it for in-block methods), and k = depth means after the last
block. The unmodified model (`position=None`) is the baseline. Building a variant builds the stock
backbone (backbones/) and applies the reducer (reducers/) to a new `blocks` container, so variants
of one model can share one set of weights (build_sharing).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from torch import nn

from tlbench.backbones.vit import create, load_backbone, model_info, shared_weights_copy
from tlbench.config import PAPER_TOKENS
from tlbench.core import DEFAULT_METHOD, ModelInfo, Variant
from tlbench.errors import ConfigError
from tlbench.reducers import REDUCERS, check_params, get_reducer


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
    else:
        check_tokens(info, num_tokens)
    variant = Variant(info.name, float(position), k, num_tokens, version, fuser, method, pairs)
    reducer.check(info, variant)
    if derived is not None:
        variant = replace(variant, num_tokens=derived(info, variant))
    return replace(variant, label=reducer.label(variant))


def check_tokens(info: ModelInfo, num_tokens: Any) -> None:
    """S must be a positive integer, at most the patch tokens (per time step) it reduces."""
    if isinstance(num_tokens, bool) or not isinstance(num_tokens, int) or num_tokens < 1:
        raise ConfigError(f"number of tokens must be a positive integer, got {num_tokens!r}")
    if num_tokens > info.spatial_patches:
        per_step = " per time step" if info.time_steps > 1 else ""
        raise ConfigError(
            f"{num_tokens} tokens is more than the {info.spatial_patches} patch tokens{per_step} it would reduce"
        )


def param_grid(params: Mapping[str, int | Sequence[int]] | None) -> list[dict[str, int]]:
    """{'r': [13, 8]} -> [{'r': 13}, {'r': 8}]: every combination, in the order given."""
    if not params:
        return [{}]
    lists = {k: [v] if isinstance(v, int) else list(v) for k, v in params.items()}
    return [dict(zip(lists, combo, strict=True)) for combo in itertools.product(*lists.values())]


def make_variants(
    model: str,
    positions: list[float] | None = None,
    tokens: list[int] | tuple[int, ...] = PAPER_TOKENS,
    *,
    baseline: bool = True,
    version: str = "1.1",
    fuser: bool = False,
    img_size: int | None = None,
    method: str = DEFAULT_METHOD,
    params: Mapping[str, int | Sequence[int]] | None = None,
    frames: int | None = None,
    impossible: list[tuple[Variant, str]] | None = None,
) -> list[Variant]:
    """Baseline first, then the reducer at each position x token count x parameter combination
    (`params` maps a name to one value or a list), sorted by (k, S, params).

    `positions=None` means every block index 0..depth (0..depth-1 with the fuser). Positions that
    map to the same block index are one variant: the first one given names it. With `impossible`
    (a list), a combination the method cannot take (ToMe after the last block) is appended to it
    as (its unchecked Variant, why) instead of refused; a bad position or parameter still is.
    """
    info = model_info(model, img_size, frames)
    if positions is None:
        last = info.depth - 1 if fuser else info.depth
        positions = [k / info.depth for k in range(last + 1)]
    out = [make_variant(model, img_size=img_size, frames=frames)] if baseline else []
    combos = param_grid(params)
    reducer = get_reducer(method)
    if impossible is not None:  # what no method can take is refused before any pair is judged
        for p in positions:
            block_index(p, info.depth)
        for combo in combos:
            check_params(method, tuple(sorted(combo.items())))
        if getattr(reducer, "derived_tokens", None) is None:
            for s in tokens:
                check_tokens(info, s)
    seen: dict[tuple[int, int, tuple[tuple[str, int], ...]], Variant] = {}
    bad: dict[tuple[int, int, tuple[tuple[str, int], ...]], tuple[Variant, str]] = {}
    for combo in combos:
        for p in positions:
            for s in tokens:
                try:
                    v = make_variant(model, p, s, version=version, fuser=fuser, img_size=img_size,
                                     method=method, params=combo, frames=frames)  # fmt: skip
                except ConfigError as e:
                    if impossible is None:
                        raise
                    pairs = tuple(sorted(combo.items()))
                    u = Variant(info.name, float(p), block_index(p, info.depth), s, version, fuser, method, pairs)
                    u = replace(u, label=reducer.label(u))
                    bad.setdefault((u.block_index, u.num_tokens, u.params), (u, str(e)))
                    continue
                seen.setdefault((v.block_index, v.num_tokens, v.params), v)
    if impossible is not None:
        impossible += [bad[key] for key in sorted(bad) if key not in seen]
    return out + [seen[key] for key in sorted(seen)]


def apply_reducer(model: nn.Module, variant: Variant) -> nn.Module:
    """Put a fresh reducer into a stock timm ViT as `variant` says; returns the model.

    The model's `blocks` container is replaced, never edited, and its blocks are wrapped, never
    changed, so a copy made by shared_weights_copy leaves the original intact.
    """
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
    model = create(
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
        The model in eval mode.
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
