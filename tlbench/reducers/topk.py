"""Top-K token pruning inside block k (as EViT, Liang et al., ICLR 2022, without the fusion).

After block k's attention, keep the S patch tokens the class token attends to most (its attention
row, mean over heads), then run the MLP on what is kept. For a model without a class token
(register tokens are not one) the score is the mean attention each token receives (over every
query and head), which costs an explicit QK^T at block k, counted. Attention itself stays fused
(SDPA); the score is computed beside it from the same q and k.
"""

from __future__ import annotations

from abc import ABC
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from tlbench.core import ModelInfo, TokenSchedule, Variant, plain_label
from tlbench.errors import ConfigError
from tlbench.reducers._common import only_defaults
from tlbench.reducers.base import register_reducer


def attention_with_scores(attn: nn.Module, x: torch.Tensor, use_cls: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """timm Attention's forward (fused) that also returns each token's importance [B, N_total]:
    the class token's attention row, or the mean attention a token receives, mean over heads."""
    b, n, _ = x.shape
    qkv = attn.qkv(x).reshape(b, n, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)  # [B, H, N, d]
    q, k = attn.q_norm(q), attn.k_norm(k)
    out = F.scaled_dot_product_attention(q, k, v, dropout_p=attn.attn_drop.p if attn.training else 0.0)
    out = attn.proj_drop(attn.proj(attn.norm(out.transpose(1, 2).reshape(b, n, attn.attn_dim))))
    if use_cls:  # [B, H, N]: one query against every key, O(N d)
        scores = torch.einsum("bhd,bhnd->bhn", q[:, :, 0] * attn.scale, k).softmax(dim=-1)
    else:  # [B, H, N, N] -> mean over queries: O(N^2 d), one block only
        scores = torch.einsum("bhqd,bhkd->bhqk", q * attn.scale, k).softmax(dim=-1).mean(dim=2)
    return out, scores.mean(dim=1)


def score_macs(info: ModelInfo) -> int:
    """The score's own multiply-adds: q_cls . K^T, or the whole Q K^T without a class token."""
    n = info.num_prefix_tokens + info.num_patches
    return n * info.embed_dim if info.class_token else n * n * info.embed_dim


class ReducedBlock(nn.Module):
    """A ViT block that reduces tokens between its attention and its MLP: [B, P+N, C] -> [B, P+S, C].

    Wraps the block; the block itself is shared and left as it is."""

    def __init__(self, block: nn.Module, select: nn.Module, num_prefix_tokens: int, use_cls: bool) -> None:
        super().__init__()
        self.block, self.select, self.num_prefix_tokens = block, select, num_prefix_tokens
        self.use_cls = use_cls  # score by the class token's row; else by mean attention received

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        blk, p = self.block, self.num_prefix_tokens
        a, scores = attention_with_scores(blk.attn, blk.norm1(x), use_cls=self.use_cls)
        x = x + blk.drop_path1(blk.ls1(a))
        kept = torch.cat([x[:, :p], self.select(x[:, p:], scores[:, p:])], dim=1) if p else self.select(x, scores)
        return kept + blk.drop_path2(blk.ls2(blk.mlp(blk.norm2(kept))))


class TopK(nn.Module):
    """[B, N, C], scores [B, N] -> the S best-scored tokens, in their original order."""

    def __init__(self, num_tokens: int) -> None:
        super().__init__()
        self.num_tokens = num_tokens

    def forward(self, x: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        keep = scores.topk(self.num_tokens, dim=1).indices.sort(dim=1).values  # [B, S]
        return x.gather(1, keep.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


class InBlockReducer(ABC):
    """A method that acts inside block k, between its attention and its MLP (Top-K, EViT, ToMe):
    the version/fuser refusal, the placement check (k must be a block) and the plain label."""

    method: ClassVar[str]
    where: ClassVar[str] = "in_block"
    trains: ClassVar[bool] = False

    def check(self, info: ModelInfo, variant: Variant) -> None:
        only_defaults(self.method, variant)
        in_block_check(self.method, info, variant)

    def label(self, variant: Variant) -> str:
        return plain_label(variant)


@register_reducer
class TopKReducer(InBlockReducer):
    method: ClassVar[str] = "topk"
    needs: ClassVar[frozenset[str]] = frozenset({"cls_attention", "keys"})  # keys without a class token
    zero_cost_ops: ClassVar[dict[str, str]] = {
        "aten::topk": "selecting the S best of N scores: comparisons, no multiply-adds",
        "aten::sort": "restoring the kept tokens' order: no multiply-adds",
        "aten::gather": "copying the kept tokens (fvcore ignores it silently; listed here)",
    }

    def schedule(self, info: ModelInfo, variant: Variant, *, norms: bool = True) -> TokenSchedule:
        return in_block_schedule(info, variant, score_macs(info))

    def apply(self, model: nn.Module, info: ModelInfo, variant: Variant) -> nn.Module:
        return wrap_block(model, info, variant.block_index, TopK(variant.num_tokens))


def in_block_check(method: str, info: ModelInfo, variant: Variant) -> None:
    if variant.block_index >= info.depth:
        raise ConfigError(
            f"{method} acts inside block k; p={variant.position} maps to k = {info.depth}, after the "
            f"last block; use p < {(info.depth - 0.5) / info.depth:.4g}"
        )
    blocks = info.arch.blocks[variant.block_index:] if info.arch is not None else ()
    if why := next((b.in_block for b in blocks if b.in_block), None):
        raise ConfigError(f"{method} acts between a block's attention and its MLP; on {info.name} it cannot: {why}")


def in_block_schedule(info: ModelInfo, variant: Variant, module_macs: int) -> TokenSchedule:
    """Block k's attention sees P + N tokens and its MLP P + S; later blocks P + S."""
    p, n, depth = info.num_prefix_tokens, info.num_patches, info.depth
    k, s = variant.block_index, variant.num_tokens
    attn = (p + n,) * (k + 1) + (p + s,) * (depth - k - 1)
    mlp = (p + n,) * k + (p + s,) * (depth - k)
    return TokenSchedule(attn, mlp, p + s, module_macs)


def wrap_block(model: nn.Module, info: ModelInfo, k: int, select: nn.Module) -> nn.Module:
    """Block k becomes a ReducedBlock around it, in a new `blocks` container."""
    blocks = list(model.blocks)
    select = select.to(model.patch_embed.proj.weight.device)
    blocks[k] = ReducedBlock(blocks[k], select, info.num_prefix_tokens, info.class_token)
    model.blocks = nn.Sequential(*blocks)
    return model
