"""PatchMerger (Renggli et al., 2022, arXiv 2202.12015): S learned queries merge N tokens into S.

Input-independent queries W [S, C]: after a LayerNorm, each output token is a softmax (over the
N inputs) weighted average of them: softmax(W LN(x)^T) x. Written from the paper's equation.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from tlbench.core import ModelInfo, Variant
from tlbench.reducers._common import BeforeBlockReducer
from tlbench.reducers.base import register_reducer


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
class PatchMergerReducer(BeforeBlockReducer):
    method: ClassVar[str] = "patchmerger"
    trains: ClassVar[bool] = True  # S learned queries; its softmax is on flops.ZERO_COST_OPS

    def module_macs(self, info: ModelInfo, variant: Variant, norms: bool) -> int:
        n, d = info.num_patches, info.embed_dim
        return (5 * n * d if norms else 0) + 2 * variant.num_tokens * n * d  # LN, logits, sum

    def make(self, info: ModelInfo, variant: Variant, grid: tuple[int, int]) -> nn.Module:
        return PatchMerger(info.embed_dim, variant.num_tokens)
