"""Few-shot ridge maths (big_vision protocol), nested seeded draws, CV, feature extraction."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tlbench.data.sources import ImageSet
from tlbench.errors import DataError
from tlbench.quality.fewshot import (
    BIAS,
    FewShotRecord,
    check_shots,
    extract_features,
    fewshot_accuracy,
    fewshot_grid,
    ridge_weights,
    select_l2_reg,
    summarize,
    support_sets,
    support_union,
)


def blobs(n_per_class: int, classes: int = 4, dim: int = 16, spread: float = 0.1, seed: int = 0):
    """Gaussian blobs around random centres: (features [N, D], labels [N])."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim)) * 3
    labels = np.repeat(np.arange(classes), n_per_class)
    return centres[labels] + spread * rng.normal(size=(len(labels), dim)), labels


@pytest.mark.parametrize("n", [6, 40])  # dual (N < D) and primal (N >= D) side
def test_ridge_matches_explicit_solve(n: int) -> None:
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(n, 12)), rng.normal(size=(n, 3))
    expected = np.linalg.solve(x.T @ x + 7.0 * np.eye(12), x.T @ y)
    np.testing.assert_allclose(ridge_weights(x, y, 7.0), expected, rtol=1e-8, atol=1e-10)


def test_primal_and_dual_agree() -> None:
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(10, 10)), rng.normal(size=(10, 2))  # square: both sides valid
    primal = np.linalg.solve(x.T @ x + 3.0 * np.eye(10), x.T @ y)
    dual = x.T @ np.linalg.solve(x @ x.T + 3.0 * np.eye(10), y)
    np.testing.assert_allclose(primal, dual, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(ridge_weights(x, y, 3.0), primal, rtol=1e-8, atol=1e-10)


def test_accuracy_matches_hand_built_probe() -> None:
    """The whole recipe by hand: population std + 1e-5, bias column 100, +-1 targets, argmax."""
    xtr, ytr = blobs(5, spread=2.0, seed=3)
    xte, yte = blobs(20, spread=2.0, seed=4)
    mean, std = xtr.mean(0), xtr.std(0, ddof=0) + 1e-5
    a, b = ((x - mean) / std for x in (xtr, xte))
    a, b = (np.hstack([x, np.full((len(x), 1), BIAS)]) for x in (a, b))
    w = np.linalg.solve(a.T @ a + 1024.0 * np.eye(a.shape[1]), a.T @ (2 * np.eye(4)[ytr] - 1))
    expected = np.mean((b @ w).argmax(1) == yte)
    assert fewshot_accuracy(xtr, ytr, xte, yte) == pytest.approx(expected)


def test_separable_features_give_full_accuracy() -> None:
    xtr, ytr = blobs(5)
    xte, yte = blobs(50, seed=0)
    assert fewshot_accuracy(xtr, ytr, xte, yte) == 1.0


def test_shuffled_labels_give_chance() -> None:
    x, y = blobs(200, classes=4, spread=1.0)
    rng = np.random.default_rng(5)
    y = rng.permutation(y)
    acc = fewshot_accuracy(x[:400], y[:400], x[400:], y[400:])
    assert abs(acc - 0.25) < 0.08


def test_accepts_tensors() -> None:
    xtr, ytr = blobs(5)
    xte, yte = blobs(10)
    as_t = [torch.as_tensor(a) for a in (xtr, ytr, xte, yte)]
    assert fewshot_accuracy(*as_t) == fewshot_accuracy(xtr, ytr, xte, yte)


def test_standardisation_uses_training_shots_only() -> None:
    """mu/sigma come from the support set: a shifted test set is not re-centred, a joint map cancels."""
    xtr, ytr = blobs(5, spread=1.0)
    xte, yte = blobs(30, spread=1.0, seed=7)
    base = fewshot_accuracy(xtr, ytr, xte, yte)
    # With test statistics in mu/sigma, a far-away test set would be re-centred and stay accurate.
    assert fewshot_accuracy(xtr, ytr, xte + 1000.0, yte) < base
    assert fewshot_accuracy(3 * xtr + 2, ytr, 3 * xte + 2, yte) == pytest.approx(base)


def test_support_sets_are_nested_and_per_class() -> None:
    labels = np.repeat(np.arange(3), 30)
    sets = support_sets(labels, [1, 5, 10, 25], seed=0)
    for small, big in [(1, 5), (5, 10), (10, 25)]:
        assert set(sets[small]) <= set(sets[big])
    for k, idx in sets.items():
        assert np.array_equal(np.bincount(labels[idx]), [k] * 3)


def test_same_seed_same_accuracy_other_seed_other_draw() -> None:
    x, y = blobs(30, spread=3.0)
    xte, yte = blobs(20, spread=3.0, seed=9)
    a = fewshot_grid(x, y, xte, yte, shots=[1, 5], seeds=[0, 1], dataset="blobs")
    b = fewshot_grid(x, y, xte, yte, shots=[1, 5], seeds=[0, 1], dataset="blobs")
    assert a == b
    assert not np.array_equal(support_sets(y, [5], 0)[5], support_sets(y, [5], 1)[5])
    assert [(r.shots, r.seed) for r in a] == [(1, 0), (1, 1), (5, 0), (5, 1)]
    assert all(isinstance(r, FewShotRecord) and 0 <= r.accuracy <= 1 for r in a)


def test_grid_on_extracted_subset_equals_full() -> None:
    x, y = blobs(30, spread=3.0)
    xte, yte = blobs(20, spread=3.0, seed=9)
    rows = support_union(y, [1, 5], [0, 1, 2])
    assert len(rows) < len(y)
    full = fewshot_grid(x, y, xte, yte, shots=[1, 5], seeds=[0, 1, 2])
    subset = fewshot_grid(x[rows], y, xte, yte, shots=[1, 5], seeds=[0, 1, 2], train_rows=rows)
    assert full == subset


def test_cv_selects_from_grid_on_support_only() -> None:
    x, y = blobs(10, spread=3.0)
    lam = select_l2_reg(x, y, grid=[1e-3, 1.0, 1e3])
    assert lam in (1e-3, 1.0, 1e3)
    assert select_l2_reg(x[::10], y[::10]) is None  # 1 shot per class: no folds possible
    recs = fewshot_grid(x, y, *blobs(5, seed=1), shots=[1, 5], seeds=[0], l2_reg="cv")
    assert recs[0].l2_reg == 1024.0 and recs[1].l2_reg > 0


def test_summarize_mean_and_std_over_seeds() -> None:
    recs = [FewShotRecord("d", 5, s, acc, 1024.0, 10) for s, acc in enumerate([0.5, 0.7])]
    (row,) = summarize(recs)
    assert row["accuracy_mean"] == pytest.approx(0.6)
    assert row["accuracy_std"] == pytest.approx(0.1)
    assert row["num_seeds"] == 2


def test_check_shots_names_the_class() -> None:
    data = ImageSet("folder:x", "train", np.array([0, 0, 0, 1]), ("cat", "dog"))
    check_shots(data, [1])
    with pytest.raises(DataError, match="'dog' has 1 train images, fewer than the 5 shots"):
        check_shots(data, [1, 5])


def test_extract_features_shape_and_mode() -> None:
    from tlbench.variants import build_variant

    model = build_variant("tiny", position=0.5, num_tokens=4, num_classes=3).train()
    images = torch.rand(5, 1, 32, 32)
    data = ImageSet("t", "train", np.arange(5) % 3, ("a", "b", "c"), images=images)
    feats = extract_features(
        model, data, np.array([0, 2, 4]), batch_size=2, img_size=32, in_chans=3
    )
    assert feats.shape == (3, 64) and feats.dtype == np.float32
    assert model.training  # mode restored
