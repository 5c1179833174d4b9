"""Dataset specs, built-in offline sets, ImageFolder round trip, resizing and clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tlbench.data import (
    fit_images,
    iter_batches,
    load_splits,
    normalize,
    parse_spec,
    stratified_split,
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
