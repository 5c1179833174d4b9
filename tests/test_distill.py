"""quality.adapt = distill: the label-free retrofit of a reducer into a trained baseline."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from tlbench.config import ModelConfig, QualityConfig
from tlbench.quality.probe import adapt_steps, freeze_before, run_probe, run_probe_variant
from tlbench.quality.train import distill_loss
from tlbench.variants import build_model, make_variant

ROOT = Path(__file__).resolve().parents[1]
FAST = dict(train_data="digits", probe_data=("digits",), batch_size=16, shots=(1, 3), seeds=2,
            device="cpu")  # fmt: skip


def test_distillation_loss_is_zero_when_the_student_is_the_teacher() -> None:
    torch.manual_seed(0)
    teacher = build_model(make_variant("tiny", None), num_classes=10)
    x = torch.randn(6, 3, 32, 32)
    assert distill_loss(copy.deepcopy(teacher), teacher, x).item() == pytest.approx(0.0, abs=1e-6)
    student = build_model(make_variant("tiny", 0.5, 4, method="pool"), num_classes=10)
    assert distill_loss(student, teacher, x).item() > 1e-3


def test_adapt_decides_the_steps_of_a_reducer_never_of_the_baseline() -> None:
    q = QualityConfig(steps=40, distill_steps=7)
    base, tl = make_variant("tiny", None), make_variant("tiny", 0.5, 4)
    assert [adapt_steps(QualityConfig(steps=40, adapt=a), tl) for a in ("scratch", "none")] == [40, 0]
    assert adapt_steps(QualityConfig(steps=40, distill_steps=7, adapt="distill"), tl) == 7
    assert adapt_steps(q, base) == adapt_steps(QualityConfig(steps=40, adapt="distill"), base) == 40


def test_freeze_before_leaves_only_the_reducer_and_what_follows_trainable() -> None:
    model = build_model(make_variant("tiny", 0.5, 4, method="topk"), num_classes=10)
    freeze_before(model, 2)
    trainable = {n.split(".")[0] + ("." + n.split(".")[1] if n.startswith("blocks.") else "")
                 for n, p in model.named_parameters() if p.requires_grad}  # fmt: skip
    assert trainable == {"blocks.2", "blocks.3", "norm", "head"}


def test_distilled_variant_keeps_the_teachers_frozen_part_and_reports_agreement(tmp_path: Path) -> None:
    """Train a baseline (the teacher), then distill TokenLearner at k = 2 into it: the patch
    embedding and blocks 0-1 stay the teacher's to the bit, later blocks move; the probe before
    distillation is the reducer off the shelf."""
    from tlbench.quality.train import _load

    base = run_probe("tiny", None, steps=3, checkpoint_dir=tmp_path / "base", **FAST)
    assert base.train is not None
    teacher_ckpt = next((tmp_path / "base").glob("*.pt"))
    q = QualityConfig(**FAST, steps=3, adapt="distill", distill_steps=3)
    v = make_variant("tiny", 0.5, 4)
    res = run_probe_variant(v, q, ModelConfig(checkpoint=str(teacher_ckpt)), checkpoint_dir=tmp_path / "students")
    assert res.train is not None and res.train.steps == 3
    assert {r.stage for r in res.records} == {"init", "trained"}  # off the shelf, then distilled
    assert set(res.agreement) == {"init", "trained"}
    for agree, cosine in res.agreement.values():
        assert 0 <= agree <= 1 and -1 <= cosine <= 1
    (student_ckpt,) = (tmp_path / "students").glob("*distill-*.pt")
    teacher, student = _load(teacher_ckpt, torch.device("cpu")), _load(student_ckpt, torch.device("cpu"))
    t, s = teacher["state_dict"], student["state_dict"]
    for key in ("patch_embed.proj.weight", "pos_embed", "blocks.0.attn.qkv.weight", "blocks.1.mlp.fc2.weight"):
        assert torch.equal(t[key], s[key]), key
    # blocks.2 is the TokenLearner now; the teacher's block 2 is the student's block 3
    assert not torch.equal(t["blocks.2.attn.qkv.weight"], s["blocks.3.attn.qkv.weight"])
    assert student["config"]["objective"].startswith("distill:")


def test_distill_sweep_writes_off_the_shelf_and_distilled_rows(tmp_path: Path) -> None:
    """Random drop keeping all 16 tokens in order is the baseline itself: off the shelf it agrees
    with its teacher on every image, with pre-logit cosine 1."""
    from tlbench import load_results
    from tlbench.config import load_sweep
    from tlbench.study.sweep import run_sweep

    config = load_sweep(ROOT / "sweeps" / "smoke.toml", overrides=[
        "grid.methods=['random', 'tokenlearner']", "grid.positions=[0.5]", "grid.tokens=[4, 16]",
        "quality.adapt='distill'", "quality.distill_steps=2", "speed.enabled=false"])  # fmt: skip
    result = run_sweep(config, tmp_path)
    assert not result.failed, result.failed
    df = load_results(result.run_dir)
    acc = df[df["metric"] == "fewshot_acc"]
    reducers = set(acc["variant"]) - {"baseline"}
    assert reducers == {"random-p0.5-s4", "random-p0.5-s16", "p0.5-s4", "p0.5-s16"}
    for stage in ("quality_init", "quality"):
        assert set(acc[acc["stage"] == stage]["variant"]) >= reducers, stage
    agree = df[df["metric"] == "teacher_agreement"].set_index(["variant", "stage"])["value"]
    cosine = df[df["metric"] == "teacher_cosine"].set_index(["variant", "stage"])["value"]
    assert agree[("random-p0.5-s16", "quality_init")] == 1.0
    assert cosine[("random-p0.5-s16", "quality_init")] == pytest.approx(1.0, abs=1e-5)
    steps = df[df["metric"] == "adapt_seconds"]["variant"]
    assert set(steps) == reducers | {"baseline"}  # the baseline trained, every reducer distilled


def test_agreement_off_the_shelf_reuses_the_probe_and_equals_a_direct_measurement(tmp_path: Path) -> None:
    """quality.agreement with adapt = none: every reducer gets teacher_agreement and
    teacher_cosine in its quality stage, the baseline none. Measured from the probe's held-out
    features, they equal teacher_agreement run on the two models directly; random dropping that
    keeps all 16 tokens in order is the baseline itself (agreement 1, cosine 1)."""
    from tlbench import load_results
    from tlbench.config import load_sweep
    from tlbench.quality.probe import teacher_agreement
    from tlbench.study.sweep import run_sweep

    config = load_sweep(ROOT / "sweeps" / "smoke.toml", overrides=[
        "grid.methods=['random', 'pool']", "grid.positions=[0.5]", "grid.tokens=[4, 16]",
        "quality.adapt='none'", "quality.agreement=true", "quality.train_data='digits'",
        "quality.probe_data=['digits']", "speed.enabled=false"])  # fmt: skip
    result = run_sweep(config, tmp_path)
    assert not result.failed, result.failed
    df = load_results(result.run_dir)
    rows = df[df["metric"].isin(["teacher_agreement", "teacher_cosine"])]
    assert set(rows["stage"]) == {"quality"}
    assert set(rows["variant"]) == {"random-p0.5-s4", "random-p0.5-s16", "pool-p0.5-s4", "pool-p0.5-s16"}
    got = rows.set_index(["variant", "metric"])["value"]
    assert got[("random-p0.5-s16", "teacher_agreement")] == 1.0
    assert got[("random-p0.5-s16", "teacher_cosine")] == pytest.approx(1.0, abs=1e-5)

    # the same numbers, measured directly on the two models the sweep probed
    (ckpt,) = (result.run_dir / "checkpoints").glob("*.pt")
    from tlbench.data.sources import load_splits

    q = config.quality
    held = load_splits("digits", img_size=32)[1]
    torch.manual_seed(config.seed)
    student = build_model(make_variant(config.model.name, 0.5, 4, method="pool"), num_classes=10,
                          checkpoint_path=ckpt)  # fmt: skip
    torch.manual_seed(config.seed)
    teacher = build_model(make_variant(config.model.name, None), num_classes=10, checkpoint_path=ckpt)
    agree, cosine = teacher_agreement(student, teacher, held, q.device)
    assert got[("pool-p0.5-s4", "teacher_agreement")] == pytest.approx(agree, abs=1e-9)
    assert got[("pool-p0.5-s4", "teacher_cosine")] == pytest.approx(cosine, abs=1e-6)
    assert agree < 1.0 or cosine < 0.9999  # pooling to 4 tokens changes the features
