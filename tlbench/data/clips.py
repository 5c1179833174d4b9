"""Labelled video clips for video models: Moving MNIST, generated from the built-in digits, and
`videos:PATH`, a folder of users' clips.

No video dataset ships inside a wheel, so `moving_mnist` is made here, deterministically from a
seed, out of the 5,000 MNIST digits of the built-in `mnist` set and with its 4,000 / 1,000 split:
a training clip and a test clip never share a digit image. Each clip holds one digit, shrunk to
half the frame, that moves in a straight line at `speed` px per frame and bounces off the edges
(Srivastava et al., 2015, with one digit); its label is the digit's class. The digit's box in
every frame comes with the clip, so a token's map can be scored for how well it tracks the digit.

Spec: `moving_mnist` or `moving_mnist:frames=8,size=32,speed=2,seed=0` (any subset of the options).
Clips are float [N, 1, F, H, W] in [0, 1] (the layout of a video model's input), boxes [N, F, 4]
as (y0, x0, y1, x1) in pixels, end exclusive.

`videos:PATH` is laid out as the image folder (PATH/CLASS/CLIP, or under train/ and test|val/); a
CLIP is a video file (decoded with PyAV, an optional dependency: `pip install av`) or a folder of
frame images in natural order (frame2 before frame10). Clips are read lazily, each as evenly
spaced frames (repeated when a clip is shorter), resized and centre-cropped like images.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset

from tlbench.bounds import CLIP_PIXELS, MOVING_MNIST
from tlbench.data.digits import MNIST_TEST_PER_CLASS, _mnist, stratified_split
from tlbench.data.images import _load_image, _pil_transform
from tlbench.errors import ConfigError, DataError

NAME = "moving_mnist"
INK = 0.1  # a pixel brighter than this is the digit's (for its box)


@dataclass(frozen=True)
class MovingMNIST:
    """The generator's options; the defaults fit vivit_cpu (8 frames of 32 px)."""

    frames: int = 8
    size: int = 32  # frame side in px
    digit: float = 0.5  # the digit's side as a fraction of the frame's
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
        except (ValueError, OverflowError):
            raise DataError(f"{NAME} option {key} must be a number, got {text!r}") from None

    try:  # each option's range, declared once in tlbench.bounds
        for key, value in values.items():
            MOVING_MNIST[key].check(value, f"{NAME} option {key}")
    except ConfigError as e:
        raise DataError(str(e)) from None
    opts = MovingMNIST(**values)  # type: ignore[arg-type]
    if opts.frames * opts.size**2 > CLIP_PIXELS:
        raise DataError(f"{NAME}: frames x size^2 is at most {CLIP_PIXELS:,} pixels per clip (e.g. 16 frames of 64 px): "
                        f"every clip is generated in memory; got {opts.frames} x {opts.size}^2")  # fmt: skip
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

    images, labels = _mnist()  # [5000, 1, 32, 32]: 28 px digits padded by 2
    train, test = stratified_split(labels, MNIST_TEST_PER_CLASS)
    idx = train if split == "train" else test
    d = round(opts.size * opts.digit)
    glyphs = F.interpolate(images[idx, :, 2:30, 2:30], size=(d, d), mode="bilinear",
                           align_corners=False, antialias=True).clamp(0, 1)[:, 0]  # fmt: skip
    rng = np.random.default_rng([opts.seed, 0 if split == "train" else 1])
    corners = trajectories(len(idx), opts.frames, opts.size - d, opts.speed, rng)
    clips, boxes = render(glyphs, corners, opts.size)
    return clips, labels[idx], boxes


# ---- videos:PATH, users' clips ---------------------------------------------------------------

VIDEO_FILES = (".mp4", ".avi", ".mov", ".mkv", ".webm")
FRAME_FILES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
DEFAULT_FRAMES = 16  # frames read per clip when the caller does not pass the model's count
GRAY_MODES = ("1", "L", "LA", "I", "F", "I;16", "I;16B", "I;16L", "I;16N")  # PIL's grayscale


def layout(path: Path | str) -> str:
    """The expected layout, for error messages."""
    return f"{path}/CLASS/CLIP.mp4 or {path}/CLASS/CLIP/frame_0001.png"


def is_video_file(name: str) -> bool:
    return name.lower().endswith(VIDEO_FILES)


def natural_key(name: str) -> list[Any]:
    """Sort key in which digit runs compare as numbers: frame2 before frame10."""
    return [int(t) if i % 2 else t for i, t in enumerate(re.split(r"(\d+)", name))]


def even_indices(n: int, k: int) -> list[int]:
    """k evenly spaced indices into n items, first and last included; repeats when k > n.
    Rounded half up, so for k <= n they are distinct."""
    return np.floor(np.linspace(0, n - 1, k) + 0.5).astype(np.int64).tolist()


def find_clips(class_dir: Path) -> list[Path]:
    """A class folder's clips (video files and frame folders), in natural order; one listing."""
    found = [e.name for e in os.scandir(class_dir)
             if not e.name.startswith(".") and (e.is_dir() or is_video_file(e.name))]  # fmt: skip
    return [class_dir / name for name in sorted(found, key=natural_key)]


def holds_classes(path: Path) -> bool:
    """Whether path's first subfolder holds clips (path is a root one level up), not frames."""
    sub = next((e.path for e in os.scandir(path) if e.is_dir()), None)
    return sub is not None and any(e.is_dir() or is_video_file(e.name) for e in os.scandir(sub))


def check_decoder(split_dir: Path) -> None:
    """DataError now, not mid-run, when the first class folder holds video files and PyAV is
    missing (two directory listings, no file is opened)."""
    first = min((e.path for e in os.scandir(split_dir) if e.is_dir()), default=None)
    video = first and next((e.path for e in os.scandir(first) if is_video_file(e.name)), None)
    if video:
        import_av(video)


def import_av(path: Path | str) -> Any:
    try:
        import av
    except ImportError:
        raise DataError(f"cannot read video {path}: PyAV is not installed; pip install av, "
                        "or store each clip as a folder of frame images") from None  # fmt: skip
    return av


def _video_error(path: Path, e: Exception) -> DataError:
    reason = " ".join(str(e).split()) or type(e).__name__
    return DataError(f"cannot read video {path}: {reason}")


def frame_files(clip: Path) -> list[Path]:
    """A frame folder's images in natural order; DataError when there are none."""
    try:
        names = [e.name for e in os.scandir(clip)
                 if e.name.lower().endswith(FRAME_FILES) and not e.name.startswith(".")]  # fmt: skip
    except OSError as e:
        raise DataError(f"cannot list clip folder {clip}: {e.strerror or e}") from None
    if not names:
        raise DataError(f"no frame images in clip folder {clip} (expected {clip}/frame_0001.png)")
    return [clip / n for n in sorted(names, key=natural_key)]


def decode(path: Path, frames: int) -> list[Image.Image]:
    """The frames of a video file that `frames` evenly spaced picks use, as RGB images.

    The frame count comes from the header, or else by counting packets (no decoding), so only
    the picked frames are kept in memory, whatever the video's length."""
    av = import_av(path)
    try:
        with av.open(str(path)) as container:
            total = container.streams.video[0].frames
            total = total or sum(1 for p in container.demux(video=0) if p.size)
        if not total:
            raise ValueError("no video frames")
        want = set(even_indices(total, frames))
        kept = []
        with av.open(str(path)) as container:
            for i, frame in enumerate(container.decode(video=0)):
                if i in want:
                    kept.append(frame.to_image())
                if i >= max(want):
                    break
    except Exception as e:  # FFmpegError (corrupt, truncated), IndexError (no video stream), ...
        raise _video_error(path, e) from None
    if not kept:
        raise DataError(f"cannot read video {path}: no frames decoded")
    return kept  # fewer than wanted if the header overstated the count: picked again from these


def is_gray(clip: Path) -> bool:
    """Whether a clip is grayscale: its first frame's PIL mode, or its video's pixel format."""
    if clip.is_dir():
        first = frame_files(clip)[0]
        try:
            with Image.open(first) as img:
                return img.mode in GRAY_MODES
        except Exception:
            _load_image(str(first))  # fails too, with a one-line DataError naming the file
            raise
    av = import_av(clip)
    try:
        with av.open(str(clip)) as container:
            return str(container.streams.video[0].codec_context.pix_fmt).startswith("gray")
    except Exception as e:
        raise _video_error(clip, e) from None


def read_clip(clip: Path, frames: int, size: int, gray: bool) -> torch.Tensor:
    """A video file or frame folder -> [C, frames, size, size] float in [0, 1], C = 1 if gray else
    3: evenly spaced frames (repeated when the clip is shorter), each resized and centre-cropped
    as the image folder does."""
    if clip.is_dir():
        files = frame_files(clip)
        picks = even_indices(len(files), frames)
        images = {i: _load_image(str(files[i])) for i in set(picks)}  # RGB, or a one-line DataError
    else:
        decoded = decode(clip, frames)
        picks = even_indices(len(decoded), frames)
        images = dict(enumerate(decoded))
    tf = _pil_transform(size, rgb=False)
    square = {i: tf(img.convert("L" if gray else "RGB")) for i, img in images.items()}  # [C, S, S]
    return torch.stack([square[i] for i in picks], 1)  # [C, F, S, S]


class VideoFolder(Dataset):
    """PATH/CLASS/CLIP -> (clip [C, frames, size, size] float in [0, 1], label), read lazily.

    C is 1 when the first clip is grayscale, else 3, for every clip, so that clips batch together
    (fit_images adapts C to the model later)."""

    def __init__(self, root: Path, frames: int, size: int) -> None:
        self.classes = sorted(e.name for e in os.scandir(root) if e.is_dir())
        self.samples: list[tuple[Path, int]] = []
        for label, name in enumerate(self.classes):
            found = find_clips(root / name)
            if not found:
                raise DataError(f"no clips in {root / name} (expected {layout(root)})")
            self.samples += [(clip, label) for clip in found]
        self.targets = [label for _, label in self.samples]
        self.frames, self.size = frames, size
        self.gray = is_gray(self.samples[0][0])

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        clip, label = self.samples[i]
        return read_clip(clip, self.frames, self.size, self.gray), label
