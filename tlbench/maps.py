"""TokenLearner's spatial maps: where each learned token looks, from stored weights only.

A learned token is a weighted pool of the patch tokens entering the TokenLearner; its weights
over the patch grid (v1.1: softmax over space, summing to 1; v1.0: independent sigmoids) are the
map. Maps are captured with a forward hook on the (first) TokenLearner module, so the model runs
unchanged. Nothing here trains: the weights come from a training checkpoint (adapt._save format,
`{"state_dict": ...}`) or from the model as given.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tlbench import files
from tlbench.data import fit_images, normalize
from tlbench.errors import ConfigError, DataError
from tlbench.models import Variant, build_model, make_variant
from tlbench.tokenlearner import TokenLearner

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm")


def find_tokenlearner(model: nn.Module) -> TokenLearner:
    """The model's first TokenLearner (with the fuser, the one in block k); ConfigError if none."""
    for m in model.modules():
        if isinstance(m, TokenLearner):
            return m
    variant = getattr(model, "tl_variant", None)
    what = variant.name if variant is not None else type(model).__name__
    raise ConfigError(f"{what} has no TokenLearner: maps need a TokenLearner variant (a position and "
                      "method tokenlearner), not the baseline or another reducer")  # fmt: skip


@torch.no_grad()
def token_maps(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Images [B, C, H, W] in [0, 1] -> each learned token's weights over the patch grid [B, S, h, w];
    clips [B, C, F, H, W] on a video model -> [B, T, S, h, w], the maps of each time step.

    The images are fitted to the model's input (size, channels, frames) and normalised as in training.
    """
    from tlbench.adapt import batch_args

    tl = find_tokenlearner(model)
    captured: list[torch.Tensor] = []

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        captured.append(module.attention(inputs[0]).detach())  # [B, S, N]; pure, so recomputed

    x = normalize(fit_images(images.float(), **batch_args(model)))
    handle = tl.register_forward_hook(hook)
    try:
        model.eval()(x.to(next(model.parameters()).device))
    finally:
        handle.remove()
    h, w = model.patch_embed.grid_size
    weights = captured[0].cpu()  # [B, S, N]; per time step on video: [B*T, S, N]
    if x.ndim == 5:
        return weights.reshape(len(x), -1, weights.shape[1], h, w)  # [B, T, S, h, w]
    return weights.reshape(weights.shape[0], weights.shape[1], h, w)  # [B, S, h, w]


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


@dataclass(frozen=True)
class MapsSource:
    """A checkpoint and the variant whose weights it holds."""

    checkpoint: Path
    variant: Variant
    img_size: int | None = None


def _manifest(run: Path) -> dict:
    from tlbench.results import read_manifest

    return read_manifest(run)  # a missing, unreadable or damaged manifest: one line


def from_run(run_dir: str | Path, variant_name: str, model: str | None = None) -> MapsSource:
    """The checkpoint of `variant_name` in a sweep's run directory (RUN_DIR/checkpoints/*.pt);
    `model` picks among a several-model run's variants of the same name (default: the first)."""
    run = Path(run_dir)
    meta = _manifest(run)
    records: dict[str, dict] = {}
    for r in meta.get("variants", []):
        if model is None or r["model"] == model:
            records.setdefault(r["name"], r)
    if variant_name not in records:
        raise ConfigError(f"no variant {variant_name!r} in {run}; it has {', '.join(records) or 'none'}")
    return _source(run, meta, records[variant_name])


def _source(run: Path, meta: dict, r: dict) -> MapsSource:
    """The checkpoint of the manifest's variant record `r` (ConfigError if it has none)."""
    params = tuple(tuple(p) for p in r.get("params", ()))
    variant = Variant(r["model"], r["position"], r["block_index"], r["num_tokens"], r.get("version", "1.1"),
                      r.get("fuser", False), r.get("method", "tokenlearner"), params)  # fmt: skip
    name = variant.name
    if variant.is_baseline or variant.method != "tokenlearner":
        raise ConfigError(f"{name} has no TokenLearner: maps need a TokenLearner variant")
    found = sorted((run / "checkpoints").glob(f"{variant.model}-{name}-*.pt"))
    found = [p for p in found if not p.name.endswith(".partial.pt")]
    if not found:
        raise ConfigError(f"no training checkpoint for {name} under {run / 'checkpoints'} "
                          "(the quality stage writes them; a compute-only run has none)")  # fmt: skip
    return MapsSource(found[0], variant, meta.get("config", {}).get("model", {}).get("img_size"))


def trained_sources(run: Path, meta: dict) -> Iterator[MapsSource]:
    """Each TokenLearner variant of a run's manifest that has a finished training checkpoint."""
    for r in meta.get("variants", []):
        if r.get("position") is None or r.get("method", "tokenlearner") != "tokenlearner":
            continue
        try:
            yield _source(run, meta, r)
        except ConfigError:  # no finished checkpoint
            continue


def from_checkpoint(path: str | Path, model: str, position: float | None, num_tokens: int,
                    version: str = "1.1", fuser: bool = False, img_size: int | None = None) -> MapsSource:  # fmt: skip
    """A checkpoint file and the variant options it was trained with."""
    if position is None:
        raise ConfigError("maps need a TokenLearner variant: give --position (the baseline has none)")
    variant = make_variant(model, position, num_tokens, version=version, fuser=fuser, img_size=img_size)
    return MapsSource(Path(path), variant, img_size)


def load_model(source: MapsSource) -> nn.Module:
    """Build the variant and load the checkpoint's weights into it (every key must fit)."""
    if source.variant.is_baseline or source.variant.method != "tokenlearner":
        raise ConfigError(f"{source.variant.name} has no TokenLearner: maps need a TokenLearner variant")
    path = source.checkpoint
    if not path.is_file():
        raise ConfigError(f"checkpoint file not found: {path}")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a foreign or damaged file
        raise ConfigError(f"could not read checkpoint {path}: {type(e).__name__}") from None
    state = blob.get("state_dict", blob) if isinstance(blob, dict) else None
    if not isinstance(state, dict) or "head.weight" not in state:
        raise ConfigError(f"{path} is not a tlbench training checkpoint (no state_dict with a head)")
    model = build_model(source.variant, img_size=source.img_size, num_classes=state["head.weight"].shape[0])
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise ConfigError(f"checkpoint {path} does not fit {source.variant.model} {source.variant.name}: "
                          f"{first}") from None  # fmt: skip
    return model.eval()


# ---- which images ----------------------------------------------------------------------


def builtin_images(spec: str = "digits", count: int = 4) -> torch.Tensor:
    """One test image per class 0, 1, 2, ... of a built-in set: [count, 1, 32, 32] in [0, 1]."""
    from tlbench.data import load_splits

    test = load_splits(spec)[1]
    picks = [int((test.labels == c).nonzero()[0][0]) for c in range(min(count, test.num_classes))]
    return test.images[picks]


def folder_images(folder: str | Path, size: int, count: int | None = None) -> torch.Tensor:
    """The image files of a folder (sorted by name), RGB, resized and centre-cropped to `size`."""
    from tlbench.images import _load_image, _pil_transform

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

    from tlbench.plots import _style

    _style()
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


def save_figure(fig: Any, out_stem: str | Path) -> list[Path]:
    """OUT_STEM.png and OUT_STEM.pdf (the folder made if needed); the figure is closed."""
    import matplotlib.pyplot as plt

    paths = [Path(f"{out_stem}.png"), Path(f"{out_stem}.pdf")]
    try:  # through files: a path under a file, or a refused folder, is one line
        for p in paths:
            files.write_with(p, lambda tmp, p=p: fig.savefig(tmp, format=p.suffix[1:], bbox_inches="tight"))
    finally:
        plt.close(fig)
    return paths


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
        from tlbench.tracking import builtin_clips, clip_tracking, plot_maps_over_time

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

    from tlbench.data import BUILTIN, parse_spec

    run = Path(run_dir)
    meta = _manifest(run)
    out = Path(out_dir) if out_dir is not None else run / "figures"
    train_data = meta.get("config", {}).get("quality", {}).get("train_data", "")
    if parse_spec(train_data)[0] == "moving_mnist":  # video: maps over time and tracking scores
        from tlbench.tracking import run_video_maps

        return run_video_maps(run, meta, out, train_data)
    if train_data not in BUILTIN:
        return []
    several = len({r["model"] for r in meta.get("variants", [])}) > 1
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
