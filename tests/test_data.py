"""Dataset specs, built-in offline sets, ImageFolder round trip, resizing and clear errors."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tlbench.data.digits import stratified_split
from tlbench.data.sources import (
    check_spec,
    fit_images,
    iter_batches,
    load_splits,
    normalize,
    parse_spec,
)
from tlbench.errors import DataError


def write_folder(root: Path, per_class: dict[str, int], size: int = 12) -> None:
    """An ImageFolder: root/CLASS/i.png, each class a distinct flat colour."""
    for c, (name, n) in enumerate(per_class.items()):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            colour = (60 * c + i, 255 - 60 * c, 30 * c)
            Image.new("RGB", (size + i, size), colour).save(root / name / f"{i}.png")


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("mnist", ("mnist", None)),
        ("digits", ("digits", None)),
        ("folder:some/where", ("folder", Path("some/where"))),
        ("./pets", ("folder", Path("pets"))),
        ("cifar10", ("cifar10", Path("data"))),
        ("cifar100:/data/c100", ("cifar100", Path("/data/c100"))),
    ],
)
def test_parse_spec(spec: str, expected: tuple[str, Path | None]) -> None:
    assert parse_spec(spec) == expected


def test_unknown_dataset_suggests() -> None:
    with pytest.raises(DataError, match="unknown dataset 'cifar11'; did you mean cifar10"):
        parse_spec("cifar11")


@pytest.mark.parametrize(
    ("spec", "n_train", "n_test"), [("mnist", 4000, 1000), ("digits", 899, 898)]
)
def test_builtin_splits_are_fixed_and_stratified(spec: str, n_train: int, n_test: int) -> None:
    train, test = load_splits(spec)
    assert (len(train), len(test)) == (n_train, n_test)
    assert train.images.shape[1:] == (1, 32, 32)
    assert 0.0 <= float(train.images.min()) and float(train.images.max()) <= 1.0
    assert train.num_classes == 10 and np.bincount(test.labels).min() >= 87
    again, _ = load_splits(spec)
    assert torch.equal(train.images, again.images)


def test_digits_are_framed_like_mnist() -> None:
    """pad20: the 8x8 digit becomes a 20 px box with a 6 px black border in the 32 px frame."""
    train, _ = load_splits("digits")
    assert float(train.images[:, :, :6].abs().max()) == 0.0
    assert float(train.images[:, :, 6:26, 6:26].max()) > 0.5


def test_stratified_split_is_disjoint() -> None:
    labels = np.repeat(np.arange(3), [10, 7, 4])
    tr, te = stratified_split(labels, test_fraction=0.25)
    assert not set(tr) & set(te) and len(tr) + len(te) == len(labels)
    assert np.bincount(labels[te]).tolist() == [2, 2, 1]


@pytest.mark.parametrize(("size", "chans"), [(32, 3), (64, 1), (16, 3)])
def test_fit_images(size: int, chans: int) -> None:
    x = torch.rand(2, 1, 32, 32)
    assert fit_images(x, size, chans).shape == (2, chans, size, size)
    assert fit_images(torch.rand(2, 3, 32, 32), size, chans).shape == (2, chans, size, size)


def test_normalize_maps_unit_range_to_symmetric() -> None:
    assert normalize(torch.tensor([0.0, 0.5, 1.0])).tolist() == [-1.0, 0.0, 1.0]


def test_imagefolder_round_trip_single_root(tmp_path: Path) -> None:
    write_folder(tmp_path, {"cat": 5, "dog": 5})
    train, test = load_splits(str(tmp_path), img_size=16)
    assert train.classes == ("cat", "dog")
    assert (len(train), len(test)) == (8, 2)
    assert np.bincount(test.labels).tolist() == [1, 1]
    x, y = next(iter_batches(train, np.arange(len(train)), 8, img_size=16, in_chans=3))
    assert x.shape == (8, 3, 16, 16) and y.tolist() == train.labels.tolist()
    red = x[0, 0, 8, 8].item()  # class 'cat' is colour (i, 255, 0): red channel small
    assert red < 0.1 and x[0, 1, 8, 8].item() == pytest.approx(1.0)


def test_imagefolder_with_train_and_test_folders(tmp_path: Path) -> None:
    write_folder(tmp_path / "train", {"a": 3, "b": 4})
    write_folder(tmp_path / "val", {"a": 2, "b": 2})
    train, test = load_splits(f"folder:{tmp_path}", img_size=8)
    assert (len(train), len(test)) == (7, 4)
    assert train.labels.tolist() == [0, 0, 0, 1, 1, 1, 1]


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="data folder not found"):
        load_splits(f"folder:{tmp_path / 'nope'}")


def test_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no images found under"):
        load_splits(str(tmp_path))


def test_torchvision_without_data_says_download(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="cifar10 not found under .*--download"):
        load_splits(f"cifar10:{tmp_path}")


def test_16bit_grayscale_keeps_its_gradient(tmp_path: Path) -> None:
    """convert("RGB") clips 0..65535 to 255 (all white); the loader scales by 65535 instead."""
    ramp = np.linspace(0, 65535, 16).round().astype(np.uint16)  # [16]
    for name in ("dark", "ramp"):
        (tmp_path / name).mkdir()
        for i in range(3):
            arr = np.tile(ramp // (4 if name == "dark" else 1), (16, 1))  # [16, 16], rows equal
            img = Image.fromarray(arr)
            assert img.mode == "I;16"
            img.save(tmp_path / name / f"{i}.png")
    assert Image.open(tmp_path / "ramp" / "0.png").mode.startswith("I;16")  # PNG keeps 16 bits
    train, _ = load_splits(str(tmp_path), img_size=16)
    x, y = next(iter_batches(train, np.arange(len(train)), 8, img_size=16, in_chans=1))
    expected = torch.as_tensor(np.round(ramp / 65535 * 255) / 255, dtype=torch.float32)
    ramp_row = x[y.tolist().index(1), 0, 8]  # [16]
    assert torch.allclose(ramp_row, expected, atol=1 / 255)
    assert float(x[y.tolist().index(0)].max()) == pytest.approx(0.25, abs=1 / 255)


@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [("broken.png", b"", "empty file"), ("notes.jpg", b"not a jpeg\n", "not an image")],
)
def test_unreadable_image_is_one_line_error(
    tmp_path: Path, num_workers: int, name: str, content: bytes, reason: str
) -> None:
    write_folder(tmp_path / "train", {"cat": 2, "dog": 2})
    write_folder(tmp_path / "test", {"cat": 1, "dog": 1})
    (tmp_path / "train" / "dog" / name).write_bytes(content)
    train, _ = load_splits(str(tmp_path), img_size=8)
    workers_before = set(multiprocessing.active_children())
    batches = iter_batches(
        train, np.arange(len(train)), 2, img_size=8, in_chans=3, num_workers=num_workers
    )
    with pytest.raises(DataError) as info:
        list(batches)
    message = str(info.value)
    assert message.startswith(f"cannot read image {tmp_path / 'train' / 'dog' / name}: {reason}")
    assert "\n" not in message and "Traceback" not in message
    assert set(multiprocessing.active_children()) <= workers_before  # workers shut down


def test_fewer_than_two_classes(tmp_path: Path) -> None:
    write_folder(tmp_path / "flat", {"cat": 3})
    with pytest.raises(DataError, match=r"has 1 class folder \('cat'\), need 2 or more; expected"):
        load_splits(str(tmp_path / "flat"))
    write_folder(tmp_path / "deep" / "images", {"cat": 2, "dog": 2})
    with pytest.raises(DataError, match=rf"did you mean folder:{tmp_path / 'deep' / 'images'}\?"):
        load_splits(str(tmp_path / "deep"))
    write_folder(tmp_path / "split" / "train", {"cat": 2, "dog": 2})
    write_folder(tmp_path / "split" / "val", {"cat": 2})
    with pytest.raises(DataError, match=r"split/val has 1 class folder"):
        load_splits(str(tmp_path / "split"))


def test_torchvision_with_one_label_is_refused(tmp_path: Path) -> None:
    """A FashionMNIST copy (idx files, as torchvision reads them) whose labels are all 0."""
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    n = 4
    for prefix in ("train", "t10k"):
        images = bytes([0, 0, 8, 3]) + np.array([n, 28, 28], ">i4").tobytes() + bytes(n * 784)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(images)
        labels = bytes([0, 0, 8, 1]) + np.array([n], ">i4").tobytes() + bytes(n)
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(labels)
    with pytest.raises(DataError, match="the train split has 1 distinct label"):
        load_splits(f"fashion_mnist:{tmp_path}")


def test_check_spec_is_cheap_and_fails_early(tmp_path: Path) -> None:
    write_folder(tmp_path / "pets", {"cat": 1, "dog": 1})
    (tmp_path / "pets" / "dog" / "0.png").write_bytes(b"")  # not opened: no image is read
    check_spec(f"folder:{tmp_path / 'pets'}")
    check_spec("digits")
    check_spec(f"cifar10:{tmp_path / 'nowhere'}", download=True)
    (tmp_path / "file.txt").write_text("x")
    bad = {
        "cifar11": "unknown dataset",
        f"folder:{tmp_path / 'nope'}": "data folder not found",
        f"folder:{tmp_path / 'file.txt'}": "not a directory",
        f"folder:{tmp_path / 'pets' / 'cat'}": "no images found under .*0 class folders",
        f"cifar10:{tmp_path / 'nowhere'}": "cifar10 not found under .*--download",
    }
    for spec, message in bad.items():
        with pytest.raises(DataError, match=message):
            check_spec(spec)
