"""What the reducers that act between two blocks share: the layer that spares prefix tokens,
the insertion that builds a new `blocks` container, and their token schedule."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import torch
from torch import nn

from tlbench.core import ModelInfo, TokenSchedule, Variant, plain_label
from tlbench.errors import ConfigError
from tlbench.reducers.base import PerTimeStep


class PatchTokensLayer(nn.Module):
    """Prefix (class/register) tokens pass untouched; `reduce` maps the N patch tokens to S:
    [B, P + N, C] -> [B, P + S, C]. TokenLearner's TokenLearnerLayer is the same idea."""

    def __init__(self, reduce: nn.Module, num_prefix_tokens: int) -> None:
        super().__init__()
        self.reduce = reduce
        self.num_prefix_tokens = num_prefix_tokens

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.num_prefix_tokens
        out = self.reduce(x[:, p:])  # [B, S, C]
        return torch.cat([x[:, :p], out], dim=1) if p else out


def insert_before_block(model: nn.Module, k: int, layer: nn.Module) -> nn.Module:
    """`layer` becomes blocks[k] of a new container; the blocks themselves are shared, not edited."""
    blocks = list(model.blocks)
    blocks.insert(k, layer.to(model.patch_embed.proj.weight.device))
    model.blocks = nn.Sequential(*blocks)
    return model


def before_block_schedule(info: ModelInfo, variant: Variant, module_macs: int) -> TokenSchedule:
    """Blocks before k see P + N tokens, blocks from k on (and the pool) P + S (P + T*S on video)."""
    p, n, depth = info.num_prefix_tokens, info.num_patches, info.depth
    k, s = variant.block_index, variant.num_tokens
    s_all = info.time_steps * s  # S per time step on a video model
    tokens = (p + n,) * k + (p + s_all,) * (depth - k)
    return TokenSchedule(tokens, tokens, p + s_all, module_macs)


def only_defaults(method: str, variant: Variant) -> None:
    """Methods other than TokenLearner take no version and no fuser."""
    if variant.version != "1.1" or variant.fuser:
        raise ConfigError(f"{method} has no TokenLearner version or TokenFuser; drop those options")


class BeforeBlockReducer(ABC):
    """A method that maps the N patch tokens to S between blocks k-1 and k: a subclass names
    itself and gives the module (`make`) and its own MACs (`module_macs`)."""

    method: ClassVar[str]
    where: ClassVar[str] = "before_block"
    needs: ClassVar[frozenset[str]] = frozenset()
    trains: ClassVar[bool] = False
    zero_cost_ops: ClassVar[dict[str, str]] = {}

    @abstractmethod
    def make(self, info: ModelInfo, variant: Variant, grid: tuple[int, int]) -> nn.Module:
        """The module that maps [B, N, C] patch tokens to [B, S, C]."""

    def module_macs(self, info: ModelInfo, variant: Variant, norms: bool) -> int:
        return 0

    def check(self, info: ModelInfo, variant: Variant) -> None:
        only_defaults(self.method, variant)

    def label(self, variant: Variant) -> str:
        return plain_label(variant)

    def schedule(self, info: ModelInfo, variant: Variant, *, norms: bool = True) -> TokenSchedule:
        return before_block_schedule(info, variant, self.module_macs(info, variant, norms))

    def apply(self, model: nn.Module, info: ModelInfo, variant: Variant) -> nn.Module:
        layer = self.make(info, variant, tuple(model.patch_embed.grid_size))
        if info.time_steps > 1:  # only methods with per_time_step get here (models.make_variant)
            layer = PerTimeStep(layer, info.time_steps)
        return insert_before_block(model, variant.block_index, PatchTokensLayer(layer, info.num_prefix_tokens))
