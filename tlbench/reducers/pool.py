"""Average pooling of the patch grid down to S tokens: the simplest input-independent reducer.

With S = (h/2)(w/2) it is the 2x2 average pooling of the grid; for any other S the grid is
pooled adaptively to the most square h' x w' = S that fits (8 tokens: 2 x 4), as torch's
adaptive_avg_pool2d splits it.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from tlbench.core import ModelInfo, Variant
from tlbench.errors import ConfigError
from tlbench.reducers._common import BeforeBlockReducer, only_defaults
from tlbench.reducers.base import register_reducer


def pooled_grid(s: int, grid: tuple[int, int]) -> tuple[int, int] | None:
    """The most square (h', w') with h' * w' = s, h' <= h, w' <= w; None if there is none."""
    h, w = grid
    pairs = [(a, s // a) for a in range(1, math.isqrt(s) + 1) if s % a == 0]
    pairs += [(b, a) for a, b in pairs]
    fits = [(a, b) for a, b in pairs if a <= h and b <= w]
    return min(fits, key=lambda ab: (abs(ab[0] - ab[1]), ab)) if fits else None


class GridPool(nn.Module):
    """[B, h * w, C] -> [B, h' * w', C]: average over (adaptive) windows of the token grid."""

    def __init__(self, grid: tuple[int, int], out: tuple[int, int]) -> None:
        super().__init__()
        self.grid, self.out = grid, out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        maps = x.transpose(1, 2).reshape(b, c, *self.grid)  # [B, C, h, w]
        return F.adaptive_avg_pool2d(maps, self.out).flatten(2).transpose(1, 2)  # [B, S, C]


@register_reducer
class PoolReducer(BeforeBlockReducer):
    method: ClassVar[str] = "pool"
    needs: ClassVar[frozenset[str]] = frozenset({"grid"})

    def check(self, info: ModelInfo, variant: Variant) -> None:
        only_defaults(self.method, variant)
        grid = (info.img_size[0] // info.patch_size, info.img_size[1] // info.patch_size)
        if pooled_grid(variant.num_tokens, grid) is None:
            raise ConfigError(f"pool: {variant.num_tokens} tokens do not tile the {grid[0]}x{grid[1]} grid")

    def module_macs(self, info: ModelInfo, variant: Variant, norms: bool) -> int:
        return info.num_patches * info.embed_dim  # fvcore: one per input element of the pooling

    def make(self, info: ModelInfo, variant: Variant, grid: tuple[int, int]) -> nn.Module:
        return GridPool(grid, pooled_grid(variant.num_tokens, grid))
