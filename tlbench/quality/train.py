"""The short train/adapt stage: train a variant for N steps, cached per variant; cost estimate first.

Recipe (shared/reference/cpu-demo-feasibility.md, where it took a depth-12 width-64 ViT off its
plateau): AdamW (0.9, 0.999), lr 3e-3, 10% linear warm-up then cosine to 0, weight decay 0.05 except
on norms, biases and position embeddings, grad-norm clip 1.0, random shifts of +-1/16 of the image
(+-2 px at 32 px) with a black border, bf16 autocast on CUDA only. Seeded: torch.manual_seed for the
step, a numpy generator for the batch order, a torch generator for the shifts.
"""

from __future__ import annotations

import functools
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tlbench import files
from tlbench.config import with_knobs
from tlbench.data.sources import ImageSet, iter_batches, normalize
from tlbench.errors import ConfigError, TLBenchError

ProgressFn = Callable[[int, int, float], None]  # (step done, total steps, loss)


class BudgetExceeded(TLBenchError):
    """The estimated time of a stage is over the budget. The library does not know how its caller
    sets the budget (`--budget N`, `--set quality.budget_s=N`): `advice(option)` says it."""

    def __init__(self, message: str, estimate_s: float) -> None:
        super().__init__(message)
        self.estimate_s = estimate_s

    def advice(self, option: str) -> str:
        """The message, then how to run anyway with the caller's own `option`."""
        sep = "=" if " " in option else " "  # "--set quality.budget_s=N" vs "--budget N"
        return (f"{self}; run it anyway with {option}{sep}0 (no limit) or "
                f"{option}{sep}{math.ceil(self.estimate_s * 1.25)}")  # fmt: skip


@dataclass(frozen=True)
class TrainResult:
    """What one training run did; `loaded` means a finished checkpoint was reused."""

    steps: int
    final_loss: float  # mean cross-entropy over the last 10% of steps (NaN for 0 steps)
    train_s: float  # wall time of this call's training (0 when loaded)
    ms_per_step: float
    loaded: bool


def batch_args(model: nn.Module) -> dict[str, Any]:
    """What iter_batches needs to shape data for a timm ViT: img_size, in_chans, and the frames
    of a video model's clips (None for an image model)."""
    pe = model.patch_embed
    return {"img_size": int(pe.img_size[0]), "in_chans": int(pe.proj.in_channels),
            "frames": getattr(pe, "num_frames", None)}  # fmt: skip


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups: decay on weight matrices only (not norms, biases, pos-embed, prefix tokens)."""
    skip = set(getattr(model, "no_weight_decay", set)())  # timm: pos_embed, cls_token, ...
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 or name.split(".")[-1] in skip else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def lr_factor(step: int, steps: int, warmup_frac: float) -> float:
    """Linear warm-up over warmup_frac of the steps, then cosine decay to 0."""
    warmup = max(1, round(steps * warmup_frac))
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def random_shift(x: torch.Tensor, max_px: int, generator: torch.Generator) -> torch.Tensor:
    """Shift each image [B, C, H, W] by its own integer (dy, dx) in [-max_px, max_px], zero fill.
    A clip [B, C, F, H, W] moves as a whole: every frame by its clip's (dy, dx)."""
    if max_px <= 0:
        return x
    if x.ndim == 5:
        return random_shift(x.flatten(1, 2), max_px, generator).view_as(x)
    b, c, h, w = x.shape
    padded = F.pad(x, (max_px,) * 4)  # [B, C, H + 2m, W + 2m]
    off = torch.randint(0, 2 * max_px + 1, (2, b), generator=generator).to(x.device)
    rows = off[0][:, None] + torch.arange(h, device=x.device)  # [B, H]
    cols = off[1][:, None] + torch.arange(w, device=x.device)  # [B, W]
    bi = torch.arange(b, device=x.device)[:, None, None, None]
    ci = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[bi, ci, rows[:, None, :, None], cols[:, None, None, :]]  # [B, C, H, W]


def _partial_path(path: Path) -> Path:
    return path.with_name(path.name + ".partial")


def _save_partial(path: Path, model: nn.Module, opt: torch.optim.Optimizer, sched: Any,
                  shift_gen: torch.Generator, config: dict, losses: list[float], step: int,
                  seconds: float) -> None:  # fmt: skip
    """Everything needed to continue bit-identically: weights, optimizer, schedule, RNG states."""
    files.save_torch({"state_dict": model.state_dict(), "optimizer": opt.state_dict(),
                      "scheduler": sched.state_dict(), "shift_rng": shift_gen.get_state(),
                      "torch_rng": torch.get_rng_state(), "config": config, "losses": losses,
                      "step": step, "seconds": seconds}, path)  # fmt: skip


def _load(path: Path | None, device: torch.device, weights_only: bool = True) -> dict | None:
    """A checkpoint we wrote, or None when absent or unreadable (zero bytes, foreign, truncated).

    Our own writes are atomic, so an unreadable file was damaged from outside: training again is
    the safe answer, and the next save replaces it.
    """
    if path is None or not path.is_file():
        return None
    try:
        state = torch.load(path, map_location=device, weights_only=weights_only)
    except Exception:  # torch raises many types for a damaged file (EOFError, RuntimeError, ...)
        warnings.warn(f"ignoring unreadable checkpoint {path}; training again", stacklevel=3)
        return None
    return state if isinstance(state, dict) else None


def _index_stream(n: int, count: int, seed: int) -> np.ndarray:
    """`count` indices: whole shuffled epochs of range(n) back to back."""
    rng = np.random.default_rng(seed)
    epochs = math.ceil(count / n)
    return np.concatenate([rng.permutation(n) for _ in range(epochs)])[:count]


@dataclass(frozen=True)
class TrainRecipe:
    """One training run's recipe (module docstring); with the data and the variant it keys the
    checkpoint, so a finished run is reused only for the same recipe."""

    steps: int
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 0.05
    warmup_frac: float = 0.1
    seed: int = 0


def _config(recipe: TrainRecipe, data: ImageSet, key: str, teacher: str | None = None) -> dict:
    """The recipe as the checkpoint records it (the keys and order every checkpoint has had)."""
    objective = {} if teacher is None else {"objective": f"distill:{teacher}"}  # labels: no key
    return {**objective, **asdict(recipe), "data": data.name, "variant": key}


def train(
    model: nn.Module,
    data: ImageSet,
    recipe: TrainRecipe | None = None,
    *,
    key: str | None = None,
    device: str | torch.device = "cpu",
    checkpoint_path: str | Path | None = None,
    callback: ProgressFn | None = None,
    num_workers: int = 0,
    save_every_s: float = 60.0,
    teacher: nn.Module | None = None,
    teacher_id: str = "teacher",
    **knobs: Any,
) -> TrainResult:
    """Train `model` in place on `data`, on its labels (cross-entropy) or, with a `teacher`,
    without them (distill_loss); leaves it in eval mode. Only parameters that require grad train.

    Args:
        model: a timm ViT whose head has `data.num_classes` outputs (already on `device` or not).
        data: the training split.
        recipe: steps, batch size, lr, weight decay, warm-up, seed (module docstring); `knobs`
            replace its fields, e.g. train(model, data, steps=100) in a notebook.
        key: what the checkpoint records the model as (the variant's name; default: its class).
        device: "cpu", "cuda", ...; bf16 autocast is used on CUDA only.
        checkpoint_path: if it holds a finished run with the same recipe, load it and skip training;
            otherwise train and write it (state dict, finished flag, final loss, recipe).
        callback: called after every step with (step, steps, loss).
        num_workers: DataLoader workers for lazy (folder/torchvision) data.
        save_every_s: with a checkpoint_path, also save the run in progress this often (0: every
            step), so a killed run resumes from its last save; resumed runs end bit-identical.
        teacher: a frozen model whose outputs the student matches (labels unused); one forward of
            it per step. teacher_id names it in the recipe, so a cache never mixes teachers.

    Returns:
        TrainResult.
    """
    device = torch.device(device)
    model.to(device)
    recipe = with_knobs(recipe or TrainRecipe(steps=0), "training", **knobs)
    steps, batch_size, lr, seed = recipe.steps, recipe.batch_size, recipe.lr, recipe.seed
    weight_decay, warmup_frac = recipe.weight_decay, recipe.warmup_frac
    config = _config(recipe, data, key or type(model).__name__, None if teacher is None else teacher_id)
    if teacher is not None:
        teacher.to(device).eval().requires_grad_(False)
    path = Path(checkpoint_path) if checkpoint_path is not None else None
    ckpt = _load(path, device)
    if ckpt is not None:
        if ckpt.get("finished") and ckpt.get("config") == config:
            try:
                model.load_state_dict(ckpt["state_dict"])
            except RuntimeError:
                raise ConfigError(f"checkpoint {path} does not fit this model; delete it") from None
            model.eval()
            return TrainResult(
                steps, float(ckpt["final_loss"]), 0.0, float(ckpt["ms_per_step"]), True
            )
    if steps <= 0:
        return TrainResult(0, math.nan, 0.0, math.nan, False)

    shape = batch_args(model)
    torch.manual_seed(seed)
    shift_gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=(0.9, 0.999))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, steps, warmup_frac))
    losses: list[float] = []
    done, spent = 0, 0.0  # steps and seconds before this call (resumed from a partial save)
    partial = _partial_path(path) if path is not None else None
    state = _load(partial, device, weights_only=False)  # RNG states and the optimizer: not tensors only
    if state is not None:
        if state.get("config") == config:
            model.load_state_dict(state["state_dict"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            shift_gen.set_state(state["shift_rng"])
            torch.set_rng_state(state["torch_rng"])
            losses, done, spent = list(state["losses"]), int(state["step"]), float(state["seconds"])
    order = _index_stream(len(data), steps * batch_size, seed)[done * batch_size :]
    batches = iter_batches(data, order, batch_size, **shape, num_workers=num_workers)
    model.train()
    start = last_save = time.perf_counter()
    for step, (x, y) in enumerate(batches, start=done):
        x = random_shift(x.to(device, non_blocking=True), round(shape["img_size"] / 16), shift_gen)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            if teacher is None:
                loss = F.cross_entropy(model(normalize(x)), y.to(device))
            else:
                loss = distill_loss(model, teacher, normalize(x))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if not math.isfinite(losses[-1]):
            raise TLBenchError(
                f"training diverged at step {step + 1} (loss {losses[-1]}); lower --lr"
            )
        now = time.perf_counter()
        if partial is not None and step + 1 < steps and now - last_save >= save_every_s:
            _save_partial(partial, model, opt, sched, shift_gen, config, losses, step + 1,
                          spent + now - start)  # fmt: skip
            last_save = now
        if callback is not None:
            callback(step + 1, steps, losses[-1])
    train_s = spent + time.perf_counter() - start
    model.eval()
    final = float(np.mean(losses[-max(1, steps // 10) :]))
    result = TrainResult(steps, final, train_s, 1000 * train_s / steps, False)
    if path is not None:
        _save(path, model, config, result)
        partial.unlink(missing_ok=True)
    return result


def outputs(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(pre-logits [B, D], logits [B, K]) of a timm ViT in one forward."""
    pre = model.forward_head(model.forward_features(x), pre_logits=True)
    return pre, model.head(pre)


def distill_loss(student: nn.Module, teacher: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Label-free retrofit: 1 - cosine of the pre-logits plus KL(teacher || student) of the logits.

    The cosine keeps the features a probe reads; the KL keeps the classifier's decisions. Both are
    0 when the student computes what the teacher does."""
    with torch.no_grad():
        t_pre, t_logits = outputs(teacher, x)
    s_pre, s_logits = outputs(student, x)
    cos = 1 - F.cosine_similarity(s_pre.float(), t_pre.float(), dim=-1).mean()
    kl = F.kl_div(s_logits.float().log_softmax(-1), t_logits.float().log_softmax(-1),
                  log_target=True, reduction="batchmean")  # fmt: skip
    return cos + kl


def is_finished(path: str | Path) -> bool:
    """Whether `path` holds a readable, finished training checkpoint (any recipe)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # train() says it once, when it retrains
        ckpt = _load(Path(path), torch.device("cpu"))
    return bool(ckpt and ckpt.get("finished"))


def _save(path: Path, model: nn.Module, config: dict, result: TrainResult) -> None:
    """Write the checkpoint atomically (tmp file + rename), so a crash never leaves half a file."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    files.save_torch({"state_dict": state, "finished": True, "config": config, **asdict(result)}, path)


@functools.cache
def matmul_macs_per_s(device: str = "cpu") -> float:
    """Multiply-adds per second of a 1024^3 fp32 matmul here: an upper bound on training speed."""
    dev = torch.device(device)
    a = torch.randn(1024, 1024, device=dev)
    best = float("inf")
    for _ in range(4):
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        t0 = time.perf_counter()
        a @ a
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        best = min(best, time.perf_counter() - t0)
    return 1024**3 / best


def flops_floor_seconds(macs_per_image: float, steps: int, batch_size: int, device: str = "cpu") -> float:
    """A lower bound on training time: forward + backward ~ 3x the forward MACs, at matmul peak.

    Instant, so a run that cannot fit its budget (ViT-B/16 on a CPU) is skipped in a second,
    before any model is built or step timed.
    """
    return steps * batch_size * 3 * macs_per_image / matmul_macs_per_s(device)


def measure_step_seconds(
    model: nn.Module,
    data: ImageSet,
    batch_size: int,
    device: str | torch.device = "cpu",
    *,
    min_steps: int = 3,
    min_seconds: float = 2.0,
    max_steps: int = 8,
    give_up_s: float | None = None,
) -> float:
    """Median seconds per training step at the real batch size, after one warm-up step.

    Measured at `batch_size`, never projected from a smaller batch: a fixed overhead or one slow
    step on a busy machine, multiplied by the batch ratio, once made a 3-minute run look like an
    hour. At least `min_steps` timed steps, more (up to `max_steps`) until `min_seconds` of them;
    the median shrugs off a step stalled by another process. The steps use lr 0, so the weights
    do not change. If the warm-up step alone takes over `give_up_s`, it is returned at once (the
    run is hopeless against its budget and needs no precise figure).
    """
    device = torch.device(device)
    was_training = model.training
    probe = model.to(device).train()
    opt = torch.optim.AdamW(probe.parameters(), lr=0.0)  # lr 0: a real step that changes nothing
    idx = np.arange(batch_size) % len(data)
    x, y = next(iter_batches(data, idx, batch_size, **batch_args(probe)))
    x, y = x.to(device), y.to(device) % _num_outputs(probe)

    def timed() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = F.cross_entropy(probe(normalize(x)), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - t0

    try:
        warmup = timed()  # one-time allocations and kernel choices: often 2x a later step
        if give_up_s is not None and warmup > give_up_s:
            return warmup
        times: list[float] = []
        while len(times) < min_steps or (sum(times) < min_seconds and len(times) < max_steps):
            times.append(timed())
        return float(np.median(times))
    finally:
        opt.zero_grad(set_to_none=True)
        probe.train(was_training)


def _num_outputs(model: nn.Module) -> int:
    return max(1, int(getattr(model, "num_classes", 1)))


def estimate_train_seconds(
    model: nn.Module,
    data: ImageSet,
    steps: int,
    batch_size: int,
    device: str | torch.device = "cpu",
) -> float:
    """Estimated wall time of `train(model, data, steps=steps, batch_size=batch_size)` in seconds."""
    return 0.0 if steps <= 0 else steps * measure_step_seconds(model, data, batch_size, device)


def format_seconds(seconds: float) -> str:
    """42 s, 3.1 min, 2.5 h, 4.2 days."""
    for unit, size in (("days", 86400), ("h", 3600), ("min", 60)):
        if seconds >= 2 * size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


def check_budget(estimate_s: float, budget_s: float | None, what: str) -> None:
    """Raise BudgetExceeded (one line: the estimate against the budget) if over a positive budget."""
    if budget_s is None or budget_s <= 0 or estimate_s <= budget_s:
        return
    raise BudgetExceeded(f"{what} is estimated at {format_seconds(estimate_s)}, over the budget of "
                         f"{format_seconds(budget_s)}", estimate_s)  # fmt: skip
