"""TokenLearner's maps over time on video, and whether each learned token follows the object.

On a video model TokenLearner runs per time step, so every learned token has one spatial map per
time step (tlbench.report.token_maps.token_maps returns [B, T, S, h, w]). On Moving MNIST the digit's box is
known in every frame, which turns "the maps follow the digit" into a number: a token's tracking
score is the share of its map's mass inside the digit's box divided by the box's share of the
area (1.0 = a uniform map, or one that ignores the digit; 1 / box share = all mass in the box),
averaged over time steps and clips. A time step covers a tubelet of frames: its box is the union
of their boxes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from tlbench import files
from tlbench.data.clips import even_indices
from tlbench.data.sources import load_splits
from tlbench.report.style import apply_style
from tlbench.report.token_maps import load_model, save_figure, token_maps, trained_sources


def box_masks(boxes: np.ndarray, frames: int, tubelet: int, size: tuple[int, int]) -> torch.Tensor:
    """Boxes [B, F', 4] (y0, x0, y1, x1) of clips with F' frames -> [B, T, H, W] masks of each time
    step (the union of its `tubelet` frames' boxes), after resampling F' to the model's `frames`."""
    b = boxes.shape[0]
    picked = boxes[:, even_indices(boxes.shape[1], frames)]  # [B, F, 4]
    h, w = size
    ys, xs = torch.arange(h)[:, None], torch.arange(w)[None, :]
    box = torch.as_tensor(picked)[..., None, None]  # [B, F, 4, 1, 1]
    inside = (ys >= box[:, :, 0]) & (ys < box[:, :, 2]) & (xs >= box[:, :, 1]) & (xs < box[:, :, 3])
    return inside.reshape(b, frames // tubelet, tubelet, h, w).any(2).float()  # [B, T, H, W]


def tracking_scores(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Maps [B, T, S, h, w] and box masks [B, T, H, W] -> scores [B, T, S]: the map's mass in the box
    over the box's share of the area (each patch counts the fraction of its pixels in the box)."""
    b, t, s, h, w = maps.shape
    cover = F.adaptive_avg_pool2d(masks, (h, w))  # [B, T, h, w]: box fraction of each patch
    wts = maps.flatten(3)  # [B, T, S, N]
    in_box = (wts * cover.flatten(2)[:, :, None]).sum(-1)  # [B, T, S]
    inside = in_box / wts.sum(-1).clamp_min(1e-12)
    share = cover.flatten(2).mean(-1)  # [B, T]
    return inside / share.clamp_min(1e-12)[..., None]


def builtin_clips(
    spec: str = "moving_mnist", count: int = 10, per_class: int = 1
) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """The first `per_class` test clips of each class 0, 1, ... (up to `count` classes), by class:
    (clips [B, 1, F, H, W], boxes [B, F, 4], labels [B])."""

    test = load_splits(spec)[1]
    picks = [
        int(i)
        for c in range(min(count, test.num_classes))
        for i in np.flatnonzero(test.labels == c)[:per_class]
    ]
    return test.images[picks], test.boxes[picks], test.labels[picks]


def plot_maps_over_time(clips: torch.Tensor, masks: torch.Tensor, maps: torch.Tensor, scores: np.ndarray,
                        out_stem: str | Path, title: str = "", labels: np.ndarray | None = None) -> list[Path]:  # fmt: skip
    """Rows = learned tokens, columns = time steps of each clip side by side; each cell is the time
    step's frames (brightest of its tubelet) with the token's map over them and the digit's box.
    `scores` [S] (each token's tracking score) label the rows. Writes OUT_STEM.png and .pdf."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle


    apply_style()
    b, t, s, h, w = maps.shape
    frames = clips.float().mean(1)  # [B, F, H, W]
    frames = frames[:, even_indices(frames.shape[1], t * (frames.shape[1] // t or 1))]
    steps = frames.reshape(b, t, -1, *frames.shape[-2:]).amax(2).numpy()  # [B, T, H, W]
    height, width = steps.shape[-2:]
    extent = (0, width, height, 0)
    gap = 0.3  # a narrow empty column between clips
    ratios = [1.0] * t + ([gap] + [1.0] * t) * (b - 1)
    fig, axes = plt.subplots(s, len(ratios), figsize=(0.62 * sum(ratios) + 0.9, 0.62 * s + 1.0),
                             squeeze=False, gridspec_kw={"width_ratios": ratios})  # fmt: skip
    for ax in axes[:, t :: t + 1].flat:  # the gaps
        ax.axis("off")
    for j in range(s):
        for i in range(b):
            for k in range(t):
                ax = axes[j, i * (t + 1) + k]
                ax.imshow(steps[i, k], cmap="gray", vmin=0, vmax=1)
                m = maps[i, k, j].numpy()
                ax.imshow(
                    m / max(m.max(), 1e-12), cmap="magma", alpha=0.6, extent=extent, vmin=0, vmax=1
                )
                ys, xs = np.nonzero(masks[i, k].numpy())
                if len(ys):
                    ax.add_patch(Rectangle((xs.min() - 0.5, ys.min() - 0.5), xs.max() - xs.min() + 1,
                                           ys.max() - ys.min() + 1, fill=False, lw=0.6, ec="#4dd0e1"))  # fmt: skip
                ax.set_xticks([])
                ax.set_yticks([])
                if j == 0:
                    ax.set_title(f"t={k}", fontsize=7, pad=2)
        axes[j, 0].set_ylabel(
            f"token {j}\n{scores[j]:.2f}", fontsize=7, rotation=0, ha="right", va="center"
        )
    top = 1 - 0.45 / fig.get_figheight()  # room for the title and the clip labels
    fig.tight_layout(pad=0.3, w_pad=0.05, h_pad=0.05, rect=(0, 0, 1, top))
    if title:
        fig.suptitle(title, fontsize=9, y=0.995, va="top")
    if labels is not None:  # each clip's digit, centred over its time steps
        for i in range(b):
            left, right = (
                axes[0, i * (t + 1)].get_position(),
                axes[0, i * (t + 1) + t - 1].get_position(),
            )
            fig.text((left.x0 + right.x1) / 2, left.y1 + 0.2 / fig.get_figheight(), f"clip {i + 1}: digit {labels[i]}",
                     ha="center", va="bottom", fontsize=8)  # fmt: skip
    return save_figure(fig, out_stem)


def clip_tracking(
    model: torch.nn.Module, clips: torch.Tensor, boxes: np.ndarray
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(maps [B, T, S, h, w], box masks [B, T, H, W], scores [B, T, S]) of a TokenLearner video model."""

    pe = model.patch_embed
    maps = token_maps(model, clips)
    masks = box_masks(boxes, pe.num_frames, pe.tubelet, tuple(clips.shape[-2:]))
    return maps, masks, tracking_scores(maps, masks)


def run_video_maps(run: Path, meta: dict, out: Path, spec: str, plot_count: int = 3,
                   per_class: int = 10) -> list[Path]:  # fmt: skip
    """Maps over time of every trained TokenLearner variant of a Moving MNIST run:
    OUT/maps-NAME.png/.pdf (the first test clip of digits 0 .. plot_count - 1) and OUT/tracking.csv
    (a row per variant and token: its tracking score over `per_class` test clips of each digit)."""
    import pandas as pd


    several = len({r["model"] for r in meta.get("variants", [])}) > 1
    data = None  # loaded once, and only if some variant has a checkpoint
    rows, paths = [], []
    for source in trained_sources(run, meta):
        if data is None:
            data = builtin_clips(spec, 10, per_class)
        clips, boxes, labels = data
        maps, masks, scores = clip_tracking(load_model(source), clips, boxes)
        per_token = scores.mean((0, 1)).numpy()  # [S]
        v = source.variant
        label = f"{v.model}-{v.name}" if several else v.name
        show = [c * per_class for c in range(plot_count)]
        kind = "softmax" if v.version == "1.1" else "sigmoid"
        title = (f"{v.model} {v.name}: TokenLearner v{v.version} {kind} maps per time step "
                 f"(row: token, its tracking score; best {per_token.max():.2f}, 1.0 = uniform)")  # fmt: skip
        paths += plot_maps_over_time(clips[show], masks[show], maps[show], per_token, out / f"maps-{label}",
                                     title, labels[show])  # fmt: skip
        for j, score in enumerate(per_token):
            rows.append(dict(model=v.model, variant=v.name, position=v.position, num_tokens=v.num_tokens,
                             version=v.version, clips=len(clips), token=j, tracking_score=float(score),
                             box_share=float(masks.mean())))  # fmt: skip
    if rows:
        csv = out / "tracking.csv"
        files.write_text(csv, pd.DataFrame(rows).to_csv(index=False, float_format="%.6g"))
        paths.append(csv)
    return paths
