"""The placement study: expand a SweepConfig into variants and run compute, speed and quality,
appending rows as each unit finishes so that a killed run resumes where it stopped."""

from __future__ import annotations

import dataclasses
import functools
import os
import platform
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tlbench import results
from tlbench.config import SweepConfig, from_dict, to_dict
from tlbench.errors import ConfigError, ResultsError, TLBenchError
from tlbench.models import Variant, make_variants

Progress = Callable[..., None]  # progress(event, **info); events: plan, unit, skip, train, status
STAGES = ("compute", "speed", "quality")


@dataclass(frozen=True)
class SweepResult:
    run_dir: Path
    skipped: tuple[str, ...]  # one line per skipped unit, with the reason
    figures: tuple[Path, ...]


def expand(config: SweepConfig) -> list[Variant]:
    """The variants of a sweep: baseline first, then the (position x tokens) grid, deduplicated."""
    g, m = config.grid, config.model
    positions = None if g.positions == "all" else list(g.positions)
    return make_variants(m.name, positions, list(g.tokens), baseline=g.baseline, version=g.version,
                         fuser=g.fuser, img_size=m.img_size)  # fmt: skip


def run_sweep(
    config: SweepConfig,
    out: str | Path = "results",
    *,
    resume: str | Path | None = None,
    progress: Progress | None = None,
) -> SweepResult:
    """Run (or resume) a sweep; rows land in `<out>/<name>/<run_id>/rows.jsonl`.

    Args:
        config: the sweep; ignored when resuming (the run's manifest holds the config).
        out: results root.
        resume: an existing run directory to finish without duplicating rows.
        progress: optional callback, progress(event: str, **info).
    """
    emit = progress or (lambda event, **info: None)
    if resume is not None:
        run_dir = Path(resume)
        manifest = results.read_manifest(run_dir)
        try:
            config = from_dict(manifest["config"], f"{run_dir / results.MANIFEST}")
        except KeyError:
            raise ResultsError(f"{run_dir / results.MANIFEST}: no 'config' entry") from None
        if results.repair_tail(run_dir):
            emit("status", text="dropped a truncated last row (the run was killed mid-write)")
        results.read_rows(run_dir)  # a corrupt middle line stops here, naming file:line
    variants = expand(config)
    if resume is None:
        run_dir = Path(out) / config.name / run_id(config)
        if run_dir.exists():
            raise ConfigError(f"run directory {run_dir} exists already; use --resume {run_dir}")
        results.write_manifest(run_dir, manifest_for(config, variants, run_dir.name))
    done = results.done_units(run_dir)
    stages = [s for s in STAGES if getattr(config, s).enabled]
    emit("plan", total=len(stages) * len(variants), run_dir=run_dir)
    todo = {s: [v for v in variants if (v.model, v.name, s) not in done] for s in stages}
    emit("unit", advance=sum(len(variants) - len(todo[s]) for s in stages))
    skipped: list[str] = []

    if todo.get("compute"):
        _compute(config, todo["compute"], run_dir, emit)
    if todo.get("speed"):
        _speed(config, variants, todo["speed"], run_dir, emit, skipped)
    if todo.get("quality"):
        skipped += _quality(config, todo["quality"], run_dir, emit)

    figures: tuple[Path, ...] = ()
    df = results.load_results(run_dir)
    if not df.empty:
        from tlbench.plots import plot_results

        figures = tuple(plot_results(df, run_dir / "figures"))
    return SweepResult(run_dir, tuple(skipped), figures)


def _compute(config: SweepConfig, todo: list[Variant], run_dir: Path, emit: Progress) -> None:
    from tlbench.flops import iter_variant_flops

    emit("status", text=f"compute: {len(todo)} variants")
    for v, r in zip(todo, iter_variant_flops(todo, config.model.img_size), strict=True):
        rows = [results.make_row(v, "compute", m, getattr(r, m))
                for m in ("gflops", "gflops_analytic", "params_m")]  # fmt: skip
        results.append_rows(run_dir, rows)
        emit("unit", advance=1, stage="compute", variant=v.name)


def _speed(config: SweepConfig, variants: list[Variant], todo: list[Variant], run_dir: Path,
           emit: Progress, skipped: list[str]) -> None:  # fmt: skip
    """Time the variants interleaved; the baseline is always timed with them, for the speedup."""
    from tlbench.models import build_sharing
    from tlbench.throughput import paired_speedup, time_interleaved

    s, m = config.speed, config.model
    timed = [v for v in variants if v.is_baseline or v in todo]
    emit("status", text=f"speed: building {len(timed)} models")
    models = build_sharing(timed, m.img_size)
    try:
        timings = time_interleaved(
            models, batch_size=s.batch_size, device=s.device, dtype=s.dtype, compile=s.compile,
            rounds=s.rounds, progress=lambda text: emit("status", text=f"speed: {text}"),
        )  # fmt: skip
    except TLBenchError as e:
        skipped.append(f"speed: {e}")
        emit("skip", stage="speed", reason=str(e))
        return
    base = timings.get("baseline")
    rows = []
    for v in todo:
        t = timings[v.name]
        extra = dict(batch_size=t.batch_size, device=t.device_name, dtype=t.dtype)
        rows += [results.make_row(v, "speed", "throughput", t.images_per_s, **extra),
                 results.make_row(v, "speed", "latency_ms", t.latency_ms, **extra)]  # fmt: skip
        if base is not None:
            rows.append(results.make_row(v, "speed", "speedup", paired_speedup(base, t), **extra))
    results.append_rows(run_dir, rows)
    emit("unit", advance=len(todo), stage="speed")


def _quality(config: SweepConfig, todo: list[Variant], run_dir: Path, emit: Progress) -> list[str]:
    """Train + probe each variant; with workers > 1, in spawned processes splitting the cores.

    The most expensive variants go first (longest-processing-time order balances the workers).
    Each finished variant's rows are appended by this process, so a kill loses only those in flight.
    """
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from tlbench.flops import analytic_flops
    from tlbench.models import model_info
    from tlbench.throughput import resolve_device

    device = str(resolve_device(config.quality.device))
    info = model_info(config.model.name, config.model.img_size)
    order = sorted(todo, key=lambda v: -analytic_flops(info, v))
    workers = 1 if device.startswith("cuda") else min(config.quality.workers, len(order))
    skipped: list[str] = []

    def finish(v: Variant, rows: list[dict[str, Any]], skip: str | None) -> None:
        if skip:
            skipped.append(skip)
            emit("skip", stage="quality", variant=v.name, reason=skip)
        results.append_rows(run_dir, rows)
        emit("unit", advance=1, stage="quality", variant=v.name)

    if workers == 1:
        for v in order:
            emit("status", text=f"quality {v.name}")
            report = functools.partial(emit, "train", variant=v.name)
            finish(v, *quality_unit(v, config, run_dir, device, None, report))
        return skipped
    threads = max(1, (os.cpu_count() or 1) // workers)
    ctx = mp.get_context("spawn")  # fork after torch has run threads can deadlock
    with ctx.Manager() as manager, ProcessPoolExecutor(workers, mp_context=ctx) as pool:
        events = manager.Queue()
        listener = threading.Thread(target=_relay, args=(events, emit), daemon=True)
        listener.start()
        futures = {pool.submit(_quality_worker, v, config, run_dir, device, threads, events): v
                   for v in order}  # fmt: skip
        emit("status", text=f"quality: {len(order)} variants on {workers} workers x {threads} threads")
        try:
            for fut in as_completed(futures):
                finish(futures[fut], *fut.result())
        finally:
            events.put(None)
            listener.join(timeout=5)
    return skipped


def quality_unit(v: Variant, config: SweepConfig, run_dir: Path, device: str, threads: int | None,
                 report: Callable[..., None]) -> tuple[list[dict[str, Any]], str | None]:  # fmt: skip
    """One variant's quality stage -> (rows, None), or ([], one-line reason) when it cannot run."""
    import torch

    from tlbench.quality import run_probe_variant

    if threads:
        torch.set_num_threads(threads)
    q, m = config.quality, config.model
    try:
        res = run_probe_variant(
            v, train_data=q.train_data, probe_data=q.probe_data, steps=q.steps,
            batch_size=q.batch_size, lr=q.lr, shots=q.shots, seeds=q.seeds, l2_reg=q.l2_reg,
            device=device, pretrained=m.pretrained, checkpoint_path=m.checkpoint,
            img_size=m.img_size, budget_s=q.budget_s, init_reference=q.init_reference,
            checkpoint_dir=run_dir / "checkpoints", seed=config.seed,
            budget_option="--set quality.budget_s",
            callback=lambda step, steps, loss: report(step=step, steps=steps, loss=loss),
        )  # fmt: skip
    except TLBenchError as e:
        return [], f"quality {v.name}: {e}"
    rows = [
        # "quality_init" is the reference before training; with 0 steps the probe IS the quality
        results.make_row(v, "quality_init" if r.stage == "init" and res.train else "quality", "fewshot_acc",
                         r.accuracy, dataset=r.dataset, shots=r.shots, seed=r.seed, device=device)
        for r in res.records
    ]  # fmt: skip
    if res.train is not None:
        extra = dict(dataset=q.train_data, batch_size=q.batch_size, device=device, seed=config.seed)
        rows += [results.make_row(v, "quality", "adapt_loss", res.train.final_loss, **extra),
                 results.make_row(v, "quality", "adapt_seconds", res.train.train_s, **extra)]  # fmt: skip
    return rows, None


def _quality_worker(v: Variant, config: SweepConfig, run_dir: Path, device: str, threads: int,
                    events: Any) -> tuple[list[dict[str, Any]], str | None]:  # fmt: skip
    def report(**info: Any) -> None:
        if info.get("step", 0) % 5 == 0 or info.get("step") == info.get("steps"):
            events.put({"variant": v.name, **info})  # every 5th step: the queue is a pipe

    return quality_unit(v, config, run_dir, device, threads, report)


def _relay(events: Any, emit: Progress) -> None:
    while (item := events.get()) is not None:
        emit("train", **item)


def run_id(config: SweepConfig) -> str:
    """YYYYmmdd-HHMMSS-<device>: the environment is part of the name (as timm's result files)."""
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{_slug(device_label(config.speed.device))}"


def device_label(device: str) -> str:
    import torch

    if device != "cpu" and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return "cpu"


def manifest_for(config: SweepConfig, variants: list[Variant], rid: str) -> dict[str, Any]:
    """Everything needed to reproduce the run: resolved config, versions, git SHA, device."""
    import fvcore
    import timm
    import torch

    import tlbench

    return {
        "run_id": rid,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config": to_dict(config),
        "variants": [dict(dataclasses.asdict(v), name=v.name) for v in variants],
        "versions": {
            "tlbench": tlbench.__version__, "torch": torch.__version__, "timm": timm.__version__,
            "fvcore": getattr(fvcore, "__version__", "unknown"), "python": platform.python_version(),
        },  # fmt: skip
        "git_sha": git_sha(),
        "device": {"name": device_label(config.speed.device), "cpu": platform.processor() or platform.machine(),
                   "cores": os.cpu_count(), "cuda": torch.cuda.is_available()},  # fmt: skip
        "argv": sys.argv,
    }


def git_sha() -> str | None:
    """The checkout's commit, if tlbench runs from one (+ '-dirty' with uncommitted changes)."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5, check=True).stdout.strip()  # fmt: skip
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return sha + ("-dirty" if dirty else "")


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:24] or "device"

