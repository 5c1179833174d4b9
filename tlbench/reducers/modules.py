"""TokenLearner and TokenFuser (Ryoo et al., NeurIPS 2021, https://arxiv.org/abs/2106.11297).

A PyTorch port that follows the official Flax code, google-research/scenic
`projects/token_learner/model.py` (read, not copied): v1.1 `TokenLearnerModuleV11`, v1.0
`TokenLearnerModule` (the one the paper's experiments used) and `TokenFuser`.
Every token-mixing product is an einsum, so FLOP counters see it as a matmul.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

LN_EPS = 1e-6  # flax.linen.LayerNorm default, as in scenic


class MlpBlock(nn.Module):
    """scenic `MlpBlock`: Dense(C -> hidden) -> GELU -> Dropout -> Dense(hidden -> out) -> Dropout."""

    def __init__(self, dim: int, hidden: int, out: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, out)
        self.drop = nn.Dropout(dropout)
        for fc in (self.fc1, self.fc2):  # scenic: xavier_uniform kernels, normal(1e-6) biases
            nn.init.xavier_uniform_(fc.weight)
            nn.init.normal_(fc.bias, std=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(F.gelu(self.fc1(x)))))


class TokenLearner(nn.Module):
    """Learn S tokens from N input tokens: [B, N, C] -> [B, S, C].

    v1.1 (default): LayerNorm -> MLP (C -> bottleneck -> S) -> softmax over the N inputs; each
    learned token is the attention-weighted average of the (un-normalised) inputs.
    v1.0: LayerNorm -> four 3x3 convs over the token grid (GELU between) giving S maps ->
    sigmoid -> spatially weighted sum (scenic's default sum pooling; mean pooling optional).

    Args:
        dim: token width C.
        num_tokens: S, the number of learned tokens (the paper uses 8 and 16).
        version: "1.1" or "1.0".
        bottleneck_dim: v1.1 MLP hidden size (scenic: 64).
        grid_size: (h, w) of the token grid; v1.0 needs it for its convolutions.
        dropout: v1.1 MLP dropout.
        sum_pooling: v1.0 pooling; scenic's default True (token magnitude grows with N).
    """

    def __init__(
        self,
        dim: int,
        num_tokens: int = 8,
        version: str = "1.1",
        bottleneck_dim: int = 64,
        grid_size: tuple[int, int] | None = None,
        dropout: float = 0.0,
        sum_pooling: bool = True,
    ) -> None:
        super().__init__()
        if version not in ("1.1", "1.0"):
            raise ValueError(f"TokenLearner version must be '1.1' or '1.0', got {version!r}")
        self.dim, self.num_tokens, self.version = dim, num_tokens, version
        self.grid_size = grid_size
        self.sum_pooling = sum_pooling
        self.store_attention = False  # set True to keep the last maps in `last_attention`
        self.last_attention: torch.Tensor | None = None
        self.norm = nn.LayerNorm(dim, eps=LN_EPS)
        if version == "1.1":
            self.token_masking = MlpBlock(dim, bottleneck_dim, num_tokens, dropout)
        else:
            convs = [nn.Conv2d(dim, num_tokens, 3, padding=1, bias=False)]
            convs += [nn.Conv2d(num_tokens, num_tokens, 3, padding=1, bias=False) for _ in range(3)]
            self.convs = nn.ModuleList(convs)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """Weights [B, S, N] with which the learned tokens pool the inputs (maps for visualisation)."""
        selected = self.norm(x)  # [B, N, C]
        if self.version == "1.1":
            logits = self.token_masking(selected)  # [B, N, S]
            return logits.transpose(1, 2).softmax(dim=-1)  # [B, S, N], softmax over space
        b, n, c = x.shape
        h, w = self.grid_size if self.grid_size is not None else _square(n)
        if h * w != n:
            raise ValueError(f"TokenLearner v1.0 grid {h}x{w} does not hold {n} tokens")
        maps = selected.transpose(1, 2).reshape(b, c, h, w)  # [B, C, h, w]
        for i, conv in enumerate(self.convs):
            maps = conv(maps)  # [B, S, h, w]
            if i < len(self.convs) - 1:
                maps = F.gelu(maps)
        return maps.flatten(2).sigmoid()  # [B, S, N]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = self.attention(x)  # [B, S, N]
        if self.store_attention:
            self.last_attention = weights.detach()
        out = torch.einsum("bsn,bnc->bsc", weights, x)  # [B, S, C]
        if self.version == "1.0" and not self.sum_pooling:
            out = out / x.shape[1]
        return out


class TokenFuser(nn.Module):
    """Fuse S processed tokens back onto the N-token grid: ([B, S, C], [B, N, C]) -> [B, N, C].

    scenic `TokenFuser`: LN -> Dense over the token axis (zero init) -> LN, then each output grid
    position takes a sigmoid-gated mix of the S tokens, gated from the original input. The zero
    init makes a TokenLearner + block + TokenFuser layer start as the identity (after the residual).
    """

    def __init__(self, dim: int, num_tokens: int, bottleneck_dim: int = 64, dropout: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LN_EPS)
        self.mix = nn.Linear(num_tokens, num_tokens)  # mixes across the S axis
        nn.init.zeros_(self.mix.weight)
        nn.init.zeros_(self.mix.bias)
        self.norm2 = nn.LayerNorm(dim, eps=LN_EPS)
        self.norm_original = nn.LayerNorm(dim, eps=LN_EPS)
        self.token_masking = MlpBlock(dim, bottleneck_dim, num_tokens, dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, tokens: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
        y = self.norm1(tokens)  # [B, S, C]
        y = self.mix(y.transpose(1, 2)).transpose(1, 2)  # [B, C, S] -> mix S -> [B, S, C]
        y = self.norm2(y)
        gate = self.token_masking(self.norm_original(original)).sigmoid()  # [B, N, S]
        return self.drop(torch.einsum("bsc,bns->bnc", y, gate))  # [B, N, C]


class TokenLearnerLayer(nn.Module):
    """The insertion point in a ViT: prefix (class/register) tokens pass through untouched,
    the N patch tokens become S learned tokens: [B, P + N, C] -> [B, P + S, C]."""

    def __init__(self, tokenlearner: TokenLearner, num_prefix_tokens: int) -> None:
        super().__init__()
        self.tokenlearner = tokenlearner
        self.num_prefix_tokens = num_prefix_tokens

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.num_prefix_tokens
        learned = self.tokenlearner(x[:, p:])  # [B, S, C]
        return torch.cat([x[:, :p], learned], dim=1) if p else learned


class TokenFuserBlock(nn.Module):
    """scenic `EncoderModFuser` layer around one ViT block: learn S tokens, run the block on
    them, fuse back to the grid, add the residual. Sequence length stays P + N.

    On video (`time_steps` T > 1, time-major tokens) the learner and the fuser act per time step
    and the block attends jointly over all T*S learned tokens, as scenic's EncoderModFuser does
    with `temporal_dimensions`. T = 1 is the image case: the reshapes are no-ops.
    """

    def __init__(
        self,
        block: nn.Module,
        tokenlearner: TokenLearner,
        fuser: TokenFuser,
        num_prefix_tokens: int,
        time_steps: int = 1,
    ) -> None:
        super().__init__()
        self.tokenlearner = tokenlearner
        self.block = block
        self.fuser = fuser
        self.num_prefix_tokens = num_prefix_tokens
        self.time_steps = time_steps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p, t = self.num_prefix_tokens, self.time_steps
        residual = x[:, p:]  # [B, T*N, C]
        b, tn, c = residual.shape
        steps = residual.reshape(b * t, tn // t, c)  # [B*T, N, C]
        learned = self.tokenlearner(steps).reshape(b, -1, c)  # [B*T, S, C] -> [B, T*S, C]
        y = self.block(torch.cat([x[:, :p], learned], dim=1))  # [B, P + T*S, C], joint attention
        tokens = y[:, p:].reshape(b * t, -1, c)  # [B*T, S, C]
        fused = self.fuser(tokens, steps).reshape(b, tn, c) + residual  # [B*T, N, C] -> [B, T*N, C]
        return torch.cat([y[:, :p], fused], dim=1) if p else fused


def _square(n: int) -> tuple[int, int]:
    h = math.isqrt(n)
    if h * h != n:
        raise ValueError(f"TokenLearner v1.0 needs a square token grid or grid_size; got {n} tokens")
    return h, h
