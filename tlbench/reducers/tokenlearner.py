"""TokenLearner as a reducer: v1.1 and v1.0 before block k, or with the TokenFuser from block k on.

The modules themselves are in tlbench.reducers.modules (a port of scenic's); this file says where they
go in a timm ViT and what they cost. Variant names are the ones tlbench has always written
('p0.25-s8', '-v1.0', '-fuser'): committed results and the CI baseline are keyed by them.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from torch import nn

from tlbench.core import ModelInfo, TokenSchedule, Variant, plain_label
from tlbench.errors import ConfigError
from tlbench.reducers._common import before_block_schedule, insert_before_block
from tlbench.reducers.base import PerTimeStep, register_reducer
from tlbench.reducers.modules import TokenFuser, TokenFuserBlock, TokenLearner, TokenLearnerLayer

VERSIONS = ("1.1", "1.0")


@register_reducer
class TokenLearnerReducer:
    """Learn S tokens from the N patch tokens (Ryoo et al., 2021); class tokens pass untouched."""

    method: ClassVar[str] = "tokenlearner"
    where: ClassVar[str] = "before_block"
    needs: ClassVar[frozenset[str]] = frozenset({"grid"})  # v1.0's convolutions run on the grid
    trains: ClassVar[bool] = True
    zero_cost_ops: ClassVar[dict[str, str]] = {}  # softmax, sigmoid, div: in flops.ZERO_COST_OPS
    per_time_step: ClassVar[bool] = True  # on video: S tokens learned from each time step
    bottleneck_dim: int = 64  # scenic's MLP width in the v1.1 learner and the fuser's gate

    def check(self, info: ModelInfo, variant: Variant) -> None:
        if variant.version not in VERSIONS:
            raise ConfigError(f"TokenLearner version must be 1.1 or 1.0, got {variant.version!r}")
        if variant.fuser and variant.block_index == info.depth:
            raise ConfigError(
                f"with the TokenFuser, p={variant.position} maps to block {variant.block_index} = "
                f"depth: no block is left to fuse around; use p < {(info.depth - 0.5) / info.depth:.4g}"
            )

    def label(self, variant: Variant) -> str:
        name = plain_label(variant)
        if variant.version != "1.1":
            name += f"-v{variant.version}"
        return name + ("-fuser" if variant.fuser else "")

    def schedule(self, info: ModelInfo, variant: Variant, *, norms: bool = True) -> TokenSchedule:
        """Blocks before k see P + N tokens, blocks from k on P + S (P + T*S on video). Without the
        fuser the sequence stays at P + S to the pool; with it, every block from k on learns S
        tokens (per time step), runs on them and fuses back, so P + N tokens reach the pool."""
        k, s = variant.block_index, variant.num_tokens
        if not variant.fuser:
            return before_block_schedule(info, variant, self.learner_macs(info, s, variant.version, norms))
        layers = info.depth - k  # each learns, runs its block on S tokens and fuses back
        macs = layers * (self.learner_macs(info, s, variant.version, norms) + self.fuser_macs(info, s, norms))
        sched = before_block_schedule(info, variant, macs)
        return dataclasses.replace(sched, tokens_out=info.num_prefix_tokens + info.num_patches)

    def learner_macs(self, info: ModelInfo, s: int, version: str, norms: bool = True) -> int:
        """LN, the masking (v1.1: MLP C -> 64 -> S; v1.0: four 3x3 convs) and the weighted sum,
        once per time step on video."""
        t, n, d, b = info.time_steps, info.spatial_patches, info.embed_dim, self.bottleneck_dim
        if version == "1.1":
            masking = n * d * b + n * b * s
        else:  # C -> S, then S -> S three times
            masking = n * 9 * d * s + 3 * n * 9 * s * s
        return t * ((5 * n * d if norms else 0) + masking + s * n * d)

    def fuser_macs(self, info: ModelInfo, s: int, norms: bool = True) -> int:
        """LN, mix over S, LN, LN of the original, the gate MLP, the gated einsum, once per time
        step on video (N the patches of one step, S its learned tokens)."""
        t, n, d, b = info.time_steps, info.spatial_patches, info.embed_dim, self.bottleneck_dim
        ln = 5 if norms else 0
        return t * (2 * ln * s * d + d * s * s + ln * n * d + n * d * b + n * b * s + n * s * d)

    def apply(self, model: nn.Module, info: ModelInfo, variant: Variant) -> nn.Module:
        """Insert a fresh TokenLearner as block k (later blocks shift by one), or wrap blocks
        k..depth-1 as TokenFuserBlock (scenic's EncoderModFuser); on video, per time step."""
        dim, k, s = info.embed_dim, variant.block_index, variant.num_tokens
        grid = tuple(model.patch_embed.grid_size)
        prefix, device = info.num_prefix_tokens, model.patch_embed.proj.weight.device

        def learner() -> TokenLearner:
            return TokenLearner(dim, s, variant.version, self.bottleneck_dim, grid).to(device)

        if not variant.fuser:
            per_step = PerTimeStep(learner(), info.time_steps) if info.time_steps > 1 else learner()
            return insert_before_block(model, k, TokenLearnerLayer(per_step, prefix))
        blocks = list(model.blocks)
        for i in range(k, len(blocks)):
            fuser = TokenFuser(dim, s, self.bottleneck_dim).to(device)
            blocks[i] = TokenFuserBlock(blocks[i], learner(), fuser, prefix, info.time_steps)
        model.blocks = nn.Sequential(*blocks)
        return model
