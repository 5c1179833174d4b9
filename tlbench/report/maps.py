"""TokenLearner's spatial maps: where each learned token looks, from stored weights only.

A learned token is a weighted pool of the patch tokens entering the TokenLearner; its weights
over the patch grid (v1.1: softmax over space, summing to 1; v1.0: independent sigmoids) are the
map. Maps are captured with a forward hook on the (first) TokenLearner module, so the model runs
unchanged. Nothing here trains: the weights come from a training checkpoint (adapt._save format,
`{"state_dict": ...}`) or from the model as given.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from tlbench import files, results
from tlbench.data.images import _load_image, _pil_transform
from tlbench.data.sources import BUILTIN, load_splits, parse_spec
from tlbench.errors import ConfigError, DataError
from tlbench.report.style import apply_style
from tlbench.report.token_maps import (
    MapsSource,
    load_model,
    save_figure,
    token_maps,
    trained_sources,
    variant_records,
)
from tlbench.report.tracking import (
    builtin_clips,
    clip_tracking,
    plot_maps_over_time,
    run_video_maps,
)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm")


def digit_mass(images: torch.Tensor, maps: torch.Tensor, threshold: float = 0.5) -> dict[str, float]:
    """How much of each token's weight lies on the digit, against the digit's share of the area.

    A patch's ink is the fraction of its pixels above `threshold` (grayscale in [0, 1], light
    digit on dark ground as in MNIST). A token's mass on the digit is sum(w * ink) / sum(w) over
    patches; the area share is mean(ink). Tokens that attend to the digit have mass > area.
    """
    b, s, h, w = maps.shape
    gray = images.float().mean(1, keepdim=True)  # [B, 1, H, W]
    # resampled to 8 x 8 pixels per patch, so any image size maps onto the patch grid
    gray = nn.functional.interpolate(gray, size=(h * 8, w * 8), mode="bilinear", align_corners=False)
    ink = nn.functional.avg_pool2d((gray > threshold).float(), 8)[:, 0]  # [B, h, w] in [0, 1]
    wts = maps.reshape(b, s, h * w)
    mass = (wts * ink.reshape(b, 1, h * w)).sum(-1) / wts.sum(-1).clamp_min(1e-12)  # [B, S]
    area = ink.reshape(b, -1).mean(-1)  # [B]
    return {
        "mass_on_digit": float(mass.mean()),  # mean over images and tokens
        "area_of_digit": float(area.mean()),
        "ratio": float((mass / area.clamp_min(1e-12)[:, None]).mean()),
        "tokens_above_area": float((mass > area[:, None]).float().mean()),  # share of (image, token)
    }


# ---- where the weights come from -------------------------------------------------------


# ---- which images ----------------------------------------------------------------------


def builtin_images(spec: str = "digits", count: int = 4) -> torch.Tensor:
    """One test image per class 0, 1, 2, ... of a built-in set: [count, 1, 32, 32] in [0, 1]."""

    test = load_splits(spec)[1]
    picks = [int((test.labels == c).nonzero()[0][0]) for c in range(min(count, test.num_classes))]
    return test.images[picks]


def folder_images(folder: str | Path, size: int, count: int | None = None) -> torch.Tensor:
    """The image files of a folder (sorted by name), RGB, resized and centre-cropped to `size`."""

    root = Path(folder)
    if not root.is_dir():
        raise DataError(f"image folder not found: {root}")
    paths = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise DataError(f"no images in {root} (looked for {', '.join(IMAGE_SUFFIXES)})")
    tf = _pil_transform(size)
    return torch.stack([tf(_load_image(str(p))) for p in paths[:count]])  # [B, 3, size, size]


# ---- the figure ------------------------------------------------------------------------


def plot_maps(images: torch.Tensor, maps: torch.Tensor, out_stem: str | Path, title: str = "") -> list[Path]:
    """One row per image: the image, each token's map over it, and the patches coloured by the
    token that weighs them most. Writes OUT_STEM.png and OUT_STEM.pdf."""
    import matplotlib.pyplot as plt
    import numpy as np


    apply_style()
    b, s, h, w = maps.shape
    gray = images.float().mean(1).numpy()  # [B, H, W]
    fig, axes = plt.subplots(b, s + 2, figsize=(1.3 * (s + 2), 1.35 * b + 0.6), squeeze=False)
    extent = (0, gray.shape[2], gray.shape[1], 0)  # the map covers the image (grid = image / patch)
    colours = plt.get_cmap("tab20")(np.arange(s) % 20)[:, :3]
    for i in range(b):
        axes[i, 0].imshow(gray[i], cmap="gray", vmin=0, vmax=1)
        for j in range(s):
            ax = axes[i, j + 1]
            ax.imshow(gray[i], cmap="gray", vmin=0, vmax=1)
            m = maps[i, j].numpy()
            ax.imshow(m / max(m.max(), 1e-12), cmap="magma", alpha=0.6, extent=extent, vmin=0, vmax=1)
            if i == 0:
                ax.set_title(f"token {j}", fontsize=8)
        best = maps[i].argmax(0).numpy()  # [h, w]
        ax = axes[i, s + 1]
        ax.imshow(gray[i], cmap="gray", vmin=0, vmax=1)
        ax.imshow(colours[best], alpha=0.55, extent=extent)
    axes[0, 0].set_title("image", fontsize=8)
    axes[0, s + 1].set_title("top token", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, out_stem)


def render_maps(source: MapsSource, images: torch.Tensor | None = None, out_stem: str | Path = "maps",
                threshold: float = 0.5, count: int = 4) -> tuple[list[Path], dict[str, float] | None]:  # fmt: skip
    """Load, map, plot: the figure's paths and, for the built-in digits, digit_mass. A video
    model's maps are drawn over time on `count` Moving MNIST test clips, with the tokens'
    tracking scores (over 10 test clips of each digit) in place of the digit mass."""
    model = load_model(source)
    v = source.variant
    kind = "softmax" if v.version == "1.1" else "sigmoid"
    if getattr(model.patch_embed, "time_steps", 1) > 1:
        if images is not None:
            raise ConfigError("--images is for image models; a video model's maps are drawn on Moving MNIST clips")

        clips, boxes, labels = builtin_clips("moving_mnist", 10, per_class=10)
        maps, masks, scores = clip_tracking(model, clips, boxes)
        per_token = scores.mean((0, 1)).numpy()
        show = [c * 10 for c in range(min(count, 10))]
        paths = plot_maps_over_time(clips[show], masks[show], maps[show], per_token, out_stem,
                                    f"{v.model} {v.name} (TokenLearner v{v.version}, {kind} maps per time step)",
                                    labels[show])  # fmt: skip
        return paths, {"tracking_best": float(per_token.max()), "tracking_mean": float(per_token.mean())}
    digits = images is None
    imgs = builtin_images("digits", count) if digits else images
    maps = token_maps(model, imgs)
    title = f"{v.model} {v.name} (TokenLearner v{v.version}, {kind} maps)"
    paths = plot_maps(imgs, maps, out_stem, title)
    return paths, digit_mass(imgs, maps, threshold) if digits else None


def run_maps(run_dir: str | Path, out_dir: str | Path | None = None, plot_count: int = 4,
             mass_count: int = 10, threshold: float = 0.5) -> list[Path]:  # fmt: skip
    """The maps of every trained TokenLearner variant of a sweep's run: OUT_DIR/maps-NAME.png/.pdf
    (the first `plot_count` built-in digits) and OUT_DIR/maps.csv (digit mass over `mass_count`
    digits, one per class, a row per variant). OUT_DIR defaults to RUN_DIR/figures.

    Only for runs trained on built-in data (the digit-mass number needs digits); variants without
    a finished checkpoint (quality skipped, or not run yet) are left out. For other data:
    `tlbench maps RUN_DIR --variant NAME --images DIR`.
    """
    import pandas as pd


    run = Path(run_dir)
    meta = results.read_manifest(run)
    several = len({r["model"] for r in variant_records(run, meta)}) > 1  # checked before any use
    out = Path(out_dir) if out_dir is not None else run / "figures"
    train_data = meta.get("config", {}).get("quality", {}).get("train_data", "")
    if parse_spec(train_data)[0] == "moving_mnist":  # video: maps over time and tracking scores

        return run_video_maps(run, meta, out, train_data)
    if train_data not in BUILTIN:
        return []
    imgs = None  # loaded once, and only if some variant has a checkpoint
    rows, paths = [], []
    for source in trained_sources(run, meta):
        if imgs is None:
            imgs = builtin_images("digits", mass_count)
        maps = token_maps(load_model(source), imgs)
        v = source.variant
        label = f"{v.model}-{v.name}" if several else v.name
        kind = "softmax" if v.version == "1.1" else "sigmoid"
        paths += plot_maps(imgs[:plot_count], maps[:plot_count], out / f"maps-{label}",
                           f"{v.model} {v.name} (TokenLearner v{v.version}, {kind} maps)")  # fmt: skip
        rows.append(dict(model=v.model, variant=v.name, position=v.position, num_tokens=v.num_tokens,
                         version=v.version, images=len(imgs), **digit_mass(imgs, maps, threshold)))  # fmt: skip
    if rows:
        csv = out / "maps.csv"
        files.write_text(csv, pd.DataFrame(rows).to_csv(index=False, float_format="%.6g"))
        paths.append(csv)
    return paths
