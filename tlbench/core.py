"""The plain records every layer shares: a model's architecture facts, one variant of the study,
and what a variant does to the token sequence. No torch, nothing of tlbench's: reducers,
backbones and measurements import these records, never the modules that build them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

DEFAULT_METHOD = "tokenlearner"  # the reducer a variant uses unless it names another


@dataclass(frozen=True)
class ModelInfo:
    """Architecture facts needed to place a reducer and count FLOPs."""

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
    # Video (backbones/video.py): num_patches = time_steps * the spatial patches, each a tubelet of
    # `tubelet` frames; an image is one time step of one frame, so these stay 1 for images.
    time_steps: int = 1
    tubelet: int = 1
    # Per-part structure for the analytic count (backbones/parts.py Arch: norm_pre, block kinds,
    # final norm); None means a plain pre-norm LayerNorm ViT of the widths above.
    arch: Any = None

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

    @property
    def is_video(self) -> bool:
        return self.time_steps > 1


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
    # The reducer's name for this variant without the method prefix ('p0.25-s8', 'p0.5-r13'), set
    # by variants.make_variant from the reducer; a function of the fields above, so not compared.
    label: str = field(default="", compare=False)

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
        if not self.label and (self.version != "1.1" or self.fuser or self.params):
            raise ValueError("a variant with a version, the fuser or parameters needs its label: "
                             "build it with tlbench.variants.make_variant")  # fmt: skip
        label = self.label or plain_label(self)
        return label if self.method == DEFAULT_METHOD else f"{self.method}-{label}"


def plain_label(variant: Variant) -> str:
    """'p0.25-s8': position and token count, the label most reducers give their variants."""
    return f"p{variant.position:.4g}-s{variant.num_tokens}"


@dataclass(frozen=True)
class TokenSchedule:
    """What a variant does to the token sequence, in numbers: the input of every FLOP count.

    `attn_tokens[i]` tokens enter block i's attention and `mlp_tokens[i]` its MLP (they differ only
    for methods that cut between the two); `tokens_out` reach the final norm and the pool;
    `module_macs` is the reducer's own cost per image (learner, fuser, matching).
    """

    attn_tokens: tuple[int, ...]
    mlp_tokens: tuple[int, ...]
    tokens_out: int
    module_macs: int = 0

    def __post_init__(self) -> None:
        if len(self.attn_tokens) != len(self.mlp_tokens):
            raise ValueError("attn_tokens and mlp_tokens need one entry per block")
