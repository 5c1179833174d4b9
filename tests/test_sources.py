"""The data-source contract, over every kind in data/sources.py SOURCES: a spec of the kind parses to
it, says whether it holds clips, and either loads deterministic (train, test) splits of the right
shape or, where its files are absent, fails before any work in one line. A new kind is a row in
SOURCES; this test then covers it (a kind it cannot make data for must say how below)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tlbench.data.sources import (
    SOURCES,
    TORCHVISION,
    check_spec,
    is_video_spec,
    load_splits,
    parse_spec,
)
from tlbench.errors import DataError


def _folder(root: Path, clips: bool) -> Path:
    """Two classes of four items: 8 px images, or clips as folders of 3 frames."""
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        for i in range(4):
            pixels = (rng.random((8, 8)) * 255).astype(np.uint8)
            if clips:
                for f in range(3):
                    (root / c / f"clip{i}").mkdir(parents=True, exist_ok=True)
                    Image.fromarray(pixels).save(root / c / f"clip{i}" / f"frame_{f}.png")
            else:
                (root / c).mkdir(parents=True, exist_ok=True)
                Image.fromarray(pixels).save(root / c / f"img{i}.png")
    return root


def spec_for(kind: str, tmp: Path) -> str | None:
    """A valid spec of `kind` whose data this machine has, or None (its files are not here)."""
    form = SOURCES[kind].form
    if form == "name":
        return kind
    if form == "name[:OPTIONS]":
        return f"{kind}:frames=4,size=16"
    if form == "name:PATH":
        return f"{kind}:{_folder(tmp / kind, clips=SOURCES[kind].video)}"
    return None  # name[:ROOT]: a torchvision set, downloaded only on request


@pytest.mark.parametrize("kind", sorted(SOURCES))
def test_every_kind_parses_and_says_images_or_clips(kind: str, tmp_path: Path) -> None:
    spec = spec_for(kind, tmp_path) or f"{kind}:{tmp_path / 'absent'}"
    assert parse_spec(spec)[0] == kind
    assert is_video_spec(spec) == SOURCES[kind].video


@pytest.mark.parametrize("kind", sorted(SOURCES))
def test_every_kind_loads_deterministic_splits_or_fails_in_one_line(kind: str, tmp_path: Path) -> None:
    spec = spec_for(kind, tmp_path)
    if spec is None:  # not on disk and not downloaded: one line before any work, naming the fix
        with pytest.raises(DataError, match="--download") as e:
            check_spec(f"{kind}:{tmp_path / 'absent'}")
        assert "\n" not in str(e.value) and kind in TORCHVISION
        return
    (tr, te), (tr2, _) = load_splits(spec, img_size=16, frames=4), load_splits(spec, img_size=16, frames=4)
    assert len(tr) and len(te) and tr.num_classes >= 2
    assert np.array_equal(tr.labels, tr2.labels)
    x = tr.images[:2] if tr.images is not None else torch.stack([tr.dataset[i][0] for i in range(2)])
    assert x.ndim == (5 if SOURCES[kind].video else 4)  # [N, C, (F,) H, W]
    assert (tr.frames is not None) == SOURCES[kind].video


@pytest.mark.parametrize("kind", [k for k, s in SOURCES.items() if s.form == "name:PATH"])
def test_a_missing_folder_is_one_line(kind: str, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found") as e:
        check_spec(f"{kind}:{tmp_path / 'nowhere'}")
    assert "\n" not in str(e.value)
