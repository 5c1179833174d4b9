"""Few-shot linear probe on frozen features: big_vision's closed-form ridge (`fewshot_lsr.py`).

Features are the frozen model's pre-logits, extracted once per variant and reused for every shot
count and seed. For each seed, one permutation per class is drawn (`default_rng(seed)`); k-shot takes
the first k, so the support sets are nested. Ridge: standardise with the support set's mean and
population std (+1e-5), append a bias feature of 100, targets 2*onehot-1, W = (X'X + lam*I)^-1 X'Y
on the smaller Gram side (float64), predict argmax. Accuracy is measured on a held-out test split.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from tlbench.backbones.vit import pre_logits
from tlbench.data.sources import ImageSet, iter_batches, normalize
from tlbench.errors import DataError

SHOTS = (1, 5, 10, 25)  # big_vision common_fewshot.py
L2_REG = 2.0**10  # big_vision's fixed lambda
BIAS = 100.0  # big_vision BIAS_CONSTANT: large, so the bias is almost unregularised
CV_GRID = tuple(2.0**i for i in range(-10, 20, 2))  # scenic's range, every other power


@dataclass(frozen=True)
class FewShotRecord:
    """One (dataset, shots, seed) probe result; accuracy is a fraction in [0, 1]."""

    dataset: str
    shots: int
    seed: int
    accuracy: float
    l2_reg: float
    num_test: int


def _np(a: np.ndarray | torch.Tensor) -> np.ndarray:
    return a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)


def ridge_weights(x: np.ndarray, y: np.ndarray, l2_reg: float) -> np.ndarray:
    """W = (X'X + lam*I)^-1 X'Y, via the primal (D x D) or dual (N x N) system, whichever is smaller."""
    n, d = x.shape
    if n >= d:
        return np.linalg.solve(x.T @ x + l2_reg * np.eye(d), x.T @ y)  # [D, K]
    return x.T @ np.linalg.solve(x @ x.T + l2_reg * np.eye(n), y)  # X'(XX' + lam*I)^-1 Y, [D, K]


def fewshot_accuracy(
    train_features: np.ndarray | torch.Tensor,
    train_labels: np.ndarray | torch.Tensor,
    test_features: np.ndarray | torch.Tensor,
    test_labels: np.ndarray | torch.Tensor,
    *,
    l2_reg: float = L2_REG,
) -> float:
    """Accuracy in [0, 1] of a closed-form ridge probe fit on the train features ([N, D], labels [N])."""
    xtr = _np(train_features).astype(np.float64)
    xte = _np(test_features).astype(np.float64)
    ytr, yte = _np(train_labels).astype(np.int64), _np(test_labels).astype(np.int64)
    mean, std = xtr.mean(0), xtr.std(0) + 1e-5  # population std (ddof=0), support set only
    xtr, xte = ((x - mean) / std for x in (xtr, xte))
    xtr, xte = (np.concatenate([x, np.full((len(x), 1), BIAS)], 1) for x in (xtr, xte))
    num_classes = int(max(ytr.max(), yte.max())) + 1
    targets = 2.0 * np.eye(num_classes)[ytr] - 1.0  # [N, K] in {-1, 1}
    w = ridge_weights(xtr, targets, l2_reg)
    return float(np.mean((xte @ w).argmax(1) == yte))


def select_l2_reg(
    features: np.ndarray, labels: np.ndarray, grid: Sequence[float] = CV_GRID, folds: int = 5
) -> float | None:
    """Lambda with the best k-fold accuracy on the support set alone (None with under 2 shots/class).

    Fold f holds out every class's j-th example for j % folds == f, so each fold sees every class.
    """
    rank = np.empty(len(labels), dtype=np.int64)
    for c in np.unique(labels):
        where = np.flatnonzero(labels == c)
        rank[where] = np.arange(len(where))
    folds = min(folds, int(np.unique(labels, return_counts=True)[1].min()) if len(labels) else 0)
    if folds < 2:
        return None
    fold = rank % folds
    scores = [
        np.mean(
            [
                fewshot_accuracy(
                    features[fold != f],
                    labels[fold != f],
                    features[fold == f],
                    labels[fold == f],
                    l2_reg=lam,
                )
                for f in range(folds)
            ]
        )
        for lam in grid
    ]
    return float(grid[int(np.argmax(scores))])


def support_sets(labels: np.ndarray, shots: Sequence[int], seed: int) -> dict[int, np.ndarray]:
    """{k: indices of the k-shot set}: one permutation per class, first k taken (nested in k)."""
    rng = np.random.default_rng(seed)
    perms = [rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)]
    return {k: np.sort(np.concatenate([p[:k] for p in perms])) for k in shots}


def check_shots(data: ImageSet, shots: Sequence[int]) -> None:
    """DataError if any class of `data` has fewer images than the largest shot count."""
    counts = np.bincount(data.labels, minlength=data.num_classes)
    worst = int(np.argmin(counts))
    if counts[worst] < max(shots):
        raise DataError(
            f"{data.name}: class {data.classes[worst]!r} has {counts[worst]} {data.split} images, "
            f"fewer than the {max(shots)} shots asked; use --shots up to {counts[worst]} or add images"
        )


def support_union(labels: np.ndarray, shots: Sequence[int], seeds: Sequence[int]) -> np.ndarray:
    """Sorted indices of every image any (seed, shots) set uses: extract features for these only."""
    return np.unique(
        np.concatenate([support_sets(labels, [max(shots)], s)[max(shots)] for s in seeds])
    )


def fewshot_grid(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    test_features: np.ndarray,
    test_labels: np.ndarray,
    *,
    shots: Sequence[int] = SHOTS,
    seeds: Sequence[int] = (0, 1, 2),
    l2_reg: float | str = L2_REG,
    dataset: str = "",
    train_rows: np.ndarray | None = None,
) -> list[FewShotRecord]:
    """Probe every (shots, seed) on features extracted once.

    Args:
        train_features: [M, D] features of the train split, or of its rows `train_rows`.
        train_labels: [N] labels of the whole train split (draws are made on it).
        test_features: [T, D] test-split features; test_labels: [T].
        shots: support images per class; seeds: one nested draw per seed.
        l2_reg: lambda, or "cv" to pick it by cross-validation on each support set (1-shot: 2^10).
        dataset: name copied into the records.
        train_rows: sorted train indices the rows of `train_features` belong to (None: all).

    Returns:
        One FewShotRecord per (shots, seed), shots-major.
    """
    labels = _np(train_labels).astype(np.int64)
    rows = np.arange(len(labels)) if train_rows is None else np.asarray(train_rows)
    feats, test_x, test_y = _np(train_features), _np(test_features), _np(test_labels)
    draws = {seed: support_sets(labels, shots, seed) for seed in seeds}
    out = []
    for k in shots:
        for seed in seeds:
            idx = draws[seed][k]
            pos = np.searchsorted(rows, idx)
            if not np.array_equal(rows[np.minimum(pos, len(rows) - 1)], idx):
                raise ValueError("train_rows does not cover the support sets; use support_union()")
            x, y = feats[pos], labels[idx]
            lam = (select_l2_reg(x, y) or L2_REG) if l2_reg == "cv" else float(l2_reg)
            acc = fewshot_accuracy(x, y, test_x, test_y, l2_reg=lam)
            out.append(FewShotRecord(dataset, k, seed, acc, lam, len(test_y)))
    return out


def summarize(records: Sequence[FewShotRecord]) -> list[dict[str, float | int | str]]:
    """Mean and population std of accuracy over seeds, per (dataset, shots)."""
    groups: dict[tuple[str, int], list[float]] = {}
    for r in records:
        groups.setdefault((r.dataset, r.shots), []).append(r.accuracy)
    return [
        {
            "dataset": d,
            "shots": k,
            "accuracy_mean": float(np.mean(a)),
            "accuracy_std": float(np.std(a)),
            "num_seeds": len(a),
        }
        for (d, k), a in groups.items()
    ]


@torch.inference_mode()
def extract_features(
    model: nn.Module,
    data: ImageSet,
    indices: np.ndarray | None = None,
    *,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    img_size: int,
    in_chans: int,
    frames: int | None = None,
) -> np.ndarray:
    """Pre-logits features [len(indices), D] float32 of the frozen model (eval mode, no autocast)."""

    was_training = model.training
    model.eval()
    idx = np.arange(len(data)) if indices is None else np.asarray(indices)
    out = []
    for x, _ in iter_batches(data, idx, batch_size, img_size=img_size, in_chans=in_chans,
                                 frames=frames):  # fmt: skip
        feats = pre_logits(model, normalize(x.to(device, non_blocking=True)))
        out.append(feats.float().cpu().numpy())
    model.train(was_training)
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)
