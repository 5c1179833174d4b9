"""ToMe, token merging (Bolya et al., ICLR 2023, arXiv 2210.09461), written from the paper (Sec. 3).

Inside a block, between its attention and its MLP, bipartite soft matching merges patch tokens:
the metric is the block's keys averaged over heads and L2-normalised; patch tokens alternate into
sets A (even positions) and B (odd); each A token's most similar B token is its edge; the r A
tokens with the most similar edges merge into their B partners as size-weighted averages (sizes
add). One round merges at most half the tokens. From the first merge on, every later block uses
proportional attention, softmax(q k^T / sqrt(d) + log s), as an additive mask to fused SDPA.
Class and register tokens never merge (size 1, log 1 = 0).

Two methods share this module: `tome` merges the N patch tokens down to S inside block k (in as
many rounds as it takes), the placement question every method answers; `tome_r` merges r tokens
in every block from k on, the paper's own setting.

Token order after a round: the A tokens that stay, by original position, then every B token by
original position; deterministic, and a merged token sits where its B partner was.
The pool stays timm's plain mean over the tokens that reach it, as for every other method: a
size-weighted pool would need the sizes outside the blocks, and the head is shared with the
baseline. Blocks k..depth-1 become one module (sizes travel as a local, not as hidden state);
the blocks inside it are the shared ones, never edited.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from tlbench.core import ModelInfo, TokenSchedule, Variant
from tlbench.errors import ConfigError
from tlbench.reducers.base import register_reducer
from tlbench.reducers.topk import InBlockReducer

Plan = tuple[tuple[int, ...], ...]  # per block from k on: the tokens merged in each round


def match(metric: torch.Tensor, r: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Bipartite soft matching on unit vectors [B, n, d]: which A tokens stay (by position), which
    merge (src) and into which B token (dst), as indices into A and B."""
    scores = metric[:, ::2] @ metric[:, 1::2].transpose(-1, -2)  # [B, |A|, |B|] cosine
    best, partner = scores.max(dim=-1)  # [B, |A|]
    order = best.argsort(dim=-1, descending=True)  # [B, |A|], most similar edge first
    src = order[:, :r]  # [B, r]
    keep = order[:, r:].sort(dim=-1).values  # [B, |A| - r]
    return keep, src, partner.gather(1, src)


def _rows(t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """t [B, n, c] at row indices idx [B, m] -> [B, m, c]."""
    return t.gather(1, idx.unsqueeze(-1).expand(-1, -1, t.shape[-1]))


def _merge_rows(
    t: torch.Tensor, p: int, keep: torch.Tensor, src: torch.Tensor, dst: torch.Tensor, share: torch.Tensor
) -> torch.Tensor:
    """[B, p + n, c] -> [B, p + n - r, c]: p prefix rows, the kept A rows, then the B rows, each
    merged B row moved to the size-weighted mean of itself and its sources.

    Written as B row + sum over sources of share * (source - B row), share = s_src / (new size of
    B): one copy of the tokens plus work on the r merged rows, where summing weighted rows and
    dividing afterwards would take several passes over every token (on a GPU in bf16 those passes
    cost about what the merge saves in the MLPs)."""
    a, b = t[:, p::2], t[:, p + 1 :: 2]
    out = torch.cat([t[:, :p], _rows(a, keep), b], dim=1)
    delta = (_rows(a, src) - _rows(b, dst)) * share  # [B, r, c]
    out[:, p + keep.shape[1] :].scatter_add_(1, dst.unsqueeze(-1).expand(-1, -1, t.shape[-1]), delta)
    return out


def merge_tokens(
    x: torch.Tensor, metric: torch.Tensor, sizes: torch.Tensor, rounds: tuple[int, ...], num_prefix_tokens: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Repeated bipartite soft matching: tokens x [B, P + n, C] (P prefix tokens that never merge)
    with the patch tokens' metric [B, n, d] and sizes [B, n, 1] -> merged x and sizes,
    P + n - sum(rounds) tokens. Merged features are size-weighted means, and the metric merges
    the same way for the next round."""
    p = num_prefix_tokens
    for i, r in enumerate(rounds):
        unit = metric / metric.norm(dim=-1, keepdim=True)  # [B, n, d]
        keep, src, dst = match(unit, r)
        size_a, size_b = sizes[:, ::2], sizes[:, 1::2]
        moved = size_a.gather(1, src.unsqueeze(-1))  # [B, r, 1]
        size_b = size_b.scatter_add(1, dst.unsqueeze(-1), moved)
        share = moved / size_b.gather(1, dst.unsqueeze(-1))  # each source's weight in its mean
        x = _merge_rows(x, p, keep, src, dst, share)
        if i + 1 < len(rounds):
            metric = _merge_rows(unit, 0, keep, src, dst, share)
        sizes = torch.cat([size_a.gather(1, keep.unsqueeze(-1)), size_b], dim=1)
    return x, sizes


def attention_with_keys(attn: nn.Module, x: torch.Tensor, bias: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """timm Attention's forward (fused SDPA) with an optional additive mask [B, 1, 1, N]; also
    returns the keys [B, H, N, d] (the matching metric)."""
    b, n, _ = x.shape
    qkv = attn.qkv(x).reshape(b, n, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)  # [B, H, N, d]
    q, k = attn.q_norm(q), attn.k_norm(k)
    mask = None if bias is None else bias.to(q.dtype)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=attn.attn_drop.p if attn.training else 0.0)
    return attn.proj_drop(attn.proj(attn.norm(out.transpose(1, 2).reshape(b, n, attn.attn_dim)))), k


class MergingBlocks(nn.Module):
    """Blocks k..depth-1 with ToMe: [B, P + N, C] -> [B, P + S, C]. Wraps the shared blocks.

    `plan[i]` lists the tokens merged per round in the i-th block (empty: none). Sizes start at
    one with each forward and pass from block to block inside this module only.
    """

    def __init__(self, blocks: list[nn.Module], plan: Plan, num_prefix_tokens: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.plan, self.num_prefix_tokens = plan, num_prefix_tokens

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.num_prefix_tokens
        sizes: torch.Tensor | None = None  # [B, n, 1] patch tokens' sizes; None before a merge
        for blk, rounds in zip(self.blocks, self.plan, strict=True):
            bias = None if sizes is None else proportional_bias(sizes, p)
            a, k = attention_with_keys(blk.attn, blk.norm1(x), bias)
            x = x + blk.drop_path1(blk.ls1(a))
            if rounds:
                if sizes is None:
                    sizes = x.new_ones(x.shape[0], x.shape[1] - p, 1)
                x, sizes = merge_tokens(x, k.mean(dim=1)[:, p:], sizes, rounds, p)
            x = x + blk.drop_path2(blk.ls2(blk.mlp(blk.norm2(x))))
        return x


def proportional_bias(sizes: torch.Tensor, num_prefix_tokens: int) -> torch.Tensor:
    """log(size) per key as an additive attention mask [B, 1, 1, P + n]; prefix tokens get 0."""
    s = sizes[..., 0]  # [B, n]
    if num_prefix_tokens:
        s = torch.cat([s.new_ones(s.shape[0], num_prefix_tokens), s], dim=1)
    return s.log()[:, None, None, :]


def once_plan(n: int, s: int) -> tuple[int, ...]:
    """Rounds that take n tokens to s, each merging at most half: 16 -> 4 is (8, 4)."""
    rounds = []
    while n > s:
        r = min(n - s, n // 2)
        rounds.append(r)
        n -= r
    return tuple(rounds)


def per_block_plan(n: int, r: int, blocks: int) -> Plan:
    """r tokens merged in each of `blocks` blocks, clipped to half of those present."""
    plan = []
    for _ in range(blocks):
        step = min(r, n // 2)
        plan.append((step,) if step else ())
        n -= step
    return tuple(plan)


class _ToMe(InBlockReducer):
    """What both ToMe methods share; a subclass gives the merge plan."""

    needs: ClassVar[frozenset[str]] = frozenset({"keys", "sizes"})
    options: ClassVar[dict[str, str]] = {}
    zero_cost_ops: ClassVar[dict[str, str]] = {
        "aten::argsort": "ranking the A tokens' best edges: comparisons, no multiply-adds",
        "aten::sort": "restoring the kept A tokens' order: no multiply-adds",
        "aten::scatter_add": "adding the merged tokens' sizes to their partners': one add per element",
        "aten::scatter_add_": "moving each partner to the merged mean: one add per element",
        "aten::linalg_vector_norm": "L2-normalising the metric: a reduction, like aten::sum",
        "aten::norm": "L2-normalising the metric: a reduction, like aten::sum",
        "aten::log": "proportional attention's log(size) mask: element-wise",
        "aten::gather": "copying tokens (fvcore ignores it silently; listed here)",
        "aten::new_ones": "the sizes' initial ones and the prefix tokens' size: no arithmetic",
    }

    @abstractmethod
    def plan(self, info: ModelInfo, variant: Variant) -> Plan:
        """Per block from k on: the tokens merged in each round."""

    def schedule(self, info: ModelInfo, variant: Variant, *, norms: bool = True) -> TokenSchedule:
        p, n, k = info.num_prefix_tokens, info.num_patches, variant.block_index
        head_dim = info.embed_dim // info.num_heads
        attn, mlp, macs = [p + n] * k, [p + n] * k, 0
        for rounds in self.plan(info, variant):
            attn.append(p + n)
            for r in rounds:  # the similarity matmul: |A| x |B| x head_dim
                macs += (n - n // 2) * (n // 2) * head_dim
                n -= r
            mlp.append(p + n)
        return TokenSchedule(tuple(attn), tuple(mlp), p + n, macs)

    def apply(self, model: nn.Module, info: ModelInfo, variant: Variant) -> nn.Module:
        k = variant.block_index
        blocks = list(model.blocks)
        stack = MergingBlocks(blocks[k:], self.plan(info, variant), info.num_prefix_tokens)
        model.blocks = nn.Sequential(*blocks[:k], stack)
        return model


@register_reducer
class ToMeOnce(_ToMe):
    """`tome`: merge the N patch tokens down to S inside block k."""

    method: ClassVar[str] = "tome"

    def plan(self, info: ModelInfo, variant: Variant) -> Plan:
        later = info.depth - variant.block_index - 1
        return (once_plan(info.num_patches, variant.num_tokens),) + ((),) * later


@register_reducer
class ToMePerBlock(_ToMe):
    """`tome_r`: merge r tokens in every block from k on (the paper's schedule)."""

    method: ClassVar[str] = "tome_r"
    options: ClassVar[dict[str, str]] = {
        "r": "tokens merged in every block from k on (clipped to half the patch tokens); required"
    }
    # A sweep without [grid.options.tome_r]: the paper's ViT-B/16 setting (r = 13 from block 0
    # takes 196 patches to 40); on a smaller model the per-block clip to half applies.
    sweep_defaults: ClassVar[dict[str, tuple[int, ...]]] = {"r": (13,)}

    def check(self, info: ModelInfo, variant: Variant) -> None:
        super().check(info, variant)
        r = variant.param("r")
        if r is None or r < 0:
            raise ConfigError(f"tome_r needs its parameter r >= 0 (tokens merged per block), got {r}")

    def label(self, variant: Variant) -> str:
        return f"p{variant.position:.4g}-r{variant.param('r')}"

    def plan(self, info: ModelInfo, variant: Variant) -> Plan:
        return per_block_plan(info.num_patches, variant.param("r"), info.depth - variant.block_index)

    def derived_tokens(self, info: ModelInfo, variant: Variant) -> int:
        """S of a tome_r variant: the patch tokens left after the last block."""
        return info.num_patches - sum(sum(rounds) for rounds in self.plan(info, variant))
