"""EViT (Liang et al., ICLR 2022, arXiv 2202.07800): keep the most attended tokens, fuse the rest.

Inside block k, after its attention: keep the S - 1 patch tokens the class token attends to most
and fuse all the others into one token, their average weighted by that attention, so S tokens
leave as with every other method. Without a class token the score is the mean attention a token
receives (topk.py). Written from the paper's description.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from tlbench.core import ModelInfo, TokenSchedule, Variant
from tlbench.errors import ConfigError
from tlbench.reducers.base import register_reducer
from tlbench.reducers.topk import (
    InBlockReducer,
    TopKReducer,
    in_block_schedule,
    score_macs,
    wrap_block,
)


class KeepAndFuse(nn.Module):
    """[B, N, C], scores [B, N] -> the S - 1 best tokens and one fused token: [B, S, C]."""

    def __init__(self, num_tokens: int) -> None:
        super().__init__()
        self.num_tokens = num_tokens

    def forward(self, x: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        order = scores.argsort(dim=1, descending=True)  # [B, N]
        keep = order[:, : self.num_tokens - 1].sort(dim=1).values
        drop = order[:, self.num_tokens - 1 :]
        c = x.shape[-1]
        kept = x.gather(1, keep.unsqueeze(-1).expand(-1, -1, c))  # [B, S - 1, C]
        rest = x.gather(1, drop.unsqueeze(-1).expand(-1, -1, c))  # [B, N - S + 1, C]
        w = scores.gather(1, drop)
        w = w / w.sum(dim=1, keepdim=True)  # [B, N - S + 1]
        fused = torch.einsum("bn,bnc->bc", w, rest)  # [B, C]
        return torch.cat([kept, fused.unsqueeze(1)], dim=1)


@register_reducer
class EViTReducer(InBlockReducer):
    method: ClassVar[str] = "evit"
    needs: ClassVar[frozenset[str]] = frozenset({"cls_attention", "keys"})
    zero_cost_ops: ClassVar[dict[str, str]] = {
        "aten::argsort": "ranking N scores: comparisons, no multiply-adds",
        **TopKReducer.zero_cost_ops,
    }

    def check(self, info: ModelInfo, variant: Variant) -> None:
        super().check(info, variant)
        if variant.num_tokens < 2:
            raise ConfigError("evit keeps S - 1 tokens and fuses the rest into one: S must be >= 2")

    def schedule(self, info: ModelInfo, variant: Variant, *, norms: bool = True) -> TokenSchedule:
        fuse = (info.num_patches - variant.num_tokens + 1) * info.embed_dim
        return in_block_schedule(info, variant, score_macs(info) + fuse)

    def apply(self, model: nn.Module, info: ModelInfo, variant: Variant) -> nn.Module:
        return wrap_block(model, info, variant.block_index, KeepAndFuse(variant.num_tokens))
