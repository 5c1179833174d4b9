"""Training recipe pieces, seeded training, checkpoint reuse, pretrained start, cost estimate."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from tlbench.data.sources import ImageSet
from tlbench.quality.train import (
    BudgetExceeded,
    check_budget,
    estimate_train_seconds,
    format_seconds,
    lr_factor,
    measure_step_seconds,
    param_groups,
    random_shift,
    train,
)
from tlbench.variants import build_variant


@pytest.fixture
def toy() -> ImageSet:
    """24 images, 3 classes: a bright square whose corner depends on the class."""
    images = torch.zeros(24, 1, 32, 32)
    labels = np.arange(24) % 3
    for i, c in enumerate(labels):
        images[i, :, 4 + 8 * c : 12 + 8 * c, 4:12] = 1.0
    return ImageSet("toy", "train", labels, ("a", "b", "c"), images=images)


def tiny(position: float | None = 0.5, **kw: object) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_variant("tiny", position=position, num_tokens=4, num_classes=3, **kw)


def test_lr_schedule_warms_up_then_decays_to_zero() -> None:
    factors = [lr_factor(s, 100, 0.1) for s in range(100)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors[9:], factors[10:], strict=False))
    assert factors[-1] < 0.01


def test_no_weight_decay_on_norms_biases_pos_embed() -> None:
    model = tiny()
    decay, no_decay = param_groups(model, 0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    skipped = {names[id(p)] for p in no_decay["params"]}
    assert (
        "pos_embed" in skipped and "norm.weight" in skipped and "blocks.0.attn.qkv.bias" in skipped
    )
    assert all(p.ndim == 2 or p.ndim == 4 for p in decay["params"])


def test_random_shift_moves_content_and_fills_black() -> None:
    x = torch.zeros(64, 1, 8, 8)
    x[:, :, 3, 3] = 1.0
    out = random_shift(x, 2, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and torch.all(out.sum((1, 2, 3)) == 1.0)  # nothing wraps around
    where = out[:, 0].flatten(1).argmax(1)
    rows, cols = where // 8, where % 8
    assert rows.min() == 1 and rows.max() == 5 and cols.min() == 1 and cols.max() == 5
    again = random_shift(x, 2, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)


def test_train_is_seeded_and_reports_progress(toy: ImageSet) -> None:
    calls: list[tuple[int, int, float]] = []
    a, b = tiny(), tiny()
    ra = train(a, toy, steps=3, batch_size=8, seed=1, callback=lambda *c: calls.append(c))
    train(b, toy, steps=3, batch_size=8, seed=1)
    assert [c[:2] for c in calls] == [(1, 3), (2, 3), (3, 3)]
    assert math.isfinite(ra.final_loss) and not ra.loaded and not a.training
    for pa, pb in zip(a.state_dict().values(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(pa, pb)


def test_training_lowers_the_loss(toy: ImageSet) -> None:
    losses: list[float] = []
    train(
        tiny(),
        toy,
        steps=30,
        batch_size=24,
        lr=3e-3,
        callback=lambda s, n, loss: losses.append(loss),
    )
    assert np.mean(losses[-5:]) < np.mean(losses[:5])


def test_checkpoint_reload_skips_training(toy: ImageSet, tmp_path: Path) -> None:
    path = tmp_path / "ckpt" / "tiny-p0.5.pt"
    trained = tiny()
    first = train(trained, toy, steps=2, batch_size=8, checkpoint_path=path)
    assert path.is_file() and not first.loaded
    fresh = tiny(position=0.5)
    calls: list[int] = []
    again = train(
        fresh, toy, steps=2, batch_size=8, checkpoint_path=path, callback=lambda *c: calls.append(1)
    )
    assert again.loaded and not calls and again.final_loss == pytest.approx(first.final_loss)
    for pa, pb in zip(trained.state_dict().values(), fresh.state_dict().values(), strict=True):
        torch.testing.assert_close(pa, pb)
    other = train(tiny(), toy, steps=3, batch_size=8, checkpoint_path=path)  # other recipe: retrain
    assert not other.loaded and torch.load(path, weights_only=True)["config"]["steps"] == 3


def test_train_from_pretrained_backbone(toy: ImageSet, tmp_path: Path) -> None:
    """A trained baseline saved as a timm state dict starts a TokenLearner variant (TL fresh)."""
    base = tiny(position=None)
    train(base, toy, steps=2, batch_size=8)
    weights = tmp_path / "backbone.pth"
    torch.save(base.state_dict(), weights)
    variant = tiny(position=0.5, checkpoint_path=weights)
    torch.testing.assert_close(variant.patch_embed.proj.weight, base.patch_embed.proj.weight)
    torch.testing.assert_close(variant.blocks[3].attn.qkv.weight, base.blocks[2].attn.qkv.weight)
    result = train(variant, toy, steps=2, batch_size=8)
    assert math.isfinite(result.final_loss)


def test_step_measurement_leaves_weights_alone(toy: ImageSet) -> None:
    model = tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    seconds = measure_step_seconds(model, toy, batch_size=8)
    assert seconds > 0 and not model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert estimate_train_seconds(model, toy, 0, 8) == 0.0


@pytest.mark.parametrize(
    ("seconds", "text"), [(42, "42 s"), (300, "5.0 min"), (9000, "2.5 h"), (4e5, "4.6 days")]
)
def test_format_seconds(seconds: float, text: str) -> None:
    assert format_seconds(seconds) == text


def test_budget_check_says_how_to_run_anyway() -> None:
    check_budget(100.0, 200.0, "x")
    check_budget(1e9, 0, "x")  # 0 = no limit
    check_budget(1e9, None, "x")
    with pytest.raises(BudgetExceeded, match=r"estimated at 2\.5 h, over the budget of 10\.0 min$") as e:
        check_budget(9000.0, 600.0, "training vit_b16")
    assert e.value.advice("--budget").endswith("run it anyway with --budget 0 (no limit) or --budget 11250")
    assert e.value.advice("--set quality.budget_s").endswith("--set quality.budget_s=11250")


def test_a_killed_training_resumes_bit_identically(tmp_path: Path) -> None:
    """Partial saves every step; a crash at step 3 of 6, then a rerun, equals one clean run."""
    from tlbench.data.sources import load_splits
    from tlbench.variants import build_variant

    data = load_splits("digits", img_size=32)[0]
    kw = dict(steps=6, batch_size=8, seed=0, save_every_s=0.0)

    torch.manual_seed(0)
    clean = build_variant("tiny", 0.5, 4, num_classes=10)
    train(clean, data, checkpoint_path=tmp_path / "clean.pt", **kw)

    class Crash(Exception):
        pass

    def crash_at_3(step: int, steps: int, loss: float) -> None:
        if step == 3:
            raise Crash

    torch.manual_seed(0)
    first = build_variant("tiny", 0.5, 4, num_classes=10)
    with pytest.raises(Crash):
        train(first, data, checkpoint_path=tmp_path / "run.pt", callback=crash_at_3, **kw)
    assert (tmp_path / "run.pt.partial").is_file() and not (tmp_path / "run.pt").exists()
    torch.manual_seed(0)
    resumed = build_variant("tiny", 0.5, 4, num_classes=10)
    steps_seen: list[int] = []
    train(resumed, data, checkpoint_path=tmp_path / "run.pt",
          callback=lambda step, steps, loss: steps_seen.append(step), **kw)  # fmt: skip
    assert steps_seen == [4, 5, 6] and not (tmp_path / "run.pt.partial").exists()
    for (name, a), b in zip(clean.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_a_damaged_checkpoint_is_ignored_and_training_runs(toy: ImageSet, tmp_path: Path) -> None:
    """Our writes are atomic, so a zero-byte file was damaged from outside: train again."""
    path = tmp_path / "ckpt.pt"
    path.write_bytes(b"")
    (tmp_path / "ckpt.pt.partial").write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="unreadable checkpoint"):
        result = train(tiny(), toy, steps=2, batch_size=8, checkpoint_path=path)
    assert not result.loaded and math.isfinite(result.final_loss)
    assert torch.load(path, weights_only=True)["finished"]
