"""The quality stage for one variant: estimate the cost, train (or load), then few-shot probe.

The default is a real transfer, as in the paper (pre-train on one dataset, probe another): train on
`mnist` (4,000 digits), probe `digits` (sklearn 8x8 digits, framed like MNIST) and the `mnist`
held-out split (shots from mnist's train split, accuracy on its 1,000 held-out test images). The
frozen features before training (random init, or pretrained backbone + fresh TokenLearner) are
probed too, so a reader can see what the training bought.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tlbench import files
from tlbench.backbones.vit import model_info
from tlbench.config import ModelConfig, QualityConfig, with_knobs
from tlbench.core import ModelInfo, Variant
from tlbench.data.sources import (
    ImageSet,
    check_spec,
    is_video_spec,
    iter_batches,
    load_splits,
    normalize,
    parse_spec,
)
from tlbench.errors import ConfigError, DataError
from tlbench.measure.flops import analytic_flops
from tlbench.measure.throughput import resolve_device
from tlbench.quality.fewshot import (
    FewShotRecord,
    check_shots,
    extract_features,
    fewshot_grid,
    support_union,
)
from tlbench.quality.train import (
    ProgressFn,
    TrainRecipe,
    TrainResult,
    batch_args,
    check_budget,
    flops_floor_seconds,
    format_seconds,
    is_finished,
    measure_step_seconds,
    outputs,
    train,
)
from tlbench.variants import build_model, make_variant


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
    # quality.adapt = distill: stage ("init": off the shelf, "trained": distilled) -> (top-1
    # agreement with the teacher, mean pre-logit cosine) on the training set's held-out split;
    # adapt = none with quality.agreement: "init" only, the reducer as inserted
    agreement: dict[str, tuple[float, float]] = dataclasses.field(default_factory=dict)


def probe_features(
    model: nn.Module,
    probes: Sequence[tuple[ImageSet, ImageSet]],
    *,
    shots: Sequence[int],
    seeds: Sequence[int],
    l2_reg: float | str,
    device: str | torch.device,
    batch_size: int = 256,
    keep: dict[str, np.ndarray] | None = None,
) -> list[FewShotRecord]:
    """FewShotRecords of `model` on each (train, test) pair; features are extracted once per split.
    `keep`, if given, receives each test split's features by dataset name (for reuse)."""
    out = []
    for tr, te in probes:
        rows = support_union(tr.labels, shots, seeds)
        kw = {"batch_size": batch_size, "device": device, **batch_args(model)}
        ftr = extract_features(model, tr, rows, **kw)  # [M, D]
        fte = extract_features(model, te, **kw)  # [T, D]
        if keep is not None:
            keep[te.name] = fte
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
    quality: QualityConfig | None = None,
    params: dict[str, int] | None = None,
    pretrained: bool = False,
    checkpoint_path: str | Path | None = None,
    checkpoint_dir: str | Path | None = None,
    download: bool = False,
    seed: int = 0,
    callback: ProgressFn | None = None,
    status: Callable[[str], None] | None = None,
    **knobs: Any,
) -> ProbeResult:
    """`run_probe_variant` for (model_name, method, position, num_tokens, the method's params);
    position None = baseline.

    For a notebook: `knobs` replace fields of `quality` (default: the built-in study's record),
    e.g. run_probe("vit_cpu6", 0.25, steps=100, train_data="digits")."""
    variant = make_variant(model_name, position, num_tokens, version=version, fuser=fuser,
                           img_size=img_size, method=method, params=params)  # fmt: skip
    q = with_knobs(quality or QualityConfig(), "quality", **knobs)
    m = ModelConfig(name=model_name, img_size=img_size, pretrained=pretrained,
                    checkpoint=None if checkpoint_path is None else str(checkpoint_path))
    return run_probe_variant(variant, q, m, checkpoint_dir=checkpoint_dir, download=download,
                             seed=seed, callback=callback, status=status)  # fmt: skip


def run_probe_variant(
    variant: Variant,
    quality: QualityConfig | None = None,
    model: ModelConfig | None = None,
    *,
    checkpoint_dir: str | Path | None = None,
    download: bool = False,
    seed: int = 0,
    callback: ProgressFn | None = None,
    status: Callable[[str], None] | None = None,
    step_seconds: float | None = None,
) -> ProbeResult:
    """Adapt one variant (train, distill or nothing, by quality.adapt), then few-shot probe its
    frozen features.

    Args:
        variant: from tlbench.backbones.vit.make_variant(s).
        quality: the stage's settings, whole (tlbench.config.QualityConfig; None: the defaults).
            quality.adapt decides what a reducer variant gets: "scratch" trains it with labels for
            `steps`; "none" probes it as inserted into the backbone; "distill" inserts it, then
            trains it for `distill_steps` to match the backbone (the teacher) without labels. The
            baseline always trains with labels (0 steps: the backbone as it is).
        model: the backbone's settings, whole (config.ModelConfig; None: the defaults): its
            `pretrained` hub weights or local `checkpoint` start the backbone (and the teacher),
            `img_size` the input. A reducer's own parameters always start fresh.
        checkpoint_dir: one checkpoint per variant here; a finished one is loaded, not redone.
        download: let torchvision datasets download (needs network).
        seed: training seed (the probe's support draws are quality.seeds).
        callback: training progress, (step, steps, loss).
        status: one-line phase messages (the estimate first), for a CLI to show.
        step_seconds: seconds per training step, if the caller measured it (a sweep measures one
            model and scales by FLOPs); None: measured here at the real batch size.

    Returns:
        ProbeResult with one record per (stage, dataset, shots, seed); stage "init" is the probe
        before adaptation (with distill: the reducer off the shelf), "trained" after it.
    """
    q, m = quality or QualityConfig(), model or ModelConfig()
    pretrained, checkpoint_path, img_size = m.pretrained, m.checkpoint, m.img_size
    say = status or (lambda text: None)
    seeds = list(range(q.seeds)) if isinstance(q.seeds, int) else list(q.seeds)
    distill = q.adapt == "distill" and not variant.is_baseline
    steps = adapt_steps(q, variant)
    if not q.shots or min(q.shots) < 1 or not seeds or steps < 0:
        raise ConfigError("shots must be positive, steps >= 0, and at least one seed is needed")
    if q.l2_reg != "cv" and (isinstance(q.l2_reg, str) or not 0 < q.l2_reg < float("inf")):
        raise ConfigError(f"the ridge lambda (l2_reg) must be a positive number or 'cv', got {q.l2_reg!r}")
    parse_spec(q.train_data)  # an unknown name fails now, even when steps == 0
    # train_data's held-out split: a distilled variant's agreement, or an inserted one's (agreement)
    agree = q.agreement and q.adapt == "none" and not variant.is_baseline
    used = ([q.train_data] if steps or agree else []) + list(q.probe_data)
    for spec in used:
        check_spec(spec, download=download)  # a spec's options and folders, before any estimate or work
    check_data_fits(variant.model, used, img_size)
    device = str(resolve_device(q.device))
    info = model_info(variant.model, img_size)
    init = backbone_init(checkpoint_path, pretrained)
    if checkpoint_path is not None and not Path(checkpoint_path).is_file():  # before any work
        raise ConfigError(f"checkpoint file not found: {checkpoint_path}")
    ckpt = None
    if checkpoint_dir is not None and steps:
        tag = "distill-" if distill else ""
        ckpt = Path(checkpoint_dir) / checkpoint_name(variant, q.train_data, steps, seed, tag + init)
        files.check_path(ckpt, "checkpoint")  # a checkpoint folder that is a file: refused before training
    todo = 0 if ckpt is not None and is_finished(ckpt) else steps
    floor_check(variant, info, todo, q.batch_size, device, q.budget_s)
    what = _what(variant, todo, device, "distillation" if distill else "training")
    shape = dict(img_size=info.img_size[0], frames=info.clip_frames)
    probes = [load_splits(spec, **shape, download=download) for spec in q.probe_data]
    for tr, _ in probes:
        check_shots(tr, q.shots)
    # the training split; its held-out split measures a distilled variant's agreement
    train_set, held_out = load_splits(q.train_data, **shape, download=download) if steps else (None, None)
    torch.manual_seed(seed)  # the same initial backbone for every variant of a model
    num_classes = (train_set or probes[0][0]).num_classes
    build = functools.partial(build_model, img_size=img_size, pretrained=pretrained,
                              num_classes=num_classes, checkpoint_path=checkpoint_path)  # fmt: skip
    model = build(variant)
    # re-seeded: the teacher's fresh head is the student's (a pretrained backbone has none)
    if distill:
        torch.manual_seed(seed)
    teacher = build(Variant(variant.model, None, None, None)) if distill else None

    # Estimate: measured step time x steps (0 if a finished checkpoint exists), plus feature
    # extraction at ~1/3 of a training step per image (forward only). A distillation step adds
    # one forward of the teacher, ~1/3 of its training step (taken as the student's).
    if step_seconds is None:
        hopeless = q.budget_s / max(todo, 1) * 10 if q.budget_s and q.budget_s > 0 else None
        step_s = measure_step_seconds(model, train_set or probes[0][0], q.batch_size, device,
                                      give_up_s=hopeless)  # fmt: skip
    else:
        step_s = step_seconds
    images = sum(len(support_union(tr.labels, q.shots, seeds)) + len(te) for tr, te in probes)
    # an inserted variant's agreement: train_data's held-out split, the probe's own when it is one
    held = next((te for _, te in probes if te.name == q.train_data), None) if agree else None
    if agree and held is None:
        held = load_splits(q.train_data, **shape, download=download)[1]
        images += len(held)  # its own pass
    init_probe = (q.init_reference or distill) and steps > 0
    passes = 1 + init_probe
    estimate = todo * step_s * (4 / 3 if distill else 1) + passes * images * step_s / q.batch_size / 3
    check_budget(estimate, q.budget_s, what)
    say(f"{what}: estimated {format_seconds(estimate)} ({1000 * step_s:.0f} ms per training step)")

    kw: dict[str, Any] = {"shots": q.shots, "seeds": seeds, "l2_reg": q.l2_reg, "device": device}
    stages: list[tuple[str, list[FewShotRecord]]] = []
    result = None
    agreement: dict[str, tuple[float, float]] = {}
    if train_set is not None:
        if init_probe:
            say("probing the features before " + ("distillation" if distill else "training"))
            stages.append(("init", probe_features(model.to(device), probes, **kw)))
            if distill:
                agreement["init"] = teacher_agreement(model, teacher, held_out, device)
        if distill:
            freeze_before(model, variant.block_index)
        workers = (
            min(8, os.cpu_count() or 1) if train_set.images is None and "cuda" in device else 0
        )
        result = train(
            model,
            train_set,
            TrainRecipe(steps, q.batch_size, q.lr, seed=seed),
            key=variant.name,
            device=device,
            checkpoint_path=ckpt,
            callback=callback,
            num_workers=workers,
            save_every_s=q.save_every_s,
            teacher=teacher,
            teacher_id=init,
        )
        if distill:
            agreement["trained"] = teacher_agreement(model, teacher, held_out, device)
    say("probing the trained features" if steps else "probing the features")
    test_features: dict[str, np.ndarray] = {}
    stage = "trained" if steps else "init"
    stages.append((stage, probe_features(model.to(device), probes, **kw, keep=test_features)))
    if agree:
        say("agreement with the unreduced model")
        weights = Path(checkpoint_path).stat() if checkpoint_path else None  # a retrained file is new
        key = (variant.model, img_size, pretrained, str(checkpoint_path), weights and weights.st_mtime_ns,
               weights and weights.st_size, seed, num_classes, q.train_data, device)  # fmt: skip
        if key not in _TEACHER_OUTPUTS:  # once a process: every variant of a model shares it
            torch.manual_seed(seed)  # the teacher's fresh head is the student's, as in distill
            _TEACHER_OUTPUTS[key] = held_out_outputs(build(Variant(variant.model, None, None, None)),
                                                     held, device)  # fmt: skip
        mine = test_features.get(held.name)
        agreement[stage] = agreement_of(
            held_out_outputs(model, held, device) if mine is None else (mine, None),
            _TEACHER_OUTPUTS[key], model,
        )
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
    return ProbeResult(variant, records, result, float(estimate), float(todo * step_s), agreement)


def check_data_fits(model: str, specs: Sequence[str], img_size: int | None = None) -> None:
    """DataError in one line when a dataset holds images for a video model, or clips for an image one."""
    info = model_info(model, img_size)
    video = info.time_steps > 1
    if video:
        have, kind, want = "images", "a video", "clips (moving_mnist, videos:PATH)"
    else:
        have, kind, want = "video clips", "an image", "images (mnist, digits, folder:PATH, cifar10, ...)"
    for spec in specs:
        if is_video_spec(spec) != video:
            raise DataError(f"{spec} holds {have}, but {info.name} is {kind} model: give it {want}")


def adapt_steps(quality: QualityConfig, variant: Variant) -> int:
    """Training steps of a variant under quality.adapt: a reducer inserted off the shelf gets none."""
    if variant.is_baseline or quality.adapt == "scratch":
        return quality.steps
    return quality.distill_steps if quality.adapt == "distill" else 0


def freeze_before(model: nn.Module, k: int | None) -> None:
    """Freeze the patch embedding, the prefix tokens, the position embedding and blocks[:k]: a
    reducer at k leaves them as the teacher has them, so only the reducer and what follows learn.
    (A reducer's `blocks` container holds the untouched blocks 0..k-1 first, whatever its kind.)"""
    for p in model.parameters():
        p.requires_grad_(True)
    frozen = [model.patch_embed, *list(model.blocks)[: k or 0]]
    for module in frozen:
        module.requires_grad_(False)
    for name in ("cls_token", "reg_token", "pos_embed"):
        if isinstance(getattr(model, name, None), nn.Parameter):
            getattr(model, name).requires_grad_(False)


# (model, size, weights and their file's stamp, seed, head, data, device) -> the unreduced model's
# outputs on the held-out split, computed once per process (a sweep's worker probes many variants)
_TEACHER_OUTPUTS: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}


@torch.no_grad()
def held_out_outputs(model: nn.Module, data: ImageSet, device: str, batch_size: int = 256,
                     ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(pre-logits [N, D], logits [N, K]) of `model` on all of `data`, in eval mode."""
    model.to(device).eval()
    pre, logits = [], []
    for x, _ in iter_batches(data, np.arange(len(data)), batch_size, **batch_args(model)):
        p, z = outputs(model, normalize(x.to(device)))
        pre.append(p.float().cpu().numpy())
        logits.append(z.float().cpu().numpy())
    return np.concatenate(pre), np.concatenate(logits)


@torch.no_grad()
def agreement_of(student: tuple[np.ndarray, np.ndarray | None],
                 teacher: tuple[np.ndarray, np.ndarray], model: nn.Module) -> tuple[float, float]:  # fmt: skip
    """(top-1 agreement, mean pre-logit cosine) from both models' held-out outputs; a student's
    logits that are None are its head applied to its pre-logits (what `outputs` computes)."""
    s_pre, s_logits = student
    if s_logits is None:
        head = model.get_classifier()
        w = next(head.parameters(), None)
        x = torch.from_numpy(s_pre).to(w.device if w is not None else "cpu")
        s_logits = head(x).float().cpu().numpy()
    t_pre, t_logits = teacher
    same = float((s_logits.argmax(-1) == t_logits.argmax(-1)).mean())
    cos = F.cosine_similarity(torch.from_numpy(s_pre), torch.from_numpy(t_pre), dim=-1)
    return same, float(cos.mean())


@torch.no_grad()
def teacher_agreement(student: nn.Module, teacher: nn.Module, data: ImageSet, device: str,
                      batch_size: int = 256) -> tuple[float, float]:  # fmt: skip
    """(top-1 agreement, mean pre-logit cosine) of student and teacher on `data`: how much of the
    teacher a retrofitted variant keeps, label-free."""

    student.to(device).eval()
    teacher.to(device).eval()
    same = cos = 0.0
    idx = np.arange(len(data))
    for x, _ in iter_batches(data, idx, batch_size, **batch_args(student)):
        x = normalize(x.to(device))
        (s_pre, s_logits), (t_pre, t_logits) = outputs(student, x), outputs(teacher, x)
        same += (s_logits.argmax(-1) == t_logits.argmax(-1)).sum().item()
        cos += F.cosine_similarity(s_pre, t_pre, dim=-1).sum().item()
    return same / len(data), cos / len(data)


def _what(variant: Variant, steps: int, device: str, kind: str = "training") -> str:
    return f"{variant.model} {variant.name} ({steps} {kind} steps + probe on {device})"


def floor_check(variant: Variant, info: ModelInfo, steps: int, batch_size: int, device: str,
                budget_s: float | None) -> None:  # fmt: skip
    """BudgetExceeded if even a FLOP lower bound on training is over the budget.

    Instant (no model is built), so a hopeless run, ViT-B/16 training on a CPU, is refused in a
    second with the estimate and how to run it anyway.
    """
    floor = flops_floor_seconds(analytic_flops(info, variant), steps, batch_size, device)
    what = f"{_what(variant, steps, device)}, from its FLOPs at this device's matmul peak,"
    check_budget(floor, budget_s, what)


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
    data = load_splits(train_data, img_size=info.img_size[0], frames=info.clip_frames)[0]

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
