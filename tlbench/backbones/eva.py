"""timm's `Eva` class (EVA-02 and kin: RoPE, SwiGLU, sub-LN) as a tlbench backbone.

An Eva is built by timm with tlbench's head convention (global_pool='avg', use_fc_norm=False: the
final norm before the pool, the pool over the patch tokens) and then adapted in place so that it
looks like a VisionTransformer to the rest of tlbench: `blocks` is an nn.Sequential (reducers
insert into it), `stem` is what flops._Stem counts, and the forward passes the rotary position
embedding (RoPE) to each EvaBlock.

RoPE and reducers: RoPE rotates q and k by each patch token's grid position. A reducer placed
before block k (TokenLearner, pool, PatchMerger, random) outputs tokens that no longer sit on the
grid, so blocks from k on run without RoPE (rope=None), the class/register tokens as ever
untouched; this is what tlbench's forward does, not an approximation of the count: RoPE is
element-wise (flops.ZERO_COST_OPS) and the FLOPs are the same either way. In-block methods
(Top-K, EViT, ToMe) reimplement timm's Attention and would need each kept token's position
carried through; EvaAttention is refused for them in one line (measure/parts.block_parts).
"""

from __future__ import annotations

import functools

import torch
from timm.models.eva import Eva, EvaBlock, EvaBlockPostNorm
from torch import nn

EVA_BLOCKS = (EvaBlock, EvaBlockPostNorm)


@functools.cache
def eva_names() -> tuple[str, ...]:
    """Every model of timm's eva module (EVA-02, EVA-01 giant, the RoPE ViTs, DINOv3, PE, ...)."""
    import timm

    return tuple(timm.list_models(module="eva"))


class TLEva(Eva):
    """An Eva with tlbench's interface: Sequential blocks, a `stem`, RoPE up to the first reducer."""

    def rope_table(self) -> torch.Tensor | None:
        """The patch grid's rotary embedding, as Eva._pos_embed computes it (None without RoPE)."""
        if self.rope is None:
            return None
        if getattr(self.rope, "feat_shape", None) is not None:
            return self.rope.get_embed()
        return self.rope.get_embed(shape=self.patch_embed.grid_size)

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        """Image [B, C, H, W] -> tokens [B, P + N, D]: patch embedding, prefix tokens, position
        embedding, norm_pre (what flops._Stem counts)."""
        x, _ = Eva._pos_embed(self, self.patch_embed(x))
        return self.norm_pre(x)

    def forward_features(
        self, x: torch.Tensor, attn_mask: None = None, is_causal: bool = False
    ) -> torch.Tensor:
        """[B, C, H, W] -> [B, P + S, D]; Eva.forward's masking arguments must stay unset."""
        if attn_mask is not None or is_causal:
            raise ValueError("tlbench's Eva runs unmasked, non-causal attention")
        x = self.stem(x)
        rope = self.rope_table()
        for blk in self.blocks:
            if isinstance(blk, EVA_BLOCKS):
                x = blk(x, rope=rope)
            else:  # a reducer: the tokens after it are off the grid, so no RoPE from here on
                x, rope = blk(x), None
        return self.norm(x)


def adapt(model: Eva) -> TLEva:
    """Give a freshly built Eva tlbench's interface, in place (before any sharing); state-dict
    keys are unchanged (`blocks.i.*`), so timm's Eva checkpoints still load."""
    model.__class__ = TLEva
    model.blocks = nn.Sequential(*model.blocks)
    return model


def unsupported_reason(model: TLEva) -> str | None:
    """What in an Eva tlbench cannot handle, beyond the per-part formulas; None if nothing."""
    if getattr(model, "rope_mixed", False):
        return "has a depth-dependent (mixed) RoPE, one table per block"
    if model.patch_drop is not None:
        return "has patch dropout inside its position embedding"
    return None
