"""Video ViTs: ViViT "model 1" (joint space-time attention) as a stock timm VisionTransformer.

Only the patch embedding changes: a 3-D convolution cuts the clip [B, C, F, H, W] into tubelets of
t frames x p x p pixels and emits time-major tokens [B, T*h*w, C] (T = F / t), as scenic's ViViT
does. Every block is timm's, attends jointly over all T*h*w tokens, and the head is tlbench's
global average pool (no class token). The position embedding starts as a 2-D sin-cos over the
spatial grid tiled over time plus a 1-D sin-cos over time, so a small model trains from scratch.

A token reducer acts per time step: [B, T*N, C] -> [B*T, N, C] -> reduce -> [B, T*S, C]
(reducers.base.PerTimeStep); the later blocks attend jointly over T*S tokens (the TokenLearner paper's ViViT).

Pretrained weights come from an image ViT by inflation (`inflate`), as scenic's ViViT initialises
from an image checkpoint: each video model names its image source in IMAGE_SOURCES.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from tlbench.errors import ConfigError

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
# The image ViT (a tlbench alias) whose weights inflate into each video model: same width, depth,
# heads, MLP and patch. vit_cpu8 has no hub weights: train one with tlbench and pass its checkpoint.
IMAGE_SOURCES = {"vivit_b16x2": "vit_b16", "vivit_l16x2": "vit_l16", "vivit_cpu": "vit_cpu8"}
StateDict = Mapping[str, torch.Tensor]  # a timm state dict: parameter name -> tensor
_FILTER = "patch_embed.proj.weight"  # the image model's 2-D patch filter [D, C, p, p]
# scenic's central_frame_initializer and average_frame_initializer
INFLATE_INITS = ("central", "average")


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
        with torch.no_grad():  # the patch positions: timm puts register tokens' entries first
            model.pos_embed[:, -pe.num_patches :].copy_(video_pos_embed(pe.time_steps, pe.grid_size, model.embed_dim))
    return model


def is_video(model: nn.Module) -> bool:
    return isinstance(getattr(model, "patch_embed", None), TubeletEmbed)


def input_shape(model: nn.Module, batch: int, size: tuple[int, int], in_chans: int) -> tuple[int, ...]:
    """[B, C, H, W] for an image ViT, [B, C, F, H, W] for a video one."""
    if is_video(model):
        return (batch, in_chans, model.patch_embed.num_frames, *size)
    return (batch, in_chans, *size)


def inflate_filter(weight: torch.Tensor, time_size: int, init: str = "central") -> torch.Tensor:
    """2-D patch filter [D, C, p, p] -> 3-D tubelet filter [D, C, t, p, p], by scenic's kernel inits.

    "central" puts the 2-D filter in the central time slice (t // 2) and zeros in the others, so a
    tubelet embeds its central frame exactly as the image model embeds a frame. "average" puts
    filter / t in every slice (I3D's filter inflation): on a clip that is still in time, a tubelet
    embeds as the image model embeds any of its frames.
    """
    if init not in INFLATE_INITS:
        raise ConfigError(f"inflation init must be one of {', '.join(INFLATE_INITS)}, got {init!r}")
    if init == "average":
        return weight.unsqueeze(2).repeat(1, 1, time_size, 1, 1) / time_size  # [D, C, t, p, p]
    out = weight.new_zeros(*weight.shape[:2], time_size, *weight.shape[2:])  # [D, C, t, p, p]
    out[:, :, time_size // 2] = weight
    return out


def inflate(image_state: StateDict, video: nn.Module, init: str = "central") -> None:
    """Load an image ViT's weights (a timm state dict) into a video ViT built by create_video.

    As scenic's ViViT starts from an image model: the patch filter becomes the tubelet filter
    (inflate_filter, `init` "central" or "average"), its bias is copied; the position embedding
    loses the class/register tokens' entries, is resampled to the video's grid when the grid differs
    (timm's resample_abs_pos_embed) and is tiled over the T time steps, as scenic's 'tile' does:
    unlike a video model trained from scratch (video_pos_embed) it gets no temporal sin-cos, so on a
    clip that is still in time the inflated model computes what the image model computes on one frame.
    Blocks and the final norm are copied as they are; the class and register tokens are dropped (the
    video model pools by global average) and so is the classifier head (the video's stays fresh).

    Raises:
        ConfigError: one line naming what differs (width, depth, patch, channels, MLP) when the
            weights do not fit. A state dict does not hold the number of heads: it is taken as the
            video model's.
    """
    misfit = "image weights do not fit the video model:"
    if differs := _differences(image_state, video):
        raise ConfigError(f"{misfit} {differs}")
    pe = video.patch_embed
    state = {
        _FILTER: inflate_filter(image_state[_FILTER], pe.tubelet, init),  # [D, C, t, p, p]
        "pos_embed": _tiled_pos_embed(image_state, pe.grid_size, pe.time_steps),
    }
    dropped = ("cls_token", "reg_token", "head.", "pre_logits.", _FILTER, "pos_embed")
    state |= {k: v for k, v in image_state.items() if not k.startswith(dropped)}
    own = video.state_dict()
    unexpected = sorted(k for k, v in state.items() if k not in own or own[k].shape != v.shape)
    if unexpected:
        raise ConfigError(f"{misfit} it has no {', '.join(unexpected[:3])}")
    missing, _ = video.load_state_dict(state, strict=False)
    if missing := [k for k in missing if not k.startswith("head.")]:
        raise ConfigError(f"{misfit} missing {', '.join(missing[:3])}")


def _differences(state: StateDict, video: nn.Module) -> str:
    """What differs between an image state dict and a video ViT, or '' when they fit."""
    w = state.get(_FILTER)
    if w is None or w.ndim != 4 or "pos_embed" not in state:
        return "no conv patch embedding and position embedding (not a timm ViT state dict)"
    depth = len({k.split(".")[1] for k in state if k.startswith("blocks.")})
    fc1 = state.get("blocks.0.mlp.fc1.weight")
    pairs = [
        ("width", w.shape[0], video.embed_dim),
        ("depth", depth, len(video.blocks)),
        ("patch", tuple(w.shape[2:]), tuple(video.patch_embed.patch_size)),
        ("channels", w.shape[1], video.patch_embed.proj.in_channels),
        ("MLP width", None if fc1 is None else fc1.shape[0], video.blocks[0].mlp.fc1.out_features),
    ]
    return "; ".join(f"{what} {got}, not {want}" for what, got, want in pairs if got != want)


def _tiled_pos_embed(state: StateDict, grid: tuple[int, int], time_steps: int) -> torch.Tensor:
    """The image position embedding without prefix entries, on `grid`, tiled: [1, T*h*w, D]."""
    from timm.layers import resample_abs_pos_embed

    pos = state["pos_embed"]  # [1, P + g*g, D], or [1, g*g, D] (timm's no_embed_class)
    registers = state["reg_token"].shape[1] if "reg_token" in state else 0
    prefix = int("cls_token" in state) + registers
    n = pos.shape[1]
    if prefix and math.isqrt(n - prefix) ** 2 == n - prefix:
        pos = pos[:, prefix:]  # the class/register tokens' entries go with those tokens
    elif math.isqrt(n) ** 2 != n:
        raise ConfigError(f"the image position embedding's {n} entries are not a square grid")
    g = math.isqrt(pos.shape[1])
    if (g, g) != tuple(grid):  # [1, h*w, D]
        pos = resample_abs_pos_embed(pos.float(), list(grid), [g, g], num_prefix_tokens=0)
    return pos.repeat(1, time_steps, 1)  # [1, T*h*w, D], time-major like the tokens
