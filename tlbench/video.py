"""Video ViTs: ViViT "model 1" (joint space-time attention) as a stock timm VisionTransformer.

Only the patch embedding changes: a 3-D convolution cuts the clip [B, C, F, H, W] into tubelets of
t frames x p x p pixels and emits time-major tokens [B, T*h*w, C] (T = F / t), as scenic's ViViT
does. Every block is timm's, attends jointly over all T*h*w tokens, and the head is tlbench's
global average pool (no class token). The position embedding starts as a 2-D sin-cos over the
spatial grid tiled over time plus a 1-D sin-cos over time, so a small model trains from scratch.

A token reducer acts per time step: [B, T*N, C] -> [B*T, N, C] -> reduce -> [B, T*S, C]
(PerTimeStep); the later blocks attend jointly over T*S tokens (the TokenLearner paper's ViViT).
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import nn

# name -> VisionTransformer arguments plus the clip shape (frames, tubelet = frames per tubelet).
VIDEO_MODELS: dict[str, dict[str, Any]] = {
    # The paper's ViViT-B/16x2 and ViViT-L/16x2: 32 frames of 224 px -> 16 time steps x 196 patches.
    "vivit_b16x2": dict(img_size=224, patch_size=16, embed_dim=768, depth=12, num_heads=12,
                        frames=32, tubelet=2),  # fmt: skip
    "vivit_l16x2": dict(img_size=224, patch_size=16, embed_dim=1024, depth=24, num_heads=16,
                        frames=32, tubelet=2),  # fmt: skip
    # CPU-sized: 8 frames of 32 px, tubelet 2x4x4 -> 4 time steps x 64 patches, width 48, depth 8.
    "vivit_cpu": dict(img_size=32, patch_size=4, embed_dim=48, depth=8, num_heads=2, mlp_ratio=2.0,
                      frames=8, tubelet=2, weight_init="jax"),  # fmt: skip
}
VIDEO_DESCRIPTIONS = {
    "vivit_b16x2": "ViViT-B/16x2 (joint space-time): 32 frames of 224 px, 16 x 196 = 3,136 tokens",
    "vivit_l16x2": "ViViT-L/16x2 (joint space-time): 32 frames of 224 px, 16 x 196 = 3,136 tokens",
    "vivit_cpu": "CPU-sized ViViT: 8 frames of 32 px, tubelet 2x4x4 (4 x 64 tokens), width 48, depth 8",
}


class TubeletEmbed(nn.Module):
    """Tubelets of t x p x p -> tokens, time-major: [B, C, F, H, W] -> [B, T*h*w, D].

    Carries the attributes tlbench reads from timm's PatchEmbed (img_size, patch_size, grid_size
    = the spatial (h, w), num_patches = T*h*w, proj, norm) plus the clip's frames and time steps.
    """

    def __init__(self, img_size: int | tuple[int, int] = 224, patch_size: int = 16, in_chans: int = 3,
                 embed_dim: int = 768, bias: bool = True, *, frames: int = 32, tubelet: int = 2,
                 device: Any = None, dtype: Any = None, **_: Any) -> None:  # fmt: skip
        super().__init__()
        size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        self.img_size = size
        self.patch_size = (patch_size, patch_size)
        self.grid_size = (size[0] // patch_size, size[1] // patch_size)
        self.num_frames = frames
        self.tubelet = tubelet
        self.time_steps = frames // tubelet
        self.num_patches = self.time_steps * self.grid_size[0] * self.grid_size[1]
        kernel = (tubelet, patch_size, patch_size)
        self.proj = nn.Conv3d(in_chans, embed_dim, kernel, stride=kernel, bias=bias, device=device, dtype=dtype)
        self.norm = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)  # [B, D, T, h, w]
        return x.flatten(2).transpose(1, 2)  # [B, T*h*w, D], time-major


class PerTimeStep(nn.Module):
    """Run a token reducer on each time step: [B, T*N, C] -> [B*T, N, C] -> [B*T, S, C] -> [B, T*S, C]."""

    def __init__(self, reduce: nn.Module, time_steps: int) -> None:
        super().__init__()
        self.reduce = reduce
        self.time_steps = time_steps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, tn, c = x.shape
        t = self.time_steps
        out = self.reduce(x.reshape(b * t, tn // t, c))  # [B*T, S, C]
        return out.reshape(b, -1, c)  # [B, T*S, C]


def sincos_1d(length: int, dim: int) -> torch.Tensor:
    """1-D sin-cos embedding [length, dim] (half sines, half cosines, as timm's 2-D one per axis)."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float32) / (dim // 2))
    angles = torch.arange(length, dtype=torch.float32)[:, None] * omega[None]  # [L, dim/2]
    out = torch.zeros(length, dim)
    out[:, : dim // 2 * 2] = torch.cat([angles.sin(), angles.cos()], dim=1)
    return out


def video_pos_embed(time_steps: int, grid: tuple[int, int], dim: int) -> torch.Tensor:
    """[T*h*w, dim]: the 2-D spatial sin-cos tiled over time plus a 1-D temporal sin-cos."""
    from timm.layers import build_sincos2d_pos_embed

    spatial = build_sincos2d_pos_embed(list(grid), dim)  # [h*w, dim]
    temporal = sincos_1d(time_steps, dim)  # [T, dim]
    return (temporal[:, None, :] + spatial[None]).reshape(-1, dim)


def create_video(name: str, *, img_size: int | None, frames: int | None, num_classes: int,
                 **kw: Any) -> nn.Module:  # fmt: skip
    """A stock timm VisionTransformer with the tubelet stem, GAP head, no class token."""
    from timm.models.vision_transformer import VisionTransformer

    args = dict(VIDEO_MODELS[name])
    clip = dict(frames=args.pop("frames") if frames is None else frames, tubelet=args.pop("tubelet"))
    args.pop("frames", None)
    if img_size is not None:
        args["img_size"] = img_size
    embed = functools.partial(TubeletEmbed, **clip)
    model = VisionTransformer(**{**args, **kw}, num_classes=num_classes, global_pool="avg", fc_norm=False,
                              class_token=False, embed_layer=embed)  # fmt: skip
    if model.pos_embed is not None and model.pos_embed.device.type != "meta":
        pe = model.patch_embed
        with torch.no_grad():
            model.pos_embed.copy_(video_pos_embed(pe.time_steps, pe.grid_size, model.embed_dim).unsqueeze(0))
    return model


def is_video(model: nn.Module) -> bool:
    return isinstance(getattr(model, "patch_embed", None), TubeletEmbed)


def input_shape(model: nn.Module, batch: int, size: tuple[int, int], in_chans: int) -> tuple[int, ...]:
    """[B, C, H, W] for an image ViT, [B, C, F, H, W] for a video one."""
    if is_video(model):
        return (batch, in_chans, model.patch_embed.num_frames, *size)
    return (batch, in_chans, *size)
