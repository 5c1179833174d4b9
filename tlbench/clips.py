"""Labelled video clips: Moving MNIST, generated from the built-in digits, for video models.

No video dataset ships inside a wheel, so `moving_mnist` is made here, deterministically from a
seed, out of the 5,000 MNIST digits of the built-in `mnist` set and with its 4,000 / 1,000 split:
a training clip and a test clip never share a digit image. Each clip holds one digit, shrunk to
half the frame, that moves in a straight line at `speed` px per frame and bounces off the edges
(Srivastava et al., 2015, with one digit); its label is the digit's class. The digit's box in
every frame comes with the clip, so a token's map can be scored for how well it tracks the digit.

Spec: `moving_mnist` or `moving_mnist:frames=8,size=32,speed=2,seed=0` (any subset of the options).
Clips are float [N, 1, F, H, W] in [0, 1] (the layout of a video model's input), boxes [N, F, 4]
as (y0, x0, y1, x1) in pixels, end exclusive.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, fields

import numpy as np
import torch
import torch.nn.functional as F

from tlbench.errors import DataError

NAME = "moving_mnist"
INK = 0.1  # a pixel brighter than this is the digit's (for its box)


@dataclass(frozen=True)
class MovingMNIST:
    """The generator's options; the defaults fit vivit_cpu (8 frames of 32 px)."""

    frames: int = 8
    size: int = 32  # frame side in px; the digit is size // 2
    speed: float = 2.0  # px per frame
    seed: int = 0


def parse_options(spec: str) -> MovingMNIST:
    """'moving_mnist[:frames=8,size=32,speed=2,seed=0]' -> MovingMNIST; DataError on anything else."""
    _, sep, rest = spec.partition(":")
    kinds = {f.name: f.type for f in fields(MovingMNIST)}
    values: dict[str, float | int] = {}
    for item in filter(None, (s.strip() for s in rest.split(","))) if sep else ():
        key, eq, text = item.partition("=")
        if not eq or key.strip() not in kinds:
            raise DataError(f"bad {NAME} option {item!r}; use {', '.join(f'{k}=N' for k in kinds)}")
        key = key.strip()
        try:
            values[key] = float(text) if kinds[key] == "float" else int(text)
        except ValueError:
            raise DataError(f"{NAME} option {key} must be a number, got {text!r}") from None
    opts = MovingMNIST(**values)  # type: ignore[arg-type]
    if opts.frames < 1 or opts.size < 8 or opts.speed < 0 or opts.seed < 0:
        raise DataError(
            f"{NAME} needs frames >= 1, size >= 8, speed >= 0 and seed >= 0, got {rest}"
        )
    return opts


def trajectories(
    n: int, frames: int, room: int, speed: float, rng: np.random.Generator
) -> np.ndarray:
    """[n, frames, 2] integer (y, x) top-left corners in [0, room]: a straight line from a random
    start in a random direction, reflected at the edges (a bounce)."""
    start = rng.uniform(0, room, size=(n, 1, 2))
    angle = rng.uniform(0, 2 * np.pi, size=(n, 1))
    velocity = speed * np.stack([np.sin(angle), np.cos(angle)], axis=-1)  # [n, 1, 2]
    path = start + velocity * np.arange(frames)[None, :, None]  # [n, F, 2], unbounded
    if room == 0:
        return np.zeros_like(path, dtype=np.int64)
    folded = np.mod(path, 2 * room)  # the reflection is periodic with period 2 * room
    return np.rint(room - np.abs(folded - room)).astype(np.int64)


def render(glyphs: torch.Tensor, corners: np.ndarray, size: int) -> tuple[torch.Tensor, np.ndarray]:
    """Paste glyph i [d, d] at corners[i, f] in frame f -> (clips [N, 1, F, size, size], boxes [N, F, 4])."""
    n, frames = corners.shape[:2]
    d = glyphs.shape[-1]
    clips = torch.zeros(n, 1, frames, size, size)
    ink = glyphs > INK  # [N, d, d]
    rows, cols = ink.any(2), ink.any(1)  # [N, d] each
    first = lambda m: m.float().argmax(1)  # noqa: E731 - first True along dim 1
    y0, x0 = first(rows), first(cols)
    y1, x1 = d - first(rows.flip(1)), d - first(cols.flip(1))
    tight = torch.stack([y0, x0, y1, x1], 1).numpy()  # [N, 4] inside the glyph's square
    for i in range(n):
        for f in range(frames):
            y, x = corners[i, f]
            clips[i, 0, f, y : y + d, x : x + d] = glyphs[i]
    boxes = tight[:, None, :] + np.concatenate([corners, corners], axis=-1)  # [N, F, 4]
    return clips, boxes.astype(np.int64)


@functools.cache  # read-only use: splits index (copy) these tensors
def generate(opts: MovingMNIST, split: str) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """(clips [N, 1, F, H, W], labels [N], boxes [N, F, 4]) of one split: one clip per digit image
    of the built-in mnist split, in its order; the seed and the split name fix every trajectory."""
    from tlbench.data import MNIST_TEST_PER_CLASS, _mnist, stratified_split

    images, labels = _mnist()  # [5000, 1, 32, 32]: 28 px digits padded by 2
    train, test = stratified_split(labels, MNIST_TEST_PER_CLASS)
    idx = train if split == "train" else test
    d = opts.size // 2
    glyphs = F.interpolate(images[idx, :, 2:30, 2:30], size=(d, d), mode="bilinear",
                           align_corners=False, antialias=True).clamp(0, 1)[:, 0]  # fmt: skip
    rng = np.random.default_rng([opts.seed, 0 if split == "train" else 1])
    corners = trajectories(len(idx), opts.frames, opts.size - d, opts.speed, rng)
    clips, boxes = render(glyphs, corners, opts.size)
    return clips, labels[idx], boxes
