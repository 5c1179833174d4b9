"""Analytic MACs of a timm ViT, part by part, in fvcore's conventions.

flops.analytic_flops composes these: the stem (patch embedding, norm_pre), each block at the
token counts its reducer's TokenSchedule gives (its attention and its MLP with their norms), the
final norm (or none) and the head. Each part kind has one formula here, read off the built
module's widths, and a contract test checks each against fvcore (and, without norms, against
torch's FlopCounterMode) on a tiny module.

Conventions (fvcore's): one multiply-add = one MAC; a linear layer costs in x out per token, its
bias free; attention costs Nq x Nk x (d_qk + d_v) per head for Q K^T and P V; element-wise ops
(activations, gates, layer scale, residuals, RoPE rotations) are zero (flops.ZERO_COST_OPS).
Norms per element: LayerNorm 5 (4 without affine; fvcore's count), RmsNorm 3 (2 without
affine): the mean of squares (1), the scaling by its inverse root (1) and the weight (1),
i.e. LayerNorm without its mean and centring; fvcore has no handle for aten::rms_norm, so
flops.rms_norm_flop_jit adds this one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import nn


class UnsupportedPart(ValueError):
    """A module whose MACs no formula here covers; its message is a phrase after the model's name."""


@dataclass(frozen=True)
class BlockParts:
    """One block's MACs as a function of its token counts: a tokens enter the attention, f the MLP.

    macs(a, f) = a * (attn_linear + attn_norm) + a^2 * attn_pairs + f * (mlp_linear + mlp_norm);
    the norm terms drop with norms=False. `in_block` says why a method cannot cut this block
    between its attention and its MLP (None: it can).
    """

    kind: str  # the block's class, e.g. 'Block', 'ParallelScalingBlock'
    attn_linear: int  # per attention token: the projections (qkv, gate, proj)
    attn_norm: int  # per attention token: norm1, qk-norm, sub-LN
    attn_pairs: int  # per (query, key) pair: Q K^T and P V over every head
    mlp_linear: int  # per MLP token: fc1 (or its gated pair), fc2
    mlp_norm: int  # per MLP token: norm2 and the MLP's inner norm
    in_block: str | None = None

    def macs(self, a: int, f: int, norms: bool = True) -> int:
        n = 1 if norms else 0
        return (
            a * (self.attn_linear + n * self.attn_norm)
            + a * a * self.attn_pairs
            + f * (self.mlp_linear + n * self.mlp_norm)
        )


@dataclass(frozen=True)
class Arch:
    """What decides a ViT's analytic MACs beyond its widths: per-element norm costs of the stem's
    norm_pre and the final norm (0 = none) and the parts of every block."""

    stem_norm: int  # per element of the P + N tokens after the position embedding
    blocks: tuple[BlockParts, ...]
    final_norm: int  # per element of the tokens reaching the pool
    embed_norm: int = 0  # per element of the N patch tokens, inside the patch embedding (AIMv2)


def standard_arch(embed_dim: int, mlp_hidden: int, depth: int) -> Arch:
    """A plain pre-norm ViT: affine LayerNorms, qkv/proj attention, fc1 -> GELU -> fc2 MLP."""
    d, m = embed_dim, mlp_hidden
    block = BlockParts("Block", 4 * d * d, 5 * d, 2 * d, 2 * d * m, 5 * d)
    return Arch(0, (block,) * depth, 5)


def norm_cost(norm: nn.Module | None) -> int:
    """MACs per element of a norm layer (0 for none or Identity)."""
    from timm.layers import RmsNorm, RmsNormFp32

    if norm is None or isinstance(norm, nn.Identity):
        return 0
    if isinstance(norm, nn.LayerNorm):
        return 5 if norm.weight is not None else 4
    if isinstance(norm, (RmsNorm, RmsNormFp32, nn.RMSNorm)):
        return 3 if norm.weight is not None else 2
    raise UnsupportedPart(f"uses {type(norm).__name__}, a norm tlbench has no count for")


def norm_macs(norm: nn.Module | None, rows: int = 1) -> int:
    """MACs per token of a norm applied to `rows` vectors of its width (heads for qk-norm)."""
    cost = norm_cost(norm)
    return cost * rows * math.prod(norm.normalized_shape) if cost else 0


def linear_macs(*layers: nn.Module | None) -> int:
    """MACs per token of linear layers (bias free); None or Identity count zero."""
    total = 0
    for layer in layers:
        if layer is None or isinstance(layer, nn.Identity):
            continue
        if type(layer) is not nn.Linear:
            raise UnsupportedPart(f"uses {type(layer).__name__} where a linear layer was expected")
        total += layer.in_features * layer.out_features
    return total


def attention_parts(attn: nn.Module) -> tuple[int, int, int]:
    """(linear, norm, pairs) per token of timm's Attention or DiffAttention, without the block norm."""
    from timm.layers import Attention
    from timm.layers.diff_attention import DiffAttention

    if type(attn) is Attention:
        rows = attn.attn_dim // attn.head_dim  # heads
        norms = norm_macs(attn.q_norm, rows) + norm_macs(attn.k_norm, rows) + norm_macs(attn.norm)
        return linear_macs(attn.qkv, attn.gate, attn.proj), norms, 2 * attn.attn_dim
    if type(attn) is DiffAttention:
        # Q and K split in 2H heads of d/(2H); V in H heads of d/H. Fused (SDPA), each of the two
        # maps costs N^2 (d/2 + d): V is multiplied twice, 3 N^2 d in all; unfused, one Q K^T over
        # 2H heads and one P V: 2 N^2 d. sub_norm: H rows of 2 head_dims.
        dim = attn.proj.in_features
        rows = 2 * attn.num_heads
        norms = (norm_macs(attn.q_norm, rows) + norm_macs(attn.k_norm, rows)
                 + norm_macs(attn.sub_norm, attn.num_heads) + norm_macs(attn.norm))  # fmt: skip
        return linear_macs(attn.qkv, attn.proj), norms, (3 if attn.fused_attn else 2) * dim
    if type(attn).__name__ == "EvaAttention":  # timm.models.eva; RoPE is element-wise (zero)
        rows = attn.num_heads
        attn_dim = attn.proj.in_features
        norms = norm_macs(attn.q_norm, rows) + norm_macs(attn.k_norm, rows) + norm_macs(attn.norm)
        lin = linear_macs(attn.qkv, attn.q_proj, attn.k_proj, attn.v_proj, attn.gate, attn.proj)
        return lin, norms, 2 * attn_dim
    if type(attn).__name__ == "AttentionRope":  # timm.layers; K/V may have fewer heads (GQA)
        norms = norm_macs(attn.q_norm, attn.num_heads) + norm_macs(attn.k_norm, attn.num_kv_heads)
        lin = linear_macs(attn.qkv, attn.q_proj, attn.k_proj, attn.v_proj, attn.gate, attn.proj)
        return lin, norms + norm_macs(attn.norm), 2 * attn.attn_dim  # K/V repeated to every head
    raise UnsupportedPart(f"uses {type(attn).__name__}, an attention tlbench has no count for")


def mlp_parts(mlp: nn.Module) -> tuple[int, int]:
    """(linear, norm) per token of timm's Mlp, GluMlp (incl. SwiGLUPacked) or SwiGLU."""
    from timm.layers import GluMlp, Mlp, SwiGLU

    if type(mlp) is Mlp or type(mlp) is GluMlp:
        return linear_macs(mlp.fc1, mlp.fc2), norm_macs(mlp.norm)
    if type(mlp) is SwiGLU:
        return linear_macs(mlp.fc1_g, mlp.fc1_x, mlp.fc2), norm_macs(mlp.norm)
    raise UnsupportedPart(f"uses {type(mlp).__name__}, an MLP tlbench has no count for")


def mlp_hidden(block: nn.Module) -> int:
    """The MLP's hidden width (after the gate, for gated MLPs)."""
    mlp = _mlp_of(block)
    if mlp is None:  # parallel scaling blocks: the MLP share of in_proj
        return block.in_split[0]
    if hasattr(mlp, "fc1_x"):
        return mlp.fc1_x.out_features
    return mlp.fc2.in_features


def num_heads(block: nn.Module) -> int:
    attn = _attn_of(block)
    return attn.num_heads if attn is not None else block.num_heads


def _attn_of(block: nn.Module) -> nn.Module | None:
    if hasattr(block, "attns"):
        return block.attns[0].attn
    return getattr(block, "attn", None)


def _mlp_of(block: nn.Module) -> nn.Module | None:
    if hasattr(block, "ffns"):
        return block.ffns[0].mlp
    return getattr(block, "mlp", None)


def block_parts(block: nn.Module) -> BlockParts:
    """The parts of one timm ViT block, or UnsupportedPart naming what no formula covers."""
    from timm.layers import Attention
    from timm.models.vision_transformer import (
        Block,
        DiffParallelScalingBlock,
        ParallelScalingBlock,
        ParallelThingsBlock,
        ResPostBlock,
    )

    kind = type(block).__name__
    if type(block) in (Block, ResPostBlock):
        a_lin, a_norm, pairs = attention_parts(block.attn)
        m_lin, m_norm = mlp_parts(block.mlp)
        why = None
        if type(block) is ResPostBlock:
            why = (
                "its blocks are post-norm (ResPostBlock); tlbench's in-block attention is pre-norm"
            )
        elif type(block.attn) is not Attention:
            why = f"its {type(block.attn).__name__} has two attention maps; the score and ToMe's keys assume one"
        elif block.attn.gate is not None:
            why = "its attention output is gated; tlbench's in-block attention has no gate"
        return BlockParts(kind, a_lin, a_norm + norm_macs(block.norm1), pairs, m_lin,
                          m_norm + norm_macs(block.norm2), why)  # fmt: skip
    if kind in ("EvaBlock", "EvaBlockPostNorm"):  # timm.models.eva (backbones/eva.py)
        a_lin, a_norm, pairs = attention_parts(block.attn)
        m_lin, m_norm = mlp_parts(block.mlp)
        why = f"its {type(block.attn).__name__} (RoPE by grid position) is not the Attention they reimplement"
        return BlockParts(kind, a_lin, a_norm + norm_macs(block.norm1), pairs, m_lin,
                          m_norm + norm_macs(block.norm2), why)  # fmt: skip
    if type(block) is ParallelThingsBlock:
        a_lin = a_norm = pairs = m_lin = m_norm = 0
        for branch in block.attns:
            lin, nrm, pr = attention_parts(branch.attn)
            a_lin, a_norm, pairs = a_lin + lin, a_norm + nrm + norm_macs(branch.norm), pairs + pr
        for branch in block.ffns:
            lin, nrm = mlp_parts(branch.mlp)
            m_lin, m_norm = m_lin + lin, m_norm + nrm + norm_macs(branch.norm)
        why = f"its blocks run {block.num_parallel} attentions side by side (ParallelThingsBlock)"
        return BlockParts(kind, a_lin, a_norm, pairs, m_lin, m_norm, why)
    if type(block) in (ParallelScalingBlock, DiffParallelScalingBlock):
        # One norm and one fused in_proj feed attention and MLP alike: attention and MLP see the
        # same tokens, so the whole block is counted on its attention tokens.
        diff = type(block) is DiffParallelScalingBlock
        dim = block.in_norm.normalized_shape[0]
        rows = (2 if diff else 1) * block.num_heads
        norms = (
            norm_macs(block.in_norm) + norm_macs(block.q_norm, rows) + norm_macs(block.k_norm, rows)
        )
        if diff:
            norms += norm_macs(block.sub_norm, block.num_heads)
        outs = (
            (block.out_proj,)
            if block.out_proj is not None
            else (block.attn_out_proj, block.mlp_out_proj)
        )
        pairs = (3 if diff and block.fused_attn else 2) * dim
        why = f"its attention and MLP run in parallel on the same tokens ({kind})"
        return BlockParts(kind, linear_macs(block.in_proj, *outs), norms, pairs, 0, 0, why)
    raise UnsupportedPart(f"uses {kind} blocks, a block tlbench has no count for")


def vit_arch(model: nn.Module) -> Arch:
    """The Arch of a (meta-built) timm VisionTransformer or Eva; UnsupportedPart if a part has no formula."""
    blocks = tuple(block_parts(b) for b in model.blocks)
    return Arch(
        norm_cost(model.norm_pre), blocks, norm_cost(model.norm), norm_cost(model.patch_embed.norm)
    )
