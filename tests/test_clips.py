"""Clips for video models: the moving_mnist generator and `videos:PATH`, a folder of users' clips."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from tlbench.cli import app
from tlbench.data.digits import MNIST_TEST_PER_CLASS, _mnist, stratified_split
from tlbench.data.sources import (
    check_spec,
    clips,
    is_video_spec,
    iter_batches,
    load_splits,
    parse_spec,
)
from tlbench.errors import DataError

runner = CliRunner()


pytestmark = pytest.mark.usefixtures("one_thread")


def write_frames(clip: Path, n: int, *, gray: bool = False, shade: int = 0, size: int = 16) -> None:
    """A frame folder clip/frame1.png ... frame{n}.png (no zero padding: natural order matters);
    frame i is a flat image of brightness 20 * i, its green channel `shade`."""
    clip.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        colour = 20 * i if gray else (20 * i, shade, 0)
        Image.new("L" if gray else "RGB", (size, size), colour).save(clip / f"frame{i + 1}.png")


def write_root(root: Path, per_class: int = 3, frames: int = 5, **kw) -> None:
    """root/CLASS/clipJ/ for 3 classes; each class a distinct green shade."""
    for c, name in enumerate(("a", "b", "c")):
        for j in range(per_class):
            write_frames(root / name / f"clip{j}", frames, shade=80 * c, **kw)


def brightness(clip: torch.Tensor) -> list[int]:
    """Per-frame brightness index of a clip [C, F, H, W] written by write_frames."""
    return [round(float(v) * 255 / 20) for v in clip[0].mean((1, 2))]


# ---- videos:PATH ------------------------------------------------------------------------------


def test_spec_names_clips(tmp_path: Path) -> None:
    assert parse_spec(f"videos:{tmp_path}") == ("videos", tmp_path)
    assert is_video_spec(f"videos:{tmp_path}") and is_video_spec("moving_mnist")
    assert not is_video_spec(f"folder:{tmp_path}")
    with pytest.raises(DataError, match="or videos:PATH for a folder of clips"):
        parse_spec("vidoes")


def test_single_root_is_split_80_20_per_class(tmp_path: Path) -> None:
    write_root(tmp_path, per_class=5)
    train, test = load_splits(f"videos:{tmp_path}", img_size=8)
    assert (len(train), len(test)) == (12, 3)  # 4 + 1 per class
    assert train.classes == ("a", "b", "c") and train.frames == test.frames == 16
    assert np.bincount(test.labels).tolist() == [1, 1, 1]
    clip, label = train.dataset[0]
    assert clip.shape == (3, 16, 8, 8) and clip.dtype == torch.float32 and label == 0
    assert 0.0 <= clip.min() and clip.max() <= 1.0


@pytest.mark.parametrize("test_dir", ["test", "val"])
def test_train_and_test_folders(tmp_path: Path, test_dir: str) -> None:
    write_root(tmp_path / "train", per_class=3)
    write_root(tmp_path / test_dir, per_class=1)
    train, test = load_splits(f"videos:{tmp_path}", img_size=8, frames=4)
    assert (len(train), len(test)) == (9, 3) and train.frames == test.frames == 4
    assert test.labels.tolist() == [0, 1, 2]
    assert test.dataset[2][0].shape == (3, 4, 8, 8)


@pytest.mark.parametrize(
    ("frames", "expected"),
    [(3, [0, 2, 4]), (5, [0, 1, 2, 3, 4]), (8, [0, 1, 1, 2, 2, 3, 3, 4])],  # 8 > 5: repeats
)
def test_frames_are_evenly_spaced(tmp_path: Path, frames: int, expected: list[int]) -> None:
    write_frames(tmp_path / "clip", 5)
    clip = clips.read_clip(tmp_path / "clip", frames, 8, gray=False)
    assert clip.shape == (3, frames, 8, 8) and brightness(clip) == expected


def test_frame_names_sort_naturally(tmp_path: Path) -> None:
    write_frames(tmp_path / "clip", 12)  # frame1 ... frame12: as text, frame10 < frame2
    assert brightness(clips.read_clip(tmp_path / "clip", 12, 8, gray=False)) == list(range(12))
    assert sorted(["f10", "f2", "f1"], key=clips.natural_key) == ["f1", "f2", "f10"]


@pytest.mark.parametrize(("gray", "channels"), [(True, 1), (False, 3)])
def test_grayscale_stays_one_channel(tmp_path: Path, gray: bool, channels: int) -> None:
    write_root(tmp_path, gray=gray)
    train, _ = load_splits(f"videos:{tmp_path}", img_size=8, frames=2)
    clip, label = train.dataset[len(train) - 1]  # class c
    assert clip.shape == (channels, 2, 8, 8) and label == 2
    if not gray:  # colour kept: red = brightness, green = the class's shade
        assert clip[1].mean().item() == pytest.approx(160 / 255, abs=1e-6)


def test_iter_batches_yields_clips(tmp_path: Path) -> None:
    write_root(tmp_path, gray=True)
    train, _ = load_splits(f"videos:{tmp_path}", img_size=8, frames=8)
    x, y = next(iter_batches(train, np.arange(len(train)), 4, img_size=16, in_chans=3, frames=4))
    assert x.shape == (4, 3, 4, 16, 16) and y.tolist() == train.labels[:4].tolist()


def one_line(e: pytest.ExceptionInfo) -> str:
    message = str(e.value)
    assert "\n" not in message and "Traceback" not in message
    return message


def test_missing_folder_and_one_class(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(DataError) as info:
        check_spec(f"videos:{missing}")
    assert one_line(info) == f"video folder not found: {missing} (expected {clips.layout(missing)})"
    one = tmp_path / "one"
    write_frames(one / "a" / "clip0", 2)
    with pytest.raises(DataError) as info:
        load_splits(f"videos:{one}")
    expected = f"has 1 class folder ('a'), need 2 or more; expected {clips.layout(one)}"
    assert one_line(info) == f"{one} {expected}"
    write_root(tmp_path / "deep" / "clips")  # deep/clips/CLASS/CLIP: one level too deep
    with pytest.raises(DataError, match=rf"did you mean videos:{tmp_path / 'deep' / 'clips'}\?"):
        check_spec(f"videos:{tmp_path / 'deep'}")


def test_empty_clip_folder_is_one_line(tmp_path: Path) -> None:
    write_root(tmp_path / "train")
    write_root(tmp_path / "test", per_class=1)
    (tmp_path / "test" / "b" / "clip9").mkdir()
    _, test = load_splits(f"videos:{tmp_path}", img_size=8)
    assert len(test) == 4  # the empty clip is found (a folder), and fails when it is read
    with pytest.raises(DataError) as info:
        list(iter_batches(test, np.arange(len(test)), 4, img_size=8, in_chans=3))
    empty = tmp_path / "test" / "b" / "clip9"
    expected = f"(expected {empty}/frame_0001.png)"
    assert one_line(info) == f"no frame images in clip folder {empty} {expected}"


@pytest.mark.parametrize("num_workers", [0, 1])
def test_corrupt_frame_is_one_line(tmp_path: Path, num_workers: int) -> None:
    write_root(tmp_path / "train")
    write_root(tmp_path / "test", per_class=1)
    bad = tmp_path / "train" / "b" / "clip1" / "frame5.png"  # the last frame: always picked
    bad.write_bytes(b"not a png")
    train, _ = load_splits(f"videos:{tmp_path}", img_size=8, frames=2)
    with pytest.raises(DataError) as info:
        list(iter_batches(train, np.arange(len(train)), 3, img_size=8, in_chans=3,
                          num_workers=num_workers))  # fmt: skip
    assert one_line(info).startswith(f"cannot read image {bad}: not an image Pillow can decode")


def test_video_files_without_pyav_are_refused_early(tmp_path: Path, monkeypatch) -> None:
    write_root(tmp_path)
    (tmp_path / "a" / "clip9.mp4").write_bytes(b"")  # not opened: a listing shows it
    monkeypatch.setitem(sys.modules, "av", None)  # `import av` raises ImportError
    with pytest.raises(DataError) as info:
        check_spec(f"videos:{tmp_path}")
    assert one_line(info) == (f"cannot read video {tmp_path / 'a' / 'clip9.mp4'}: PyAV is not installed; "
                              "pip install av, or store each clip as a folder of frame images")  # fmt: skip


def test_sweep_on_a_missing_video_folder_is_one_line(tmp_path: Path) -> None:
    spec = f"videos:{tmp_path / 'nope'}"
    args = ["sweep", "--model", "vivit_cpu", "--positions", "0.5", "--tokens", "8",
            "--set", f"quality.train_data={spec}", "--set", f'quality.probe_data=["{spec}"]',
            "--out", str(tmp_path / "out")]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert result.output.strip() == (f"error: video folder not found: {tmp_path / 'nope'} "
                                     f"(expected {clips.layout(tmp_path / 'nope')})")  # fmt: skip
    assert not (tmp_path / "out").exists()


def test_probe_end_to_end_on_frame_folders(tmp_path: Path) -> None:
    from tlbench.quality.probe import run_probe

    write_root(tmp_path / "train", per_class=4, frames=3)
    write_root(tmp_path / "test", per_class=2, frames=3)
    spec = f"videos:{tmp_path}"
    result = run_probe("vivit_cpu", 0.5, 8, steps=2, batch_size=4, train_data=spec,
                       probe_data=(spec,), shots=(1,), seeds=1, budget_s=None)  # fmt: skip
    assert result.records and {r.dataset for r in result.records} == {spec}
    assert all(0.0 <= r.accuracy <= 1.0 for r in result.records)


def write_video(path: Path, n: int, *, codec: str, pix_fmt: str, size: int = 16) -> None:
    """A video of n flat frames of brightness 20 * i (written with PyAV)."""
    av = pytest.importorskip("av")
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=8)
        stream.width = stream.height = size
        stream.pix_fmt = pix_fmt
        for i in range(n):
            rgb = np.full((size, size, 3), 20 * i, np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(stream.encode())


@pytest.mark.parametrize(
    ("name", "codec", "pix_fmt", "channels"),
    [("v.mp4", "mpeg4", "yuv420p", 3), ("v.mkv", "ffv1", "gray", 1)],  # mkv: no frame count
)
def test_video_files(tmp_path: Path, name: str, codec: str, pix_fmt: str, channels: int) -> None:
    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        for j in range(3):
            write_video(tmp_path / c / f"{j}{name}", 5, codec=codec, pix_fmt=pix_fmt)
    train, _ = load_splits(f"videos:{tmp_path}", img_size=8, frames=8)
    clip, _ = train.dataset[0]
    assert clip.shape == (channels, 8, 8, 8)
    assert brightness(clip) == [0, 1, 1, 2, 2, 3, 3, 4]  # 5 frames read as 8, in order
    assert clips.read_clip(tmp_path / "a" / f"0{name}", 3, 8, gray=True).shape == (1, 3, 8, 8)


def test_corrupt_video_is_one_line(tmp_path: Path) -> None:
    pytest.importorskip("av")
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    with pytest.raises(DataError) as info:
        clips.read_clip(bad, 4, 8, gray=False)
    assert one_line(info).startswith(f"cannot read video {bad}: ")


# ---- moving_mnist -----------------------------------------------------------------------------

SMALL = clips.MovingMNIST(frames=3, size=16)


def test_moving_mnist_is_deterministic_per_seed() -> None:
    make = clips.generate.__wrapped__  # not the cache: generated twice
    x, labels, boxes = make(SMALL, "test")
    again, labels2, boxes2 = make(SMALL, "test")
    assert torch.equal(x, again) and np.array_equal(labels, labels2)
    assert np.array_equal(boxes, boxes2)
    other = make(clips.MovingMNIST(frames=3, size=16, seed=1), "test")
    assert np.array_equal(other[1], labels) and not np.array_equal(other[2], boxes)


def test_moving_mnist_keeps_the_mnist_split() -> None:
    labels = _mnist()[1]
    train_idx, test_idx = stratified_split(labels, MNIST_TEST_PER_CLASS)
    assert not set(train_idx) & set(test_idx)
    train, test = load_splits("moving_mnist:frames=2,size=16")
    assert (len(train), len(test)) == (4000, 1000)
    assert np.array_equal(train.labels, labels[train_idx])
    assert np.array_equal(test.labels, labels[test_idx])
    assert train.images.shape == (4000, 1, 2, 16, 16) and train.frames == 2


def test_moving_mnist_boxes_hold_the_ink() -> None:
    x, _, boxes = clips.generate(clips.MovingMNIST(frames=4, size=24, speed=5.0), "test")
    ink = x[:, 0] > clips.INK  # [N, F, H, W]
    y = torch.arange(24).view(1, 1, 24, 1)
    xs = torch.arange(24).view(1, 1, 1, 24)
    b = torch.as_tensor(boxes)[..., None, None]  # [N, F, 4, 1, 1]
    inside = (y >= b[:, :, 0]) & (y < b[:, :, 2]) & (xs >= b[:, :, 1]) & (xs < b[:, :, 3])
    assert not (ink & ~inside).any() and ink.flatten(2).any(-1).all()
    assert (boxes >= 0).all() and (boxes <= 24).all()
    assert (boxes[..., 2] > boxes[..., 0]).all() and (boxes[..., 3] > boxes[..., 1]).all()


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("moving_mnist:frames=0", "moving_mnist option frames must be an integer in [1, 64], got 0"),
        ("moving_mnist:color=3", "bad moving_mnist option 'color=3'"),
        ("moving_mnist:speed=x", "moving_mnist option speed must be a number, got 'x'"),
    ],
)
def test_moving_mnist_bad_options_are_one_line(spec: str, message: str) -> None:
    with pytest.raises(DataError) as info:
        check_spec(spec)
    assert one_line(info).startswith(message)


def test_moving_mnist_options_change_the_shape() -> None:
    assert clips.parse_options("moving_mnist:frames=4,size=24") == clips.MovingMNIST(4, 24)
    train, _ = load_splits("moving_mnist:frames=4,size=24")
    assert train.images.shape[1:] == (1, 4, 24, 24) and train.boxes.shape[1:] == (4, 4)
