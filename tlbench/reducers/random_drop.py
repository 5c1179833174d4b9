"""Random token dropping: keep S of the N patch tokens, drawn uniformly per image.

The control every reduction method must beat (on video most do not: Haurum et al., 2024, in
shared/reference/next-capabilities.md). Draws come from torch's global generator, so a run is
reproducible under torch.manual_seed; at probe time the features are random too, by design.
On a video model the draw is per time step (S of each step's N tokens), like TokenLearner's.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from tlbench.core import ModelInfo, Variant
from tlbench.reducers._common import BeforeBlockReducer
from tlbench.reducers.base import register_reducer


class RandomDrop(nn.Module):
    """[B, N, C] -> [B, S, C]: S tokens per image, uniformly at random, in their original order."""

    def __init__(self, num_tokens: int) -> None:
        super().__init__()
        self.num_tokens = num_tokens

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        keep = torch.rand(x.shape[:2], device=x.device).argsort(dim=1)[:, : self.num_tokens]
        keep = keep.sort(dim=1).values  # [B, S]
        return x.gather(1, keep.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


@register_reducer
class RandomReducer(BeforeBlockReducer):
    method: ClassVar[str] = "random"
    per_time_step: ClassVar[bool] = True  # on video: S tokens drawn in each time step
    zero_cost_ops: ClassVar[dict[str, str]] = {
        "aten::rand": "random scores, one draw per token",
        "aten::argsort": "ranking N scores per image: no multiply-adds",
        "aten::sort": "restoring the kept tokens' order: no multiply-adds",
        "aten::gather": "copying the kept tokens (fvcore ignores it silently; listed here)",
    }

    def make(self, info: ModelInfo, variant: Variant, grid: tuple[int, int]) -> nn.Module:
        return RandomDrop(variant.num_tokens)
