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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tlbench import files, results
from tlbench.config import SweepConfig, config_diff, from_dict, with_executor
from tlbench.core import Variant
from tlbench.data.sources import check_spec
from tlbench.errors import ConfigError
from tlbench.measure.throughput import resolve_device
from tlbench.quality.probe import (
    check_data_fits,
)
from tlbench.reducers import get_reducer
from tlbench.report.html import write_report
from tlbench.report.maps import run_maps
from tlbench.report.plots import plot_results
from tlbench.report.roofline import run_roofline
from tlbench.study import integrity, shards
from tlbench.study.executors import check_executor, run_jobs
from tlbench.study.manifest import manifest_for, run_id
from tlbench.study.stages import Book, run_stage
from tlbench.study.workers import Failure
from tlbench.variants import make_variants

Progress = Callable[..., None]  # progress(event, **info); events: plan, unit, skip, fail, train, status
STAGES = ("compute", "speed", "quality")


@dataclass(frozen=True)
class SweepResult:
    run_dir: Path
    skipped: tuple[str, ...]  # one line per skipped unit, with the reason
    failed: tuple[str, ...]  # one line per failed unit: error, message, log file
    figures: tuple[Path, ...]
    redone: tuple[str, ...] = ()  # one line per unit whose rows were lost after it finished, run again


def expand(config: SweepConfig) -> list[Variant]:
    """The variants of a sweep, model by model (model.names, or model.name alone): baseline first,
    then each method's (position x tokens x parameters) grid, deduplicated. A method's parameters
    come from grid.options, its own `sweep_defaults` filling what is absent."""
    return [v for _, variants in by_model(config) for v in variants]


def by_model(config: SweepConfig) -> list[tuple[SweepConfig, list[Variant]]]:
    """(a one-model copy of the config, that model's variants) per model of the sweep: each stage
    runs model by model, so a speedup is always against the model's own baseline."""
    return _grid(config)[0]


def impossible(config: SweepConfig) -> list[tuple[Variant, str]]:
    """The grid's (model, method, position, tokens) combinations that cannot exist, each with why
    (ToMe acts inside a block, so not at p = 1): left out of the run, and listed as skipped units
    in its ledger, its summary and its figures' notes."""
    return _grid(config)[1]


def _grid(config: SweepConfig) -> tuple[list[tuple[SweepConfig, list[Variant]]], list[tuple[Variant, str]]]:
    """Every valid variant per model, and the impossible combinations; a grid crossing methods
    and positions runs every valid pair and is refused only when none is valid."""
    g = config.grid
    positions = None if g.positions == "all" else list(g.positions)
    out, seen, bad = [], {}, []
    for name in config.model.models:
        m = dataclasses.replace(config.model, name=name, names=())
        variants = []
        for i, method in enumerate(g.methods):
            params = {**getattr(get_reducer(method), "sweep_defaults", {}), **g.options.get(method, {})}
            variants += make_variants(m.name, positions, list(g.tokens), baseline=g.baseline and i == 0,
                                      version=g.version, fuser=g.fuser, img_size=m.img_size,
                                      method=method, params=params, impossible=bad)  # fmt: skip
        resolved = variants[0].model if variants else name
        if resolved in seen:
            raise ConfigError(f"model.names: {seen[resolved]} and {name} are the same model ({resolved})")
        seen[resolved] = name
        out.append((dataclasses.replace(config, model=m), variants))
    if bad and not any(not v.is_baseline for _, variants in out for v in variants):
        reasons = list(dict.fromkeys(why for _, why in bad))
        raise ConfigError(reasons[0] if len(reasons) == 1 else
                          f"no (method, position) pair of the grid can exist: {'; '.join(reasons)}")  # fmt: skip
    return out, bad


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
    lost: list[integrity.Lost] = []
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
            lost = integrity.reopen_lost(run_dir)  # done units whose rows.jsonl lines are gone
            if folded := shards.fold(run_dir):  # units that jobs finished after their submitter left
                emit("status", text=f"folded {folded} finished units from {shards.SHARDS}/")
        result = _run(config, variants, run_dir, emit)
    several = len(config.model.models) > 1
    redone = [f"{x.stage} {f'{x.model} ' if several else ''}{x.variant}: {x.reason()}; run again" for x in lost]
    return dataclasses.replace(result, redone=tuple(redone))


def check_inputs(config: SweepConfig) -> None:
    """Refuse in one line, before any work, what would only fail later (a missing data folder)."""
    for section in (config.speed, config.quality):  # --device cuda on a machine without one
        if section.enabled:
            resolve_device(section.device)

    if config.executor.kind != "inline":

        check_executor(config.executor)
    ckpt = config.model.checkpoint
    if ckpt is not None and not Path(ckpt).is_file():
        raise ConfigError(f"model.checkpoint: no such file {ckpt} (a relative path is from the current directory)")
    q = config.quality
    if q.enabled:
        specs = ([q.train_data] if q.steps else []) + list(q.probe_data)
        for spec in specs:
            check_spec(spec)

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
    groups, bad = _grid(config)
    book = Book(run_dir, emit, several=len(groups) > 1)
    record_impossible(bad, stages, book)
    if config.executor.kind != "inline":  # jobs (tlbench/executors.py); this process folds

        run_jobs(config, groups, todo, book)
        return SweepResult(run_dir, tuple(book.skipped), tuple(book.failed), draw(run_dir, book))
    for stage in STAGES:
        for sub, mine in groups:  # stage by stage (cheap results first), model by model
            left = [v for v in todo.get(stage, []) if v in mine]
            if left:
                run_stage(stage, sub, mine, left, book)
    figures = draw(run_dir, book)
    return SweepResult(run_dir, tuple(book.skipped), tuple(book.failed), figures)


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


def draw(run_dir: Path, book: Book | None = None) -> tuple[Path, ...]:
    """The run's figures from its rows, each noting the units it lacks, the maps of its trained
    TokenLearners, and its report.html. Inside a sweep (`book` given) a plotting error is logged
    as a failure of its own, never the end of the run."""
    df = results.load_results(run_dir)
    if df.empty:
        return ()
    written: list[Path] = []

    def report() -> list[Path]:
        write_report([run_dir])  # RUN_DIR/report.html, refreshed by --resume; not a figure
        return []

    for what, make in (
        ("figures", lambda: plot_results(df, run_dir / "figures", results.not_done(run_dir),
                                         adapt=results.adapt_mode(run_dir))),  # fmt: skip
        ("maps", lambda: run_maps(run_dir)),  # the trained TokenLearners' maps, from checkpoints
        ("roofline", lambda: run_roofline(df, run_dir / "figures")),  # speed rows with roofline metrics
        ("report", report),  # last: it embeds the maps drawn above
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


