"""The quality stage for one variant: estimate the cost, train (or load), then few-shot probe.

The default is a real transfer, as in the paper (pre-train on one dataset, probe another): train on
`mnist` (4,000 digits), probe `digits` (sklearn 8x8 digits, framed like MNIST) and the `mnist`
held-out split (shots from mnist's train split, accuracy on its 1,000 held-out test images). The
frozen features before training (random init, or pretrained backbone + fresh TokenLearner) are
probed too, so a reader can see what the training bought.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tlbench.adapt import (
    ProgressFn,
    TrainResult,
    check_budget,
    flops_floor_seconds,
    format_seconds,
    input_shape,
    is_finished,
    measure_step_seconds,
    train,
)
from tlbench.data import ImageSet, load_splits, parse_spec
from tlbench.errors import ConfigError
from tlbench.fewshot import (
    L2_REG,
    SHOTS,
    FewShotRecord,
    check_shots,
    extract_features,
    fewshot_grid,
    support_union,
)
from tlbench.flops import analytic_flops
from tlbench.models import ModelInfo, Variant, build_model, make_variant, model_info

TRAIN_DATA = "mnist"
PROBE_DATA = ("digits", "mnist")
# 400 steps at batch 64 train vit_cpu12's baseline in about a minute on 2 cores (146-154 ms/step,
# measured): its features then beat random init clearly on the in-domain mnist probe (10-shot
# 0.58-0.66 vs 0.28), not yet on the digits transfer probe (0.51 vs 0.55), which needs ~600 steps
# at batch 128 (0.78; shared/reference/cpu-demo-feasibility.md). 200 x 128 stays on the plateau.
STEPS = 400
BATCH_SIZE = 64


@dataclass(frozen=True)
class ProbeRecord:
    """One few-shot result of one variant; `stage` is "init" (before training) or "trained"."""

    model: str
    variant: str
    position: float | None
    block_index: int | None
    num_tokens: int | None
    stage: str
    dataset: str
    shots: int
    seed: int
    accuracy: float  # fraction in [0, 1]
    l2_reg: float
    num_test: int


@dataclass(frozen=True)
class ProbeResult:
    """Records of one variant, the training run (None if steps == 0) and the estimate it passed."""

    variant: Variant
    records: tuple[ProbeRecord, ...]
    train: TrainResult | None
    estimate_s: float  # the whole stage: training + feature extraction
    train_estimate_s: float  # training alone: compare with train.train_s


def probe_features(
    model: nn.Module,
    probes: Sequence[tuple[ImageSet, ImageSet]],
    *,
    shots: Sequence[int],
    seeds: Sequence[int],
    l2_reg: float | str,
    device: str | torch.device,
    batch_size: int = 256,
) -> list[FewShotRecord]:
    """FewShotRecords of `model` on each (train, test) pair; features are extracted once per split."""
    img_size, in_chans = input_shape(model)
    out = []
    for tr, te in probes:
        rows = support_union(tr.labels, shots, seeds)
        kw = {
            "batch_size": batch_size,
            "device": device,
            "img_size": img_size,
            "in_chans": in_chans,
        }
        ftr = extract_features(model, tr, rows, **kw)  # [M, D]
        fte = extract_features(model, te, **kw)  # [T, D]
        out += fewshot_grid(
            ftr,
            tr.labels,
            fte,
            te.labels,
            shots=shots,
            seeds=seeds,
            l2_reg=l2_reg,
            dataset=tr.name,
            train_rows=rows,
        )
    return out


def backbone_init(checkpoint_path: str | Path | None, pretrained: bool) -> str:
    """What a backbone starts from, as checkpoint names record it: a file's stem, or the hub."""
    return Path(checkpoint_path).stem if checkpoint_path else "pretrained" if pretrained else "scratch"


def checkpoint_name(variant: Variant, train_data: str, steps: int, seed: int, init: str) -> str:
    """A file name that keys the training run: model, variant, data, steps, seed, initial weights."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{train_data}-{init}").strip("_")
    return f"{variant.model}-{variant.name}-{slug}-{steps}steps-seed{seed}.pt"


def run_probe(
    model_name: str,
    position: float | None = None,
    num_tokens: int = 8,
    *,
    img_size: int | None = None,
    version: str = "1.1",
    fuser: bool = False,
    method: str = "tokenlearner",
    params: dict[str, int] | None = None,
    **kwargs: Any,
) -> ProbeResult:
    """`run_probe_variant` for the variant (model_name, method, position, num_tokens, params);
    None = baseline."""
    variant = make_variant(model_name, position, num_tokens, version=version, fuser=fuser,
                           img_size=img_size, method=method, params=params)  # fmt: skip
    return run_probe_variant(variant, img_size=img_size, **kwargs)


def run_probe_variant(
    variant: Variant,
    *,
    train_data: str = TRAIN_DATA,
    probe_data: Sequence[str] = PROBE_DATA,
    steps: int = STEPS,
    batch_size: int = BATCH_SIZE,
    lr: float = 3e-3,
    shots: Sequence[int] = SHOTS,
    seeds: int | Sequence[int] = 3,
    l2_reg: float | str = L2_REG,
    device: str = "cpu",
    pretrained: bool = False,
    checkpoint_path: str | Path | None = None,
    img_size: int | None = None,
    budget_s: float | None = None,
    init_reference: bool = True,
    checkpoint_dir: str | Path | None = None,
    download: bool = False,
    seed: int = 0,
    callback: ProgressFn | None = None,
    status: Callable[[str], None] | None = None,
    budget_option: str = "--budget",
    step_seconds: float | None = None,
    save_every_s: float = 60.0,
) -> ProbeResult:
    """Train one variant on `train_data` for `steps` steps, then few-shot probe its frozen features.

    Args:
        variant: from tlbench.models.make_variant(s).
        train_data, probe_data: dataset specs (tlbench.data.parse_spec); several probe sets allowed.
        steps, batch_size, lr, seed: training (0 steps: probe the initial weights only).
        shots, seeds, l2_reg: the probe grid; seeds is a count or explicit seeds; l2_reg may be "cv".
        device: torch device string.
        pretrained, checkpoint_path: timm hub weights or a local timm checkpoint for the backbone
            (the TokenLearner always starts fresh).
        img_size: model input size (default: the model's).
        budget_s: raise BudgetExceeded if the estimate is over it (None or <= 0: no limit).
        init_reference: also probe the features before training.
        checkpoint_dir: one checkpoint per variant here; a finished one is loaded, not redone.
        download: let torchvision datasets download (needs network).
        callback: training progress, (step, steps, loss).
        status: one-line phase messages (the estimate first), for a CLI to show.
        budget_option: how the caller's user raises the budget, named in the skip message.
        step_seconds: seconds per training step, if the caller measured it (a sweep measures one
            model and scales by FLOPs); None: measured here at the real batch size.
        save_every_s: partial checkpoint interval while training (0: every step).

    Returns:
        ProbeResult with one record per (stage, dataset, shots, seed).
    """
    say = status or (lambda text: None)
    seeds = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    if not shots or min(shots) < 1 or not seeds or steps < 0:
        raise ConfigError("shots must be positive, steps >= 0, and at least one seed is needed")
    if l2_reg != "cv" and not (isinstance(l2_reg, (int, float)) and 0 < l2_reg < float("inf")):
        raise ConfigError(f"the ridge lambda (l2_reg) must be a positive number or 'cv', got {l2_reg!r}")
    parse_spec(train_data)  # an unknown name fails now, even when steps == 0
    info = model_info(variant.model, img_size)
    init = backbone_init(checkpoint_path, pretrained)
    ckpt = None
    if checkpoint_dir is not None and steps:
        ckpt = Path(checkpoint_dir) / checkpoint_name(variant, train_data, steps, seed, init)
    todo = 0 if ckpt is not None and is_finished(ckpt) else steps
    floor_check(variant, info, todo, batch_size, device, budget_s, budget_option)
    what = _what(variant, todo, device)
    size = info.img_size[0]
    probes = [load_splits(spec, img_size=size, download=download) for spec in probe_data]
    for tr, _ in probes:
        check_shots(tr, shots)
    train_set = load_splits(train_data, img_size=size, download=download)[0] if steps else None
    torch.manual_seed(seed)  # the same initial backbone for every variant of a model
    num_classes = (train_set or probes[0][0]).num_classes
    model = build_model(
        variant,
        img_size=img_size,
        pretrained=pretrained,
        num_classes=num_classes,
        checkpoint_path=checkpoint_path,
    )

    # Estimate: measured step time x steps (0 if a finished checkpoint exists), plus feature
    # extraction at ~1/3 of a training step per image (forward only).
    if step_seconds is None:
        hopeless = budget_s / max(todo, 1) * 10 if budget_s and budget_s > 0 else None
        step_s = measure_step_seconds(model, train_set or probes[0][0], batch_size, device,
                                      give_up_s=hopeless)  # fmt: skip
    else:
        step_s = step_seconds
    images = sum(len(support_union(tr.labels, shots, seeds)) + len(te) for tr, te in probes)
    passes = 1 + (init_reference and steps > 0)
    estimate = todo * step_s + passes * images * step_s / batch_size / 3
    check_budget(estimate, budget_s, what, budget_option)
    say(f"{what}: estimated {format_seconds(estimate)} ({1000 * step_s:.0f} ms per training step)")

    kw: dict[str, Any] = {"shots": shots, "seeds": seeds, "l2_reg": l2_reg, "device": device}
    stages: list[tuple[str, list[FewShotRecord]]] = []
    result = None
    if train_set is not None:
        if init_reference:
            say("probing the initial features")
            stages.append(("init", probe_features(model.to(device), probes, **kw)))
        workers = (
            min(8, os.cpu_count() or 1) if train_set.images is None and "cuda" in device else 0
        )
        result = train(
            model,
            train_set,
            steps=steps,
            batch_size=batch_size,
            lr=lr,
            seed=seed,
            device=device,
            checkpoint_path=ckpt,
            callback=callback,
            num_workers=workers,
            save_every_s=save_every_s,
        )
    say("probing the trained features" if steps else "probing the features")
    stages.append(("trained" if steps else "init", probe_features(model.to(device), probes, **kw)))
    records = tuple(
        ProbeRecord(
            variant.model,
            variant.name,
            variant.position,
            variant.block_index,
            variant.num_tokens,
            stage,
            r.dataset,
            r.shots,
            r.seed,
            r.accuracy,
            r.l2_reg,
            r.num_test,
        )
        for stage, recs in stages
        for r in recs
    )
    return ProbeResult(variant, records, result, float(estimate), float(todo * step_s))


def _what(variant: Variant, steps: int, device: str) -> str:
    return f"{variant.model} {variant.name} ({steps} training steps + probe on {device})"


def floor_check(variant: Variant, info: ModelInfo, steps: int, batch_size: int, device: str,
                budget_s: float | None, budget_option: str = "--budget") -> None:  # fmt: skip
    """BudgetExceeded if even a FLOP lower bound on training is over the budget.

    Instant (no model is built), so a hopeless run, ViT-B/16 training on a CPU, is refused in a
    second with the estimate and how to run it anyway.
    """
    floor = flops_floor_seconds(analytic_flops(info, variant), steps, batch_size, device)
    what = f"{_what(variant, steps, device)}, from its FLOPs at this device's matmul peak,"
    check_budget(floor, budget_s, what, budget_option)


def step_seconds_by_flops(
    variants: Sequence[Variant],
    *,
    train_data: str,
    batch_size: int,
    device: str,
    img_size: int | None = None,
    give_up_s: float | None = None,
) -> dict[str, float]:
    """Seconds per training step of each variant of one model, from two measured ones.

    Measuring every variant in its own worker, at a small batch, once projected a 3-minute run to
    an hour on a busy machine. Here the most and the least expensive variant are measured at the
    real batch (median of several steps), and the others are placed on the line between them by
    their FLOPs: a step costs a fixed overhead plus a part proportional to FLOPs. Weights do not
    matter for timing, so the models are built without pretrained weights.
    """
    info = model_info(variants[0].model, img_size)
    flops = {v.name: analytic_flops(info, v) for v in variants}
    hi = max(variants, key=lambda v: flops[v.name])
    lo = min(variants, key=lambda v: flops[v.name])
    data = load_splits(train_data, img_size=info.img_size[0])[0]

    def measure(v: Variant) -> float:
        torch.manual_seed(0)
        model = build_model(v, img_size=img_size, num_classes=data.num_classes)
        return measure_step_seconds(model, data, batch_size, device, give_up_s=give_up_s)

    t_hi = measure(hi)
    proportional = {v.name: t_hi * flops[v.name] / flops[hi.name] for v in variants}
    if flops[lo.name] == flops[hi.name] or (give_up_s is not None and t_hi > give_up_s):
        return proportional
    t_lo = measure(lo)
    if t_lo >= t_hi:  # noise from other processes swamped the difference: FLOPs alone
        return proportional
    slope = (t_hi - t_lo) / (flops[hi.name] - flops[lo.name])
    return {v.name: t_lo + slope * (flops[v.name] - flops[lo.name]) for v in variants}


def summary_rows(result: ProbeResult) -> list[dict]:
    """Wide summary for display: one row per (dataset, shots), mean/std per stage over seeds."""
    table: dict[tuple[str, int], dict] = {}
    for r in result.records:
        row = table.setdefault((r.dataset, r.shots), {"dataset": r.dataset, "shots": r.shots})
        row.setdefault(r.stage, []).append(r.accuracy)
    out = []
    for row in table.values():
        for stage in ("init", "trained"):
            if stage in row:
                acc = row.pop(stage)
                row[f"{stage}_mean"], row[f"{stage}_std"] = float(np.mean(acc)), float(np.std(acc))
        out.append(row)
    return out
