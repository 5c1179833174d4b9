"""PatchMerger (Renggli et al., 2022, arXiv 2202.12015): S learned queries merge N tokens into S.

Input-independent queries W [S, C]: after a LayerNorm, each output token is a softmax (over the
N inputs) weighted average of them: softmax(W LN(x)^T) x. Written from the paper's equation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import torch
from torch import nn

from tlbench.reducers import TokenSchedule, register_reducer
from tlbench.reducers._common import (
    PatchTokensLayer,
    before_block_schedule,
    insert_before_block,
    only_defaults,
    plain_label,
)

if TYPE_CHECKING:
    from tlbench.models import ModelInfo, Variant


class PatchMerger(nn.Module):
    """[B, N, C] -> [B, S, C] with S learned queries."""

    def __init__(self, dim: int, num_tokens: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.queries = nn.Parameter(torch.randn(num_tokens, dim) * dim**-0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.einsum("sc,bnc->bsn", self.queries, self.norm(x))  # [B, S, N]
        return torch.einsum("bsn,bnc->bsc", logits.softmax(dim=-1), x)  # [B, S, C]


@register_reducer
class PatchMergerReducer:
    method: ClassVar[str] = "patchmerger"
    where: ClassVar[str] = "before_block"
    needs: ClassVar[frozenset[str]] = frozenset()
    trains: ClassVar[bool] = True
    zero_cost_ops: ClassVar[dict[str, str]] = {}  # its softmax is on flops.ZERO_COST_OPS

    def check(self, info: ModelInfo, variant: Variant) -> None:
        only_defaults(self.method, variant)

    def label(self, variant: Variant) -> str:
        return plain_label(variant)

    def schedule(self, info: ModelInfo, variant: Variant, *, norms: bool = True) -> TokenSchedule:
        n, d, s = info.num_patches, info.embed_dim, variant.num_tokens
        return before_block_schedule(info, variant, (5 * n * d if norms else 0) + 2 * s * n * d)

    def apply(self, model: nn.Module, info: ModelInfo, variant: Variant) -> nn.Module:
        merger = PatchMerger(info.embed_dim, variant.num_tokens)
        return insert_before_block(model, variant.block_index, PatchTokensLayer(merger, info.num_prefix_tokens))
