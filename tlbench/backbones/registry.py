"""The backbone registry: every model name tlbench builds besides timm's own, by family.

- ALIASES: short names for timm models (the paper's);
- CUSTOM_MODELS: timm VisionTransformers built from arguments (CPU-sized and test models);
- REPATCHED: timm ViTs at another patch size (the paper's L/10, L/8);
- VIDEO_MODELS (backbones/video.py): ViViT, joint space-time attention.
A new model is one row here (or in its family's module) and its DESCRIPTIONS line; the contract
test in tests/test_backbones.py runs over every name.
"""

from __future__ import annotations

from typing import Any

from tlbench.backbones.video import VIDEO_DESCRIPTIONS

# The one alias table: short names for the paper's models and a few more.
ALIASES: dict[str, str] = {
    "vit_ti16": "vit_tiny_patch16_224",
    "vit_s16": "vit_small_patch16_224",
    "vit_s32": "vit_small_patch32_224",
    "vit_b16": "vit_base_patch16_224",
    "vit_b32": "vit_base_patch32_224",
    "vit_b8": "vit_base_patch8_224",
    "vit_l16": "vit_large_patch16_224",
    "vit_l32": "vit_large_patch32_224",
    "vit_h14": "vit_huge_patch14_224",
    # The paper's ViT-G/14 (Zhai et al., "Scaling Vision Transformers"): 48 blocks, width 1664,
    # MLP 8192, 16 heads, 14 px patches; timm's name for this geometry is "gigantic".
    "vit_g14": "vit_gigantic_patch14_224",
}


# Models that are not in timm's registry: timm VisionTransformer built from these arguments.
CUSTOM_MODELS: dict[str, dict[str, Any]] = {
    # For tests: timm's `test_vit` shape, 16 patches.
    "tiny": dict(img_size=32, patch_size=8, embed_dim=64, depth=4, num_heads=2, mlp_ratio=2.0),
    # CPU-sized ViTs that a 2-core machine trains in minutes. No class token (as in the paper);
    # jax init + 2-D sin-cos pos-embed init: with timm's default init they stay on a plateau for
    # hundreds of steps (shared/reference/cpu-demo-feasibility.md). Width 48, not 64: at the same
    # training budget the features are better and a step costs 0.7x (results/README.md).
    # vit_cpu6 is the built-in study's model; vit_cpu12 has B/16's depth (p = 1/4 is block 3).
    "vit_cpu6": dict(img_size=32, patch_size=4, embed_dim=48, depth=6, num_heads=2, mlp_ratio=2.0,
                     class_token=False, weight_init="jax"),  # fmt: skip
    "vit_cpu12": dict(img_size=32, patch_size=4, embed_dim=48, depth=12, num_heads=2,
                      mlp_ratio=2.0, class_token=False, weight_init="jax"),  # fmt: skip
    # vit_cpu6's family for the model-family figure on a CPU (sweeps/vit_family_cpu.toml): two
    # widths x two patch sizes, as the paper's S and B at /32 and /16: width 32 or 48, 8 px patches
    # (16 tokens) or 4 px (64 tokens, vit_cpu6 itself).
    "vit_cpu6_p8": dict(img_size=32, patch_size=8, embed_dim=48, depth=6, num_heads=2,
                        mlp_ratio=2.0, class_token=False, weight_init="jax"),  # fmt: skip
    "vit_cpu6_w32": dict(img_size=32, patch_size=4, embed_dim=32, depth=6, num_heads=2,
                         mlp_ratio=2.0, class_token=False, weight_init="jax"),  # fmt: skip
    "vit_cpu6_w32_p8": dict(img_size=32, patch_size=8, embed_dim=32, depth=6, num_heads=2,
                            mlp_ratio=2.0, class_token=False, weight_init="jax"),  # fmt: skip
}


# vivit_cpu's image source (backbones/video.py IMAGE_SOURCES): vit_cpu6 at vivit_cpu's depth. Train it
# on images and give its checkpoint to vivit_cpu, which inflates it.
CUSTOM_MODELS["vit_cpu8"] = dict(CUSTOM_MODELS["vit_cpu6"], depth=8)
SINCOS_INIT = set(CUSTOM_MODELS) - {"tiny"}  # every CPU-sized model; tiny keeps timm's init


# timm ViTs at another patch size: (timm name, patch size). Built by timm with `patch_size=`, so a
# pretrained or local checkpoint of the stock model loads through timm's checkpoint_filter_fn,
# which resamples the patch embedding to the new patch (resample_patch_embed, PI-resize) and the
# position embedding to the new grid (resample_abs_pos_embed). The paper's L/10 and L/8 are
# ViT-L/16 with smaller patches: at 224 px a 10 px patch gives a 22 x 22 grid (the last 4 pixel
# rows and columns fall outside it, as in any strided conv) and an 8 px patch a 28 x 28 grid.
REPATCHED: dict[str, tuple[str, int]] = {
    "vit_l10": ("vit_large_patch16_224", 10),
    "vit_l8": ("vit_large_patch16_224", 8),
}


DESCRIPTIONS = {
    "tiny": "test model: 32 px, patch 8, width 64, depth 4, 2 heads",
    "vit_cpu6": "CPU-sized depth-6 ViT: 32 px, patch 4, width 48, 2 heads, no class token",
    "vit_cpu8": "CPU-sized depth-8 ViT, vit_cpu6 at vivit_cpu's depth: its checkpoints inflate into vivit_cpu",
    "vit_cpu12": "CPU-sized depth-12 ViT: 32 px, patch 4, width 48, 2 heads, no class token",
    "vit_cpu6_p8": "vit_cpu6 with 8 px patches (16 tokens)",
    "vit_cpu6_w32": "vit_cpu6 at width 32",
    "vit_cpu6_w32_p8": "vit_cpu6 at width 32 with 8 px patches (16 tokens)",
    "vit_l10": "ViT-L/16 with 10 px patches (paper's L/10): 22 x 22 grid at 224 px",
    "vit_l8": "ViT-L/16 with 8 px patches (paper's L/8): 28 x 28 grid at 224 px",
    "vit_g14": "ViT-G/14 (vit_gigantic_patch14_224): 48 blocks, width 1664, MLP 8192",
    "dinov2_s14": "vit_small_patch14_dinov2 at 224 px; --pretrained: DINOv2 offline (docs/dinov2.md)",
    **VIDEO_DESCRIPTIONS,
}

