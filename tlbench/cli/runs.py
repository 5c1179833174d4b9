"""Commands on runs: sweep, plot, report, check, compare, recommend, status. Each parses, makes one
library call and renders; heavy modules load inside the command."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from rich.console import Console

from tlbench.cli.app import (
    app,
    check_format,
    console,
    emit_records,
    err_console,
    parse_floats,
    parse_ints,
    user_errors,
)
from tlbench.cli.progress import SweepProgress, interruptible
from tlbench.errors import ConfigError


@app.command()
def sweep(
    config: Path | None = typer.Argument(None, help="A sweep file (sweeps/*.toml). Default: the built-in study."),
    model: str | None = typer.Option(None, "--model", "-m", help="Override the model (alias or timm name); a comma list runs several."),
    positions: str | None = typer.Option(None, help="Override the positions, comma list; 'all' = every block."),
    tokens: str | None = typer.Option(None, help="Override the token counts, comma list."),
    device: str | None = typer.Option(None, help="Device for speed and quality: auto, cpu, cuda."),
    set_: list[str] = typer.Option([], "--set", help="Override any key: --set quality.steps=100 (TOML value)."),
    out: Path = typer.Option(Path("results"), help="Results root; the run goes to OUT/NAME/RUN_ID/."),
    resume: Path | None = typer.Option(None, help="Finish this run directory (no row is duplicated; failed and skipped units run again)."),
    executor: str | None = typer.Option(None, help="Where units run: inline (this process, the default), local (jobs on this machine), slurm (cluster jobs), debug (submitit in-process). Overrides executor.kind."),
) -> None:
    """Run the placement study: compute, speed and quality per variant, then the figures.

    Exit code 0 when every unit ran or was skipped (with a reason), 1 when a unit failed (one line
    each; the rest of the run is kept), 2 on bad input, 130 when interrupted (resume it).
    """
    bar = SweepProgress()
    with user_errors(), interruptible(bar):
        from tlbench.report import tables

        overrides = list(set_)
        names = [n.strip() for n in (model or "").split(",") if n.strip()]
        if len(names) > 1:  # several models: model.names (it replaces model.name)
            overrides.append("model.names=[" + ", ".join(f'"{n}"' for n in names) + "]")
        elif names:
            overrides.append(f'model.name="{names[0]}"')
        if positions:
            pos = '"all"' if positions.strip() == "all" else str(parse_floats(positions, "--positions"))
            overrides.append("grid.positions=" + pos)
        if tokens:
            overrides.append(f"grid.tokens={parse_ints(tokens, '--tokens')}")
        if device:
            overrides += [f'speed.device="{device}"', f'quality.device="{device}"']
        from tlbench.config import load_sweep

        given = resume is None or bool(config or overrides)  # --resume alone: the run's own config
        from tlbench.study.sweep import stored_config

        base = stored_config(resume) if resume is not None and config is None else None  # --set over the run's own
        cfg = load_sweep(config, overrides, base=base) if given else None
        if cfg is not None and model and config is None and cfg.name == "default":
            from dataclasses import replace

            cfg = replace(cfg, name="-".join(names))  # a folder name: no commas
        from tlbench.study.sweep import run_sweep

        with bar:
            result = run_sweep(cfg, out, resume=resume, progress=bar.event, executor=executor)
        from tlbench.results import load_results, read_units

        df, units = load_results(result.run_dir), read_units(result.run_dir)
    for line in result.skipped:
        err_console.print(f"[yellow]skipped:[/] {line}", highlight=False, soft_wrap=True)
    for line in result.redone:
        err_console.print(f"[yellow]redone:[/] {line}", highlight=False, soft_wrap=True)
    Console(width=max(console.width, 120)).print(tables.summary_grid(df, units).rich())  # readable when piped too
    console.print(f"results: {result.run_dir}/rows.jsonl, {result.run_dir}/results.csv", soft_wrap=True)
    if result.figures:
        console.print(f"figures: {result.run_dir / 'figures'}/ ({len(result.figures)} files)")
    if (result.run_dir / "report.html").is_file():
        console.print(f"report: {result.run_dir / 'report.html'}", soft_wrap=True)
    for line in result.failed:
        err_console.print(f"[bold red]failed:[/] {line}", highlight=False, soft_wrap=True)
    if result.failed:
        err_console.print(f"{len(result.failed)} unit(s) failed; the others' results are kept. "
                          f"Retry them with: tlbench sweep --resume {result.run_dir}",
                          highlight=False, soft_wrap=True)  # fmt: skip
        raise typer.Exit(code=1)


@app.command()
def plot(
    run_dir: Path = typer.Argument(..., help="A run directory (holds manifest.json, rows.jsonl)."),
    out: Path | None = typer.Option(None, help="Where to write the figures (default RUN_DIR/figures)."),
) -> None:
    """Render the paper-style figures (PNG + PDF) from a run's results table."""
    with user_errors():
        from tlbench.report.plots import plot_results
        from tlbench.results import adapt_mode, load_results, not_done

        written = plot_results(load_results(run_dir), out or run_dir / "figures", not_done(run_dir),
                               adapt=adapt_mode(run_dir))  # fmt: skip
    for path in written:
        console.print(str(path))
    if not written:
        err_console.print("no rows to plot yet")


@app.command()
def report(
    run_dirs: list[Path] = typer.Argument(..., help="One run directory, or several to compare (the first is the reference)."),
    out: Path | None = typer.Option(None, help="The HTML file (default RUN_DIR/report.html; for several runs ./compare.html)."),
) -> None:
    """Write one self-contained HTML page (offline, no CDN): the run's answer, interactive figures,
    tables, budgets, what did not run and the manifest; several runs side by side with compare's verdict."""
    with user_errors():
        from tlbench.report.html import write_report

        path = write_report(run_dirs, out)
    console.print(f"report: {path} ({path.stat().st_size / 1e6:.2f} MB)", soft_wrap=True)


@app.command()
def check(
    baseline: Path = typer.Option(..., "--baseline", help="A committed compute baseline (results/baselines/*.json)."),
    update: bool = typer.Option(False, "--update", help="Rewrite the baseline with the current counts."),
    tolerance: float | None = typer.Option(None, help="Relative tolerance on each FLOP ratio (default: the file's)."),
    fmt: str = typer.Option("table", "--format", help="table or markdown."),
) -> None:
    """CI gate: exit 1 when FLOP savings shrink, a variant goes missing or zero-counted ops change."""
    with user_errors():
        from tlbench.report import tables

        if fmt not in ("table", "markdown"):
            raise ConfigError(f"--format must be table or markdown; got {fmt!r}")
        from tlbench.study.check import run_check

        findings, passed = run_check(baseline, update=update, tolerance=tolerance)
    verdict = "updated" if update else ("passed" if passed else "FAILED")
    grid = tables.check_grid(findings, baseline, verdict)
    if fmt == "markdown":
        failed = [r for r, f in zip(grid.rows, findings, strict=True) if f.failed or f.status != "ok"]
        print(grid.markdown(failed or grid.rows).replace(f"against {baseline}: {verdict}", f"{verdict} ({len(findings)} checks, {len(failed)} not ok)", 1), end="")
    else:
        Console(width=max(console.width, 140)).print(grid.rich())
    if not passed:
        raise typer.Exit(code=1)


@app.command()
def compare(
    run: Path = typer.Argument(..., help="A run directory, e.g. a fresh `tlbench sweep`."),
    reference: Path = typer.Argument(..., help="The run it must reproduce, e.g. the committed one."),
    acc_tol: float | None = typer.Option(None, help="Largest accepted difference of a variant's mean few-shot accuracy on a probe set (fraction; default: the measured cross-machine spread, results/README.md)."),
    per_shots: bool = typer.Option(False, "--per-shots", help="Compare every shot count, not their mean (stricter; for runs on one machine kind)."),
    fmt: str = typer.Option("table", "--format", help="table or markdown."),
) -> None:
    """Does RUN reproduce REFERENCE? Compute must be equal, mean accuracies within --acc-tol, and
    every unit of the reference present; exit 1 if not. Speed and timings are not compared."""
    with user_errors():
        from tlbench.report import tables

        if fmt not in ("table", "markdown"):
            raise ConfigError(f"--format must be table or markdown; got {fmt!r}")
        from tlbench.report.compare import ACC_TOL, compare_runs, passed

        findings = compare_runs(run, reference, acc_tol=ACC_TOL if acc_tol is None else acc_tol,
                                per_shots=per_shots)  # fmt: skip
    ok = passed(findings)
    grid = tables.compare_grid(findings, run, reference, ok)
    if fmt == "markdown":
        print(grid.markdown().replace("### ", "### tlbench compare: ", 1), end="")
    else:
        Console(width=max(console.width, 140)).print(grid.rich() if grid.rows else grid.title)
    if not ok:
        raise typer.Exit(code=1)


@app.command()
def recommend(
    run_dir: Path = typer.Argument(..., help="A run directory (finished or partial)."),
    max_gflops: float | None = typer.Option(None, "--max-gflops", help="GFLOPs per image at most (fvcore)."),
    min_speedup: float | None = typer.Option(None, "--min-speedup", help="Speedup over the baseline at least, met by its 95% interval's lower bound."),
    max_accuracy_drop: float | None = typer.Option(None, "--max-accuracy-drop", help="Points of few-shot accuracy below the baseline at most, on every probe set chosen."),
    dataset: list[str] = typer.Option([], "--dataset", help="Probe set(s) to judge accuracy on (repeatable or comma list; default: every one the run probed)."),
    shots: int | None = typer.Option(None, "--shots", help="Shot count (default: 5 if measured, else the largest)."),
    show_all: bool = typer.Option(False, "--all", help="Also list the variants over budget."),
    model: str | None = typer.Option(None, "--model", "-m", help="Only this model's variants (a run of several models)."),
    fmt: str = typer.Option("table", "--format", help="table, json or csv."),
) -> None:
    """Which variants fit a compute / speed / accuracy budget, ranked, Pareto front marked.

    Variants lacking a metric a budget needs are listed as 'not measured'. JSON and CSV hold
    every variant with its verdict (fits, not measured, over budget).
    """
    with user_errors():
        from tlbench.report import tables

        check_format(fmt)
        from tlbench.report.recommend import FITS, OVER, Budget, to_records
        from tlbench.report.recommend import recommend as run_recommend

        datasets = [d.strip() for item in dataset for d in item.split(",") if d.strip()]
        budget = Budget(max_gflops, min_speedup, max_accuracy_drop)
        frame = run_recommend(run_dir, budget, datasets=datasets or None, shots=shots, model=model)
    records = to_records(frame)
    limits = [f"GFLOPs ≤ {max_gflops:g}" if max_gflops is not None else "",
              f"speedup (95% lower bound) ≥ {min_speedup:g}×" if min_speedup is not None else "",
              f"accuracy drop ≤ {max_accuracy_drop:g} pt" if max_accuracy_drop is not None else ""]  # fmt: skip
    table = tables.recommend_grid(run_dir, frame, records, limits, show_all, FITS, OVER).rich()
    if fmt == "table":
        Console(width=max(console.width, 160)).print(table)
    else:
        emit_records(records, fmt)


@app.command()
def status(
    run_dir: Path = typer.Argument(..., help="A run directory."),
    fmt: str = typer.Option("table", "--format", help="table or json."),
) -> None:
    """Each unit of a run: done, skipped, failed or not started; and whether a process runs it.

    Exit code 0 when every unit is done or skipped (nothing left to run), 1 when a unit failed or
    has not run yet (also while a sweep is still working on it), 2 on bad input.
    """
    with user_errors():
        from tlbench.report import tables

        if fmt not in ("table", "json"):
            raise ConfigError(f"--format must be table or json; got {fmt!r}")
        from tlbench.study.status import run_status

        st = run_status(run_dir)
    if fmt == "json":
        sys.stdout.write(json.dumps(st.to_dict(), indent=2) + "\n")
    else:
        table = tables.status_grid(run_dir, st).rich()
        Console(width=max(console.width, 120)).print(table)
        console.print(st.summary(), highlight=False, soft_wrap=True)
    if not st.complete:
        raise typer.Exit(code=1)
