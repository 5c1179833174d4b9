"""The placement study: expand a SweepConfig into variants and run compute, speed and quality,
unit by unit, recording each unit as it finishes so that a killed run resumes where it stopped.

A unit is (model, variant, stage). Its rows are appended to rows.jsonl, then its outcome to the
run's ledger (results.UNITS): done, skipped with the reason, or failed with the error and a log
file holding the traceback. A failing unit never takes the others down: the figures are drawn
from what exists and the caller gets one line per failed unit. One process works on a run at a
time (files.RunLock), and `--resume` retries every unit that is not done.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tlbench import files, results, shards
from tlbench.config import SweepConfig, config_diff, from_dict, with_executor
from tlbench.errors import ConfigError, TLBenchError
from tlbench.manifest import manifest_for, run_id
from tlbench.models import Variant, make_variants
from tlbench.workers import Failure, WorkerPool, send

Progress = Callable[..., None]  # progress(event, **info); events: plan, unit, skip, fail, train, status
STAGES = ("compute", "speed", "quality")


@dataclass(frozen=True)
class SweepResult:
    run_dir: Path
    skipped: tuple[str, ...]  # one line per skipped unit, with the reason
    failed: tuple[str, ...]  # one line per failed unit: error, message, log file
    figures: tuple[Path, ...]


def expand(config: SweepConfig) -> list[Variant]:
    """The variants of a sweep, model by model (model.names, or model.name alone): baseline first,
    then each method's (position x tokens x parameters) grid, deduplicated. A method's parameters
    come from grid.options, its own `sweep_defaults` filling what is absent."""
    return [v for _, variants in by_model(config) for v in variants]


def by_model(config: SweepConfig) -> list[tuple[SweepConfig, list[Variant]]]:
    """(a one-model copy of the config, that model's variants) per model of the sweep: each stage
    runs model by model, so a speedup is always against the model's own baseline."""
    from tlbench.reducers import get_reducer

    g = config.grid
    positions = None if g.positions == "all" else list(g.positions)
    out, seen = [], {}
    for name in config.model.models:
        m = dataclasses.replace(config.model, name=name, names=())
        variants = []
        for i, method in enumerate(g.methods):
            params = {**getattr(get_reducer(method), "sweep_defaults", {}), **g.options.get(method, {})}
            variants += make_variants(m.name, positions, list(g.tokens), baseline=g.baseline and i == 0,
                                      version=g.version, fuser=g.fuser, img_size=m.img_size,
                                      method=method, params=params)  # fmt: skip
        resolved = variants[0].model if variants else name
        if resolved in seen:
            raise ConfigError(f"model.names: {seen[resolved]} and {name} are the same model ({resolved})")
        seen[resolved] = name
        out.append((dataclasses.replace(config, model=m), variants))
    return out


def stored_config(run_dir: str | Path) -> SweepConfig:
    """The config a run was made with, from its manifest."""
    path = Path(run_dir) / results.MANIFEST
    return from_dict(results.read_manifest(Path(run_dir))["config"], str(path))


def run_sweep(
    config: SweepConfig | None,
    out: str | Path = "results",
    *,
    resume: str | Path | None = None,
    progress: Progress | None = None,
    executor: str | None = None,
) -> SweepResult:
    """Run (or resume) a sweep; rows land in `<out>/<name>/<run_id>/rows.jsonl`.

    Args:
        config: the sweep. When resuming: None, or a config equal to the run's own (anything
            that differs is refused, naming the keys: one run is one experiment).
        out: results root.
        resume: an existing run directory to finish; units not done (missing, cut short by a
            kill, skipped or failed) run again, and no row is duplicated.
        progress: optional callback, progress(event: str, **info).
        executor: where the units run (inline, local, slurm, debug), over the config's
            executor.kind; it may differ from the run's own on --resume.

    From a script, call it under `if __name__ == "__main__":`: on a CPU the training workers are
    spawned processes, which import the main module again (notebooks need nothing).
    """
    emit = progress or (lambda event, **info: None)
    if resume is not None:
        run_dir = Path(resume)
        stored = stored_config(run_dir)
        diff = config_diff(stored, config) if config is not None else []
        if diff:
            raise ConfigError(f"--resume {run_dir}: the run was made with other settings "
                              f"({'; '.join(diff)}); start a new run for these")  # fmt: skip
        config = stored if config is None else dataclasses.replace(stored, executor=config.executor)
    elif config is None:
        raise ConfigError("no sweep config given, and no run to resume")
    if executor is not None:
        config = with_executor(config, executor)
    check_inputs(config)
    variants = expand(config)
    if resume is None:
        where = files.inside(out, config.name, run_id(config))
        run_dir = files.new_dir(where.parent, where.name)  # -2, -3 when started in the same second
    with files.RunLock(run_dir):
        if resume is None:
            results.write_manifest(run_dir, manifest_for(config, variants, run_dir.name))
        else:
            if results.repair_tail(run_dir):
                emit("status", text="dropped a truncated last row (the run was killed mid-write)")
            results.read_rows(run_dir)  # a corrupt middle line stops here, naming file:line
            if dropped := results.drop_unfinished(run_dir):
                emit("status", text=f"dropped {dropped} rows of units a kill cut short; redoing them")
            if folded := shards.fold(run_dir):  # units that jobs finished after their submitter left
                emit("status", text=f"folded {folded} finished units from {shards.SHARDS}/")
        return _run(config, variants, run_dir, emit)


def check_inputs(config: SweepConfig) -> None:
    """Refuse in one line, before any work, what would only fail later (a missing data folder)."""
    from tlbench.data import check_spec
    from tlbench.throughput import resolve_device

    for section in (config.speed, config.quality):  # --device cuda on a machine without one
        if section.enabled:
            resolve_device(section.device)
    if config.executor.kind != "inline":
        from tlbench.executors import check_executor

        check_executor(config.executor)
    ckpt = config.model.checkpoint
    if ckpt is not None and not Path(ckpt).is_file():
        raise ConfigError(f"model.checkpoint: no such file {ckpt} (a relative path is from the current directory)")
    q = config.quality
    if q.enabled:
        specs = ([q.train_data] if q.steps else []) + list(q.probe_data)
        for spec in specs:
            check_spec(spec)
        from tlbench.quality import check_data_fits

        for name in config.model.models:
            check_data_fits(name, specs, config.model.img_size)
        if q.adapt != "scratch" and q.steps and not config.grid.baseline:
            raise ConfigError(f"quality.adapt = {q.adapt} inserts every reducer into the trained baseline: "
                              "set grid.baseline = true (or quality.steps = 0 with model.pretrained)")


def _run(config: SweepConfig, variants: list[Variant], run_dir: Path, emit: Progress) -> SweepResult:
    done = results.done_units(run_dir)
    stages = [s for s in STAGES if getattr(config, s).enabled]
    emit("plan", total=len(stages) * len(variants), run_dir=run_dir)
    todo = {s: [v for v in variants if (v.model, v.name, s) not in done] for s in stages}
    emit("unit", advance=sum(len(variants) - len(todo[s]) for s in stages))
    groups = by_model(config)
    book = Book(run_dir, emit, several=len(groups) > 1)
    if config.executor.kind != "inline":  # jobs (tlbench/executors.py); this process folds
        from tlbench.executors import run_jobs

        run_jobs(config, groups, todo, book)
        return SweepResult(run_dir, tuple(book.skipped), tuple(book.failed), draw(run_dir, book))
    for stage, run in (("compute", _compute), ("speed", _speed), ("quality", _quality)):
        for sub, mine in groups:  # stage by stage (cheap results first), model by model
            left = [v for v in todo.get(stage, []) if v in mine]
            if not left:
                continue
            if stage == "speed":
                _speed(sub, mine, left, book)
            else:
                run(sub, left, book)
    figures = draw(run_dir, book)
    return SweepResult(run_dir, tuple(book.skipped), tuple(book.failed), figures)


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
        self.record(v, stage, "done", rows, rows=len(rows))
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


def draw(run_dir: Path, book: Book | None = None) -> tuple[Path, ...]:
    """The run's figures from its rows, each noting the units it lacks, and the maps of its
    trained TokenLearners. Inside a sweep (`book` given) a plotting error is logged as a failure
    of its own, never the end of the run."""
    from tlbench.maps import run_maps
    from tlbench.plots import plot_results

    df = results.load_results(run_dir)
    if df.empty:
        return ()
    written: list[Path] = []
    for what, make in (
        ("figures", lambda: plot_results(df, run_dir / "figures", results.not_done(run_dir),
                                         adapt=results.adapt_mode(run_dir))),  # fmt: skip
        ("maps", lambda: run_maps(run_dir)),  # the trained TokenLearners' maps, from checkpoints
    ):
        try:
            written += make()
        except Exception as e:
            if book is None:
                raise
            failure = Failure.of(e)
            log = run_dir / "logs" / f"{what}.log"
            files.write_text(log, failure.traceback)
            book.failed.append(f"{what}: {failure.line()} (traceback: {log})")
    return tuple(written)


def _compute(config: SweepConfig, todo: list[Variant], book: Book) -> None:
    from tlbench.flops import variant_flops
    from tlbench.models import build_sharing, model_info

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


def _speed(config: SweepConfig, variants: list[Variant], todo: list[Variant], book: Book) -> None:
    """Time the variants interleaved; the baseline is always timed with them, for the speedup."""
    from tlbench.models import build_sharing
    from tlbench.throughput import Speedup, speedup_interval, time_interleaved

    s, m = config.speed, config.model
    timed = [v for v in variants if v.is_baseline or v in todo]
    book.status(f"speed: building {len(timed)} models")
    try:
        models = build_sharing(timed, m.img_size)
        timings = time_interleaved(
            models, batch_size=s.batch_size, device=s.device, dtype=s.dtype, compile=s.compile,
            rounds=s.rounds, time_cap_s=s.time_cap_s,
            reference="baseline" if "baseline" in models else None,
            progress=lambda text: book.status(f"speed: {text}"),
        )  # fmt: skip
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
                     host=t.host, gpu=t.gpu)  # where it was timed: a cluster's speed job names its node
        rows = [results.make_row(v, "speed", "throughput", t.images_per_s, **extra),
                results.make_row(v, "speed", "latency_ms", t.latency_ms, **extra,
                                 ci_low=t.latency_ms_p10, ci_high=t.latency_ms_p90)]  # fmt: skip
        if base is not None:  # the baseline against itself is 1 exactly, not a measurement
            sp = Speedup(1.0, 1.0, 1.0, t.rounds, True) if v.is_baseline else speedup_interval(base, t)
            rows.append(results.make_row(v, "speed", "speedup", sp.value, **extra, ci_low=sp.low,
                                         ci_high=sp.high, reliable=sp.reliable))  # fmt: skip
        book.done(v, "speed", rows)


def _quality(config: SweepConfig, todo: list[Variant], book: Book) -> None:
    """Train + probe each variant; with workers > 1, in spawned processes splitting the cores.

    The cost is estimated once, here, for the whole stage: variants that cannot fit the budget
    even at the matmul peak are skipped before anything is built; then two variants are timed at
    the real batch with the threads a worker will have, and the others placed between them by
    FLOPs (quality.step_seconds_by_flops). The most expensive variants go first (longest-
    processing-time order balances the workers).
    """
    import torch

    from tlbench.adapt import BudgetExceeded
    from tlbench.flops import analytic_flops
    from tlbench.models import model_info
    from tlbench.quality import adapt_steps, floor_check
    from tlbench.throughput import resolve_device

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
    from tlbench.quality import step_seconds_by_flops

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
    from tlbench.adapt import is_finished
    from tlbench.quality import backbone_init, checkpoint_name

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
    from tlbench.adapt import BudgetExceeded
    from tlbench.quality import run_probe_variant

    q, m = config.quality, config.model
    inserted = q.adapt != "scratch" and not v.is_baseline
    try:
        res = run_probe_variant(
            v, dataclasses.replace(q, device=device), pretrained=m.pretrained,
            checkpoint_path=backbone if inserted and backbone is not None else m.checkpoint,
            img_size=m.img_size, checkpoint_dir=run_dir / "checkpoints", seed=config.seed,
            step_seconds=step_s, callback=lambda step, steps, loss: report(step=step, steps=steps, loss=loss),
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
        kind = "quality_init" if stage == "init" else "quality"
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
