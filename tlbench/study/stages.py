"""The three stages of a sweep, each over a list of variants of one model: compute (exact FLOPs),
speed (interleaved timing), quality (train or adapt, then probe). A Book records each unit's
outcome (rows, then its ledger line; a job's ShardBook writes a shard instead), so the inline path
and every executor run the same stage functions: `run_stage` is the one dispatch.
"""


from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tlbench import files, results
from tlbench.backbones.vit import model_info
from tlbench.config import SweepConfig
from tlbench.core import Variant
from tlbench.errors import TLBenchError
from tlbench.measure.flops import analytic_flops, variant_flops
from tlbench.measure.roofline import roofline_rows
from tlbench.measure.throughput import Speedup, resolve_device, speedup_interval, time_interleaved
from tlbench.quality.probe import (
    adapt_steps,
    backbone_init,
    checkpoint_name,
    floor_check,
    run_probe_variant,
    step_seconds_by_flops,
)
from tlbench.quality.train import BudgetExceeded, is_finished
from tlbench.study import integrity
from tlbench.study.workers import Failure, WorkerPool, send
from tlbench.variants import build_sharing

Progress = Callable[..., None]  # progress(event, **info); events: plan, unit, skip, fail, train, status


def record_impossible(bad: list[tuple[Variant, str]], stages: list[str], book: Book) -> None:
    """Each impossible combination as a skipped unit per stage in the ledger (once; a resume finds
    them there), and one line each for the caller."""
    units = results.read_units(book.run_dir)
    for v, why in bad:
        reason = f"cannot exist: {why}"
        for stage in stages:
            if (v.model, v.name, stage) not in units:
                book.record(v, stage, "skipped", reason=reason)
        book.skipped.append(f"{book.label(v)} ({v.method} at p = {v.position:g}, every stage): {reason}")


class Book:
    """Records each unit's outcome (rows, then its ledger line), reports progress, and keeps the
    lines the caller prints for skipped and failed units."""

    def __init__(self, run_dir: Path, emit: Progress, several: bool = False) -> None:
        self.run_dir, self.emit = run_dir, emit
        self.several = several  # several models: lines and log files name the model too
        self.skipped: list[str] = []
        self.failed: list[str] = []

    def record(self, v: Variant, stage: str, status: str, table: list[dict[str, Any]] | None = None,
               /, **info: Any) -> None:  # fmt: skip
        """Where a unit's outcome goes: its rows, then its ledger line (a job's book: its shard)."""
        if table:
            results.append_rows(self.run_dir, table)
        results.record_unit(self.run_dir, v.model, v.name, stage, status, **info)

    def done(self, v: Variant, stage: str, rows: list[dict[str, Any]]) -> None:
        self.record(v, stage, "done", rows, rows=len(rows), keys=integrity.digest(rows))
        self.emit("unit", advance=1, stage=stage, variant=v.name)

    def skip(self, v: Variant, stage: str, reason: str) -> None:
        self.record(v, stage, "skipped", reason=reason)
        self.skipped.append(f"{stage} {self.label(v)}: {reason}")
        self.emit("skip", stage=stage, variant=v.name, reason=reason)
        self.emit("unit", advance=1, stage=stage, variant=v.name)

    def fail(self, vs: Sequence[Variant], stage: str, failure: Failure) -> None:
        for v in vs:
            log = files.inside(self.run_dir, "logs", f"{stage}-{self.label(v, '-')}.log")
            files.write_text(log, failure.traceback or failure.line() + "\n")
            self.record(v, stage, "failed", error=failure.error, reason=failure.line(),
                        log=log.relative_to(self.run_dir).as_posix())  # fmt: skip
            self.failed.append(f"{stage} {self.label(v)}: {failure.line()} (traceback: {log})")
            self.emit("fail", stage=stage, variant=v.name, reason=failure.line())
            self.emit("unit", advance=1, stage=stage, variant=v.name)

    def status(self, text: str) -> None:
        self.emit("status", text=text)

    def label(self, v: Variant, sep: str = " ") -> str:
        """The variant's name, after its model's when the run has several."""
        return f"{v.model}{sep}{v.name}" if self.several else v.name


def compute(config: SweepConfig, todo: list[Variant], book: Book) -> None:

    book.status(f"compute: {len(todo)} variants")
    try:
        info = model_info(config.model.name, config.model.img_size)
        models = build_sharing(todo, config.model.img_size)
    except Exception as e:
        book.fail(todo, "compute", Failure.of(e))
        return
    cache: dict = {}  # each distinct (module, token count) traced once for all variants
    for v in todo:
        try:
            r = variant_flops(info, v, models[v.name], cache)
        except Exception as e:
            book.fail([v], "compute", Failure.of(e))
            continue
        book.done(v, "compute", [results.make_row(v, "compute", m, getattr(r, m))
                                 for m in ("gflops", "gflops_analytic", "params_m")])  # fmt: skip


def speed(config: SweepConfig, variants: list[Variant], todo: list[Variant], book: Book) -> None:
    """Time the variants interleaved; the baseline is always timed with them, for the speedup."""

    s, m = config.speed, config.model
    timed = [v for v in variants if v.is_baseline or v in todo]
    book.status(f"speed: building {len(timed)} models")
    try:
        models = build_sharing(timed, m.img_size)
        timings = time_interleaved(models, s, reference="baseline" if "baseline" in models else None,
                                   progress=lambda text: book.status(f"speed: {text}"))  # fmt: skip
    except TLBenchError as e:  # e.g. out of memory even at batch 1: nothing to time here
        for v in todo:
            book.skip(v, "speed", str(e))
        return
    except Exception as e:
        book.fail(todo, "speed", Failure.of(e))
        return
    base = timings.get("baseline")
    for v in todo:
        t = timings[v.name]
        extra = dict(batch_size=t.batch_size, device=t.device_name, dtype=t.dtype, attn_kernel=t.attn_kernel,
                     host=t.host, gpu=t.gpu,  # where it was timed: a cluster's speed job names its node
                     compile=t.compile_mode or "eager", cuda_graphs=t.cuda_graphs)  # fmt: skip
        rows = [results.make_row(v, "speed", "throughput", t.images_per_s, **extra),
                results.make_row(v, "speed", "latency_ms", t.latency_ms, **extra,
                                 ci_low=t.latency_ms_p10, ci_high=t.latency_ms_p90)]  # fmt: skip
        if base is not None:  # the baseline against itself is 1 exactly, not a measurement
            sp = Speedup(1.0, 1.0, 1.0, t.rounds, True) if v.is_baseline else speedup_interval(base, t)
            rows.append(results.make_row(v, "speed", "speedup", sp.value, **extra, ci_low=sp.low,
                                         ci_high=sp.high, reliable=sp.reliable))  # fmt: skip
        if t.peak_tflops is not None:

            rows += roofline_rows(v, t, timings, m.img_size, extra)
        book.done(v, "speed", rows)


def quality(config: SweepConfig, todo: list[Variant], book: Book) -> None:
    """Train + probe each variant; with workers > 1, in spawned processes splitting the cores.

    The cost is estimated once, here, for the whole stage: variants that cannot fit the budget
    even at the matmul peak are skipped before anything is built; then two variants are timed at
    the real batch with the threads a worker will have, and the others placed between them by
    FLOPs (quality.step_seconds_by_flops). The most expensive variants go first (longest-
    processing-time order balances the workers).
    """
    import torch


    q, m = config.quality, config.model
    try:
        device = str(resolve_device(q.device))
        info = model_info(m.name, m.img_size)
    except Exception as e:
        book.fail(todo, "quality", Failure.of(e))
        return
    order = sorted(todo, key=lambda v: -analytic_flops(info, v))
    workers, threads = plan_workers(q.workers, q.threads, len(order), device)
    runnable = []
    for v in order:
        try:
            floor_check(v, info, adapt_steps(q, v), q.batch_size, device, q.budget_s)
            runnable.append(v)
        except BudgetExceeded as e:
            book.skip(v, "quality", e.advice(BUDGET_OPTION))
    if not runnable:
        return
    threads_before = torch.get_num_threads()
    torch.set_num_threads(threads)  # the recipe's thread count: float rounding depends on it
    try:
        _train_and_probe(config, runnable, book, device, workers, threads)
    finally:
        torch.set_num_threads(threads_before)


def _train_and_probe(config: SweepConfig, runnable: list[Variant], book: Book, device: str,
                     workers: int, threads: int) -> None:  # fmt: skip

    q, m = config.quality, config.model
    book.status(f"quality: timing training steps ({threads} thread(s)) for the cost estimate")
    hopeless = q.budget_s / max(q.steps, 1) * 10 if q.budget_s and q.budget_s > 0 else None
    try:
        step_s = step_seconds_by_flops(
            runnable, train_data=q.train_data if q.steps else q.probe_data[0],
            batch_size=q.batch_size, device=device, img_size=m.img_size, give_up_s=hopeless,
        )  # fmt: skip
    except Exception as e:
        book.fail(runnable, "quality", Failure.of(e))
        return

    def finish(v: Variant, out: list[dict[str, Any]] | str | Failure) -> None:
        if isinstance(out, Failure):
            book.fail([v], "quality", out)
        elif isinstance(out, str):
            book.skip(v, "quality", out)
        else:
            book.done(v, "quality", out)

    if q.adapt in ("none", "distill"):  # the baseline first; every reducer is inserted into it
        base = [v for v in runnable if v.is_baseline]
        _run_units(config, base, book, device, workers, threads, step_s, finish)
        backbone = trained_baseline(config, runnable[0].model, book.run_dir)
        rest = [v for v in runnable if not v.is_baseline]
        if backbone is None and q.steps:  # (0 steps: the model's own weights, nothing to load)
            why = "no trained baseline to insert it into (its quality unit did not finish)"
            for v in rest:
                book.fail([v], "quality", Failure("MissingBaseline", why, ""))
            return
        _run_units(config, rest, book, device, workers, threads, step_s, finish, backbone)
    else:
        _run_units(config, runnable, book, device, workers, threads, step_s, finish)


def _run_units(config: SweepConfig, units: list[Variant], book: Book, device: str, workers: int,
               threads: int, step_s: dict[str, float], finish: Callable[..., None],
               backbone: Path | None = None) -> None:  # fmt: skip
    """Quality units in this process (one worker) or in a pool of spawned workers."""
    if not units:
        return
    if workers == 1:
        for v in units:
            book.status(f"quality {v.name}")
            report = functools.partial(book.emit, "train", variant=v.name)
            try:
                out = quality_unit(v, config, book.run_dir, device, step_s[v.name], report, backbone)
            except Exception as e:
                out = Failure.of(e)
            finish(v, out)
        return
    workers = min(workers, len(units))
    book.status(f"quality: {len(units)} variants on {workers} workers x {threads} threads")
    task = functools.partial(_quality_task, config=config, run_dir=book.run_dir, device=device,
                             step_s=step_s, backbone=backbone)  # fmt: skip
    with WorkerPool(workers, threads, functools.partial(book.emit, "train")) as pool:
        for v, out in pool.run(task, units):
            finish(v, out)


def trained_baseline(config: SweepConfig, model: str, run_dir: Path) -> Path | None:
    """The baseline's finished training checkpoint in this run (quality.adapt = none or distill
    inserts every reducer into it); None if it has none. With 0 steps the baseline is not trained: the model's
    own weights (pretrained or initial) are used, and the path is None too."""

    q, m = config.quality, config.model
    if not q.steps:
        return None
    init = backbone_init(m.checkpoint, m.pretrained)
    base = Variant(model, None, None, None)
    path = run_dir / "checkpoints" / checkpoint_name(base, q.train_data, q.steps, config.seed, init)
    return path if is_finished(path) else None


BUDGET_OPTION = "--set quality.budget_s"  # how a sweep's user raises the budget


def quality_unit(v: Variant, config: SweepConfig, run_dir: Path, device: str, step_s: float | None,
                 report: Callable[..., None], backbone: Path | None = None,
                 ) -> list[dict[str, Any]] | str:  # fmt: skip
    """One variant's quality stage -> its rows, or the one-line reason it is over budget.

    With quality.adapt = none or distill a reducer is inserted into `backbone` (the trained
    baseline's checkpoint; None: the model's own weights), then probed at once or distilled from
    that baseline first."""

    q, m = config.quality, config.model
    inserted = q.adapt != "scratch" and not v.is_baseline
    try:
        start = dataclasses.replace(m, checkpoint=str(backbone)) if inserted and backbone is not None else m
        res = run_probe_variant(
            v, dataclasses.replace(q, device=device), start, checkpoint_dir=run_dir / "checkpoints",
            seed=config.seed, step_seconds=step_s,
            callback=lambda step, steps, loss: report(step=step, steps=steps, loss=loss),
        )  # fmt: skip
    except BudgetExceeded as e:
        return e.advice(BUDGET_OPTION)
    rows = [
        # "quality_init" is the reference before training; with 0 steps the probe IS the quality
        results.make_row(v, "quality_init" if r.stage == "init" and res.train else "quality", "fewshot_acc",
                         r.accuracy, dataset=r.dataset, shots=r.shots, seed=r.seed, device=device)
        for r in res.records
    ]  # fmt: skip
    extra = dict(dataset=q.train_data, batch_size=q.batch_size, device=device, seed=config.seed)
    for stage, (agree, cosine) in res.agreement.items():  # distilled: how much of the teacher it keeps
        kind = "quality_init" if stage == "init" and res.train else "quality"
        rows += [results.make_row(v, kind, "teacher_agreement", agree, **extra),
                 results.make_row(v, kind, "teacher_cosine", cosine, **extra)]  # fmt: skip
    if res.train is not None:
        rows += [results.make_row(v, "quality", "adapt_loss", res.train.final_loss, **extra),
                 results.make_row(v, "quality", "adapt_seconds", res.train.train_s, **extra),
                 results.make_row(v, "quality", "estimate_seconds", res.train_estimate_s, **extra)]  # fmt: skip
    return rows


def _quality_task(v: Variant, *, config: SweepConfig, run_dir: Path, device: str,
                  step_s: dict[str, float], backbone: Path | None = None,
                  ) -> list[dict[str, Any]] | str:  # fmt: skip
    """quality_unit in a worker process; progress goes to the parent every 5th step."""

    def report(**info: Any) -> None:
        if info.get("step", 0) % 5 == 0 or info.get("step") == info.get("steps"):
            send(variant=v.name, **info)

    return quality_unit(v, config, run_dir, device, step_s.get(v.name), report, backbone)


def plan_workers(workers: int | str, threads: int | None, units: int, device: str) -> tuple[int, int]:
    """(processes, CPU threads each) for the quality stage: one process on CUDA; on a CPU, 'auto'
    fills the cores with `threads`-thread processes, never more processes than units."""
    cores = _cores()
    if device.startswith("cuda"):
        return 1, threads or cores
    n = max(1, cores // (threads or 1)) if workers == "auto" else int(workers)
    n = max(1, min(n, units))
    return n, threads or max(1, cores // n)


def _cores() -> int:
    if hasattr(os, "sched_getaffinity"):  # respects taskset and container CPU sets
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1



def run_stage(stage: str, config: SweepConfig, variants: list[Variant], todo: list[Variant], book: Book) -> None:
    """Run `todo` of one stage for one model; speed times the baseline with them (`variants`: all
    of the model's), the other stages run `todo` alone."""
    if stage == "speed":
        speed(config, variants, todo, book)
    elif stage == "compute":
        compute(config, todo, book)
    else:
        quality(config, todo, book)
