"""Distilled DeiTs (class + distillation token) under tlbench's average-pool head.

timm's VisionTransformerDistilled only takes global_pool='token': its head reads the class token
into `head` and the distillation token into `head_dist` and averages the two logits. tlbench pools
every variant the same way (the mean of the patch tokens, prefix tokens left in the sequence
untouched and not pooled), so a distilled DeiT is built as timm builds it and then given that
head: the pooled patch tokens go through `head`; `head_dist` is kept, so checkpoints load
unchanged, but never runs (its parameters are in the count of parameters, not in the FLOPs).
"""

from __future__ import annotations

import torch
from timm.models.deit import VisionTransformerDistilled
from timm.models.vision_transformer import VisionTransformer


class AvgPoolDistilled(VisionTransformerDistilled):
    """A distilled DeiT whose head is VisionTransformer's: pool (avg over patch tokens), head."""

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return VisionTransformer.forward_head(self, x, pre_logits)  # [B, P + N, C] -> [B, classes]


def with_average_pool(model: VisionTransformerDistilled) -> AvgPoolDistilled:
    """Give a freshly built distilled DeiT tlbench's head, in place (before any sharing)."""
    model.__class__ = AvgPoolDistilled
    model.global_pool = "avg"
    return model
