"""Thin Typer CLI: parse, make one library call, render with rich.

Heavy modules (torch, timm, fvcore, pandas) are imported inside the commands so that
`tlbench --help` starts fast.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from tlbench.config import QualityConfig
from tlbench.errors import ConfigError, TLBenchError

Q = QualityConfig()  # `probe` takes its option defaults from the one record of quality settings
METHOD_HELP = ("Token reduction method: tokenlearner, patchmerger, pool, random, topk, evit, "
               "tome (merge N patch tokens to S in block k) or tome_r (merge r per block from k "
               "on; needs --param r=R; S is then derived) (tlbench/reducers/); S is the number "
               "of tokens it keeps.")
PARAM_HELP = "A method parameter, NAME=INTEGER (repeatable; a name given twice is a grid): r=13 for tome_r."
app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="tlbench: where in a Vision Transformer should tokens be reduced, and what does it buy?",
)
console = Console()
err_console = Console(stderr=True)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn a TLBenchError into one line on stderr and exit code 2 (no traceback)."""
    try:
        yield
    except TLBenchError as e:
        err_console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        raise typer.Exit(code=2) from None


def parse_floats(text: str | None, what: str) -> list[float] | None:
    """'0,0.25,1' -> [0.0, 0.25, 1.0]; None stays None."""
    if text is None:
        return None
    try:
        return [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise ConfigError(f"{what}: expected a comma-separated list of numbers, got {text!r}") from None


def parse_params(items: list[str]) -> dict[str, list[int]]:
    """['r=13', 'r=8'] -> {'r': [13, 8]}: each --param NAME=INTEGER, values of a name in order."""
    out: dict[str, list[int]] = {}
    for item in items:
        name, sep, raw = item.partition("=")
        try:
            value = int(raw.strip())
        except ValueError:
            value = None
        if not sep or not name.strip() or value is None:
            raise ConfigError(f"--param expects NAME=INTEGER (e.g. r=13), got {item!r}")
        out.setdefault(name.strip(), []).append(value)
    return out


def parse_ints(text: str | None, what: str) -> list[int] | None:
    """'8,16' -> [8, 16]; None stays None."""
    if text is None:
        return None
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise ConfigError(f"{what}: expected a comma-separated list of integers, got {text!r}") from None


def check_format(fmt: str) -> str:
    if fmt not in ("table", "json", "csv"):
        raise ConfigError(f"--format must be one of table, json, csv; got {fmt!r}")
    return fmt


def emit_records(records: list[dict[str, Any]], fmt: str, table: Table | None = None) -> None:
    """Print records as JSON (a list), CSV, or the given rich table."""
    if fmt == "json":
        sys.stdout.write(json.dumps(records, indent=2) + "\n")
    elif fmt == "csv":
        import csv

        if records:
            writer = csv.DictWriter(sys.stdout, fieldnames=list(records[0]))
            writer.writeheader()
            writer.writerows(records)
    elif table is not None:
        console.print(table)


# ---- commands -------------------------------------------------------------------------
# (each command: parse -> one library call -> render)


@app.command()
def models(
    all_timm: bool = typer.Option(False, "--all", help="Also list every timm ViT name tlbench accepts."),
) -> None:
    """List model aliases and which timm ViTs work."""
    from tlbench.models import (
        ALIASES,
        CUSTOM_MODELS,
        DESCRIPTIONS,
        REPATCHED,
        VIDEO_MODELS,
        model_info,
        vit_names,
    )

    table = Table(title="tlbench model aliases (any timm VisionTransformer name works too)")
    for col in ("alias", "model", "depth", "width", "heads", "patch", "img", "tokens"):
        table.add_column(col, justify="left" if col in ("alias", "model") else "right")
    for alias in [*CUSTOM_MODELS, *ALIASES, *REPATCHED, *VIDEO_MODELS, "dinov2_s14"]:
        i = model_info(alias)
        table.add_row(alias, DESCRIPTIONS.get(alias, i.name), str(i.depth), str(i.embed_dim),
                      str(i.num_heads), str(i.patch_size), str(i.img_size[0]),
                      f"{i.num_patches}+{i.num_prefix_tokens}")  # fmt: skip
    console.print(table)
    names = vit_names()
    if all_timm:
        console.print("\n".join(names))
    else:
        console.print(f"{len(names)} timm VisionTransformer models are accepted by name "
                      "(`tlbench models --all` lists them).")  # fmt: skip


@app.command()
def flops(
    model: str = typer.Option(..., "--model", "-m", help="Alias (see `tlbench models`) or timm ViT name."),
    positions: str | None = typer.Option(
        None, help="Relative positions p in [0,1], comma list. Default: every block index 0..depth."
    ),
    tokens: str = typer.Option("8,16", help="Numbers of learned tokens S, comma list."),
    img_size: int | None = typer.Option(None, help="Input size (default: the model's)."),
    frames: int | None = typer.Option(None, help="Video models: frames per clip (default: the model's)."),
    version: str = typer.Option("1.1", "--version", help="TokenLearner version: 1.1 or 1.0."),
    fuser: bool = typer.Option(False, help="TokenLearner + TokenFuser in every layer from p on."),
    method: str = typer.Option("tokenlearner", "--method", help=METHOD_HELP),
    param: list[str] = typer.Option([], "--param", help=PARAM_HELP),
    baseline: bool = typer.Option(True, "--baseline/--no-baseline", help="Include the unmodified model."),
    fmt: str = typer.Option("table", "--format", help="table, json or csv."),
) -> None:
    """Count GFLOPs (fvcore, 1 multiply-add = 1 FLOP, every op accounted) and parameters per variant."""
    with user_errors():
        check_format(fmt)
        pos, toks = parse_floats(positions, "--positions"), parse_ints(tokens, "--tokens")
        from tlbench.flops import count_variants
        from tlbench.models import VIDEO_MODELS, make_variants

        variants = make_variants(model, pos, toks, baseline=baseline, version=version, fuser=fuser,
                                 img_size=img_size, method=method, params=parse_params(param),
                                 frames=frames)  # fmt: skip
        rows = count_variants(variants, img_size, frames)
    records = [{k: v for k, v in vars(r).items() if k != "zero_ops"} for r in rows]
    base = next((r["gflops"] for r in records if r["variant"] == "baseline"), None)
    for r in records:
        r["flops_ratio"] = r["gflops"] / base if base else None
    per = "clip" if variants[0].model in VIDEO_MODELS else "image"
    table = Table(title=f"{records[0]['model']} @ {records[0]['img_size']} px: GFLOPs per {per} "
                        "(fvcore, 1 multiply-add = 1 FLOP)")  # fmt: skip
    for col in ("variant", "p", "block", "S", "GFLOPs", "analytic", "× baseline", "params (M)"):
        table.add_column(col, justify="left" if col in ("model", "variant") else "right")
    for r in records:
        table.add_row(
            r["variant"], _fmt(r["position"], "{:.4g}"), _fmt(r["block_index"]),
            _fmt(r["num_tokens"]), f"{r['gflops']:.3f}", f"{r['gflops_analytic']:.3f}",
            _fmt(r["flops_ratio"], "{:.3f}"), f"{r['params_m']:.2f}",
        )  # fmt: skip
    emit_records(records, fmt, table)


@app.command("compare-models")
def compare_models(
    model: list[str] = typer.Option(..., "--model", "-m", help="A model to count with TokenLearner (repeatable)."),
    positions: str = typer.Option("0.5,0.75", help="Relative positions p, comma list."),
    tokens: str = typer.Option("8,16", help="Numbers of learned tokens S, comma list."),
    reference: list[str] = typer.Option([], "--reference", "-r", help="A model counted plain only (repeatable)."),
    version: str = typer.Option("1.1", "--version", help="TokenLearner version: 1.1 or 1.0."),
    out: Path | None = typer.Option(None, help="Write compute.csv/.json and compute.png/.pdf here."),
) -> None:
    """GFLOPs and parameters of several models, with TokenLearner and plain, in one table."""
    with user_errors():
        from tlbench.compare_models import compare_models as count
        from tlbench.compare_models import label, write_comparison

        pos, toks = parse_floats(positions, "--positions") or [], parse_ints(tokens, "--tokens") or []
        rows = count(model, pos, toks, reference, version=version)
        written = write_comparison(rows, out) if out is not None else []
    table = Table(title="GFLOPs per image (fvcore, 1 multiply-add = 1 FLOP) and parameters")
    for col in ("model", "img", "tokens after", "GFLOPs", "params (M)"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for r in rows:
        table.add_row(label(r), str(r.img_size), _fmt(r.num_tokens), f"{r.gflops:.3f}", f"{r.params_m:.2f}")
    console.print(table)
    if written:
        console.print(f"written: {', '.join(str(p) for p in written)}", soft_wrap=True)


@app.command()
def maps(
    run_dir: Path | None = typer.Argument(None, help="A sweep's run directory (with --variant or --all)."),
    variant: str | None = typer.Option(None, "--variant", help="Variant name in RUN_DIR, e.g. p0.25-s8."),
    every: bool = typer.Option(False, "--all", help="Every trained TokenLearner of RUN_DIR (built-in data): "
                               "RUN_DIR/figures/maps-NAME.png/.pdf and maps.csv, as a sweep writes them."),
    checkpoint: Path | None = typer.Option(None, "--checkpoint", help="A training checkpoint (.pt) instead of a run."),
    model: str = typer.Option("vit_cpu6", "--model", "-m", help="With --checkpoint: the model it was trained as."),
    position: float | None = typer.Option(None, help="With --checkpoint: relative position p of the TokenLearner."),
    tokens: int = typer.Option(8, help="With --checkpoint: number of learned tokens S."),
    version: str = typer.Option("1.1", "--version", help="With --checkpoint: TokenLearner version 1.1 or 1.0."),
    fuser: bool = typer.Option(False, help="With --checkpoint: trained with the TokenFuser."),
    img_size: int | None = typer.Option(None, help="With --checkpoint: input size (default: the model's)."),
    images: Path | None = typer.Option(None, "--images", help="A folder of images (default: built-in digits)."),
    count: int = typer.Option(4, help="How many images (one digit per class by default)."),
    threshold: float = typer.Option(0.5, help="Digit pixels: gray value above this (built-in digits only)."),
    out: Path = typer.Option(Path("maps"), help="Output path without suffix: OUT.png and OUT.pdf."),
) -> None:
    """Draw each learned token's map over a few images (no training: stored weights only)."""
    with user_errors():
        from tlbench import maps as lib

        if every:
            if run_dir is None or variant or checkpoint is not None or images is not None:
                raise ConfigError("--all takes RUN_DIR alone (no --variant, --checkpoint or --images)")
            written = lib.run_maps(run_dir, threshold=threshold)
            if not written:
                raise ConfigError(f"no maps for {run_dir}: it needs TokenLearner variants with training "
                                  "checkpoints, trained on built-in data (else use --variant and --images)")
            console.print("\n".join(str(p) for p in written), soft_wrap=True)
            return
        if (run_dir is None) == (checkpoint is None):
            raise ConfigError("give RUN_DIR --variant NAME, or --checkpoint PATH with the variant options")
        if run_dir is not None:
            if not variant:
                raise ConfigError("RUN_DIR needs --variant NAME (e.g. p0.25-s8) or --all")
            source = lib.from_run(run_dir, variant)
        else:
            source = lib.from_checkpoint(checkpoint, model, position, tokens, version, fuser, img_size)
        imgs = None
        if images is not None:
            from tlbench.models import model_info

            info = model_info(source.variant.model, source.img_size)
            if info.time_steps > 1:
                raise ConfigError("--images is for image models; a video model's maps are drawn on Moving MNIST clips")
            imgs = lib.folder_images(images, info.img_size[0], count)
        paths, mass = lib.render_maps(source, imgs, out, threshold, count)
    console.print(f"maps of {source.variant.model} {source.variant.name} from {source.checkpoint}", soft_wrap=True)
    if mass is not None and "tracking_best" in mass:
        console.print(f"tracking score (map mass in the digit's box over the box's area share; 1.0 = uniform): "
                      f"best token {mass['tracking_best']:.2f}, mean {mass['tracking_mean']:.2f}", soft_wrap=True)
    elif mass is not None:
        console.print(f"digit mass: the tokens put {mass['mass_on_digit']:.1%} of their weight on digit pixels, "
                      f"which cover {mass['area_of_digit']:.1%} of the image ({mass['ratio']:.2f}x; "
                      f"{mass['tokens_above_area']:.0%} of tokens above the area share)", soft_wrap=True)  # fmt: skip
    console.print(f"figure: {', '.join(str(p) for p in paths)}", soft_wrap=True)


def _fmt(value: Any, spec: str = "{}") -> str:
    return "–" if value is None else spec.format(value)


@app.command()
def bench(
    model: str = typer.Option(
        ..., "--model", "-m", help="Alias (see `tlbench models`) or timm ViT name."
    ),
    positions: str = typer.Option(
        "0,0.25,0.5,0.75", help="Relative positions p in [0,1], comma list."
    ),
    tokens: str = typer.Option("8", help="Numbers of learned tokens S, comma list."),
    method: str = typer.Option("tokenlearner", "--method", help=METHOD_HELP),
    param: list[str] = typer.Option([], "--param", help=PARAM_HELP),
    batch_size: str = typer.Option(
        "auto",
        help="Images per forward pass, or 'auto': CUDA, largest that fits from 1024 down; CPU, 8.",
    ),
    dtype: str = typer.Option(
        "float32", help="float32 (TF32 off), or bfloat16 / float16 autocast."
    ),
    compile_: bool = typer.Option(False, "--compile", help="Time torch.compile'd models."),
    device: str = typer.Option("auto", help="auto (CUDA if present), cpu, cuda or cuda:N."),
    rounds: int | None = typer.Option(None, help="Timed rounds (default: adaptive: at least 5 on a CPU, 10 on CUDA, more until every speedup's 95% interval is within ±5% or --time-cap is spent)."),
    time_cap: float | None = typer.Option(None, "--time-cap", help="Seconds of adaptive timing at most (default 60)."),
    threads: int | None = typer.Option(None, help="CPU threads (default: all cores)."),
    fmt: str = typer.Option("table", "--format", help="table, json or csv."),
) -> None:
    """Time the baseline and each variant interleaved; speedup vs FLOP-implied speedup."""
    with user_errors():
        check_format(fmt)
        pos, toks = parse_floats(positions, "--positions"), parse_ints(tokens, "--tokens")
        params = parse_params(param)
        if threads is not None and threads < 1:
            raise ConfigError(f"--threads must be >= 1; got {threads}")
        if time_cap is not None and not time_cap > 0:
            raise ConfigError(f"--time-cap must be a positive number of seconds; got {time_cap}")
        from tlbench.bench import bench_variants

        with err_console.status("benchmarking") as status:
            records = bench_variants(
                model, pos, toks, method=method, params=params, batch_size=batch_size, dtype=dtype, compile=compile_,
                device=device, rounds=rounds, threads=threads, time_cap_s=time_cap,
                progress=status.update,
            )  # fmt: skip
    r0 = records[0]
    table = Table(
        title=f"{r0['model']} on {r0['device_name']} ({r0['device']}, threads {r0['threads']}), "
        f"{r0['dtype']}, batch {r0['batch_size']}, {r0['rounds']} rounds"
        + (", compiled" if r0["compiled"] else ""),
        caption="ms/batch: median over rounds ± half the p10–p90 spread. speedup: median per-round "
        "ratio to this run's baseline, with its 95% bootstrap interval; 'unreliable' when the "
        "interval is wider than ±10% (a busy machine: rerun, or use --threads 1). "
        "FLOPs×: baseline GFLOPs / variant GFLOPs. eff. = speedup / FLOPs×. attention: the "
        "kernel(s) that ran (flash, efficient, cudnn, math: SDPA; unfused: explicit softmax(QK^T)V).",
    )
    for col in ("variant", "block", "img/s", "ms/batch", "GFLOPs", "speedup", "95% CI", "FLOPs×", "eff.", "attention"):
        table.add_column(col, justify="left" if col in ("model", "variant") else "right")
    for r in records:
        spread = (r["latency_ms_p90"] - r["latency_ms_p10"]) / 2 / r["latency_ms"]
        ci = f"{r['speedup_low']:.2f}–{r['speedup_high']:.2f}"
        table.add_row(
            r["variant"], _fmt(r["block_index"]), f"{r['images_per_s']:.4g}",
            f"{r['latency_ms']:.4g} ±{spread:.0%}", f"{r['gflops']:.4g}", f"{r['speedup']:.2f}×",
            ci if r["speedup_reliable"] or r["variant"] == "baseline" else f"{ci} unreliable",
            f"{r['flops_speedup']:.2f}×", f"{r['efficiency']:.2f}", r["attn_kernel"],
        )  # fmt: skip
    emit_records(records, fmt, table)


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
    with user_errors(), _interruptible(bar):
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
        cfg = load_sweep(config, overrides) if given else None
        if cfg is not None and model and config is None and cfg.name == "default":
            from dataclasses import replace

            cfg = replace(cfg, name="-".join(names))  # a folder name: no commas
        from tlbench.sweep import run_sweep

        with bar:
            result = run_sweep(cfg, out, resume=resume, progress=bar.event, executor=executor)
        from tlbench.results import load_results, read_units

        df, units = load_results(result.run_dir), read_units(result.run_dir)
    for line in result.skipped:
        err_console.print(f"[yellow]skipped:[/] {line}", highlight=False, soft_wrap=True)
    Console(width=max(console.width, 120)).print(summary_table(df, units))  # readable when piped too
    console.print(f"results: {result.run_dir}/rows.jsonl, {result.run_dir}/results.csv", soft_wrap=True)
    if result.figures:
        console.print(f"figures: {result.run_dir / 'figures'}/ ({len(result.figures)} files)")
    for line in result.failed:
        err_console.print(f"[bold red]failed:[/] {line}", highlight=False, soft_wrap=True)
    if result.failed:
        err_console.print(f"{len(result.failed)} unit(s) failed; the others' results are kept. "
                          f"Retry them with: tlbench sweep --resume {result.run_dir}",
                          highlight=False, soft_wrap=True)  # fmt: skip
        raise typer.Exit(code=1)


@contextlib.contextmanager
def _interruptible(bar: SweepProgress) -> Iterator[None]:
    """Ctrl-C or SIGTERM: stop the workers, keep what is written, one line, exit 130."""
    import signal

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    except KeyboardInterrupt:
        bar.stop()
        where = f" --resume {bar.run_dir}" if bar.run_dir else ""
        err_console.print(f"interrupted: finished units are kept; continue with: tlbench sweep{where}",
                          highlight=False, soft_wrap=True)  # fmt: skip
        raise typer.Exit(code=130) from None
    finally:
        signal.signal(signal.SIGTERM, old)


class SweepProgress:
    """Rich progress for a sweep: one bar over variants x stages, one per variant in training."""

    def __init__(self) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TextColumn("{task.fields[info]}"),
                                 console=err_console, transient=False)  # fmt: skip
        self.main: Any = None
        self.training: dict[str, Any] = {}
        self.run_dir: Path | None = None

    def __enter__(self) -> SweepProgress:
        return self  # the display starts with the plan: an early one-line error prints alone

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def stop(self) -> None:
        if self.main is not None:
            self.progress.stop()

    def event(self, event: str, **info: Any) -> None:
        p = self.progress
        if event == "plan":
            self.run_dir = info["run_dir"]
            p.start()
            self.main = p.add_task("variants × stages", total=info["total"], info=str(info["run_dir"]))
        elif event == "unit" and self.main is not None:
            p.advance(self.main, info.get("advance", 1))
            if info.get("stage") == "quality" and info.get("variant") in self.training:
                p.remove_task(self.training.pop(info["variant"]))
        elif event == "status" and self.main is not None:
            p.update(self.main, info=info["text"])
        elif event in ("skip", "fail") and self.main is not None:
            what = "skipped" if event == "skip" else "FAILED"
            p.update(self.main, info=f"{what} {info.get('stage')} {info.get('variant', '')}")
        elif event == "train":
            name = info["variant"]
            if name not in self.training:
                self.training[name] = p.add_task(f"  train {name}", total=info["steps"], info="")
            p.update(self.training[name], completed=info["step"], info=f"loss {info['loss']:.3f}")


def summary_table(df: Any, units: dict | None = None) -> Table:
    """One row per variant: compute, speed and the mean few-shot accuracy per probe set."""
    from tlbench.results import summary

    frame = summary(df, units=units)
    table = Table(title="tlbench sweep summary")
    for col in frame.columns:
        table.add_column(str(col), justify="left" if col in ("model", "variant") else "right")
    for _, row in frame.iterrows():
        table.add_row(*[_cell(v) for v in row])
    return table


def _cell(v: Any) -> str:
    import pandas as pd

    if v is None or v is pd.NA or (isinstance(v, float) and v != v):
        return "–"
    if isinstance(v, (float, int)) and not isinstance(v, bool):
        return f"{v:.4g}"
    return str(v)


@app.command()
def plot(
    run_dir: Path = typer.Argument(..., help="A run directory (holds manifest.json, rows.jsonl)."),
    out: Path | None = typer.Option(None, help="Where to write the figures (default RUN_DIR/figures)."),
) -> None:
    """Render the paper-style figures (PNG + PDF) from a run's results table."""
    with user_errors():
        from tlbench.plots import plot_results
        from tlbench.results import adapt_mode, load_results, not_done

        written = plot_results(load_results(run_dir), out or run_dir / "figures", not_done(run_dir),
                               adapt=adapt_mode(run_dir))  # fmt: skip
    for path in written:
        console.print(str(path))
    if not written:
        err_console.print("no rows to plot yet")


@app.command()
def check(
    baseline: Path = typer.Option(..., "--baseline", help="A committed compute baseline (results/baselines/*.json)."),
    update: bool = typer.Option(False, "--update", help="Rewrite the baseline with the current counts."),
    tolerance: float | None = typer.Option(None, help="Relative tolerance on each FLOP ratio (default: the file's)."),
    fmt: str = typer.Option("table", "--format", help="table or markdown."),
) -> None:
    """CI gate: exit 1 when FLOP savings shrink, a variant goes missing or zero-counted ops change."""
    with user_errors():
        if fmt not in ("table", "markdown"):
            raise ConfigError(f"--format must be table or markdown; got {fmt!r}")
        from tlbench.check import run_check

        findings, passed = run_check(baseline, update=update, tolerance=tolerance)
    heads = ("model", "variant", "status", "stored ratio", "current ratio", "stored GFLOPs", "current GFLOPs", "note")
    rows = [(f.model, f.variant, f.status, _fmt(f.stored_ratio, "{:.5f}"), _fmt(f.current_ratio, "{:.5f}"),
             _fmt(f.stored_gflops, "{:.4f}"), _fmt(f.current_gflops, "{:.4f}"), f.note) for f in findings]  # fmt: skip
    failed = [r for r, f in zip(rows, findings, strict=True) if f.failed or f.status != "ok"]
    verdict = "updated" if update else ("passed" if passed else "FAILED")
    if fmt == "markdown":
        shown = failed or rows
        print(f"### tlbench compute check: {verdict} ({len(findings)} checks, {len(failed)} not ok)\n")
        print("| " + " | ".join(heads) + " |\n|" + "---|" * len(heads))
        for r in shown:
            print("| " + " | ".join(r) + " |")
    else:
        table = Table(title=f"tlbench compute check against {baseline}: {verdict}")
        for h in heads:
            table.add_column(h)
        for r in rows:
            style = {"regressed": "red", "missing": "red", "ops-changed": "red", "improved": "green"}
            table.add_row(*r, style=style.get(r[2]))
        Console(width=max(console.width, 140)).print(table)
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
        if fmt not in ("table", "markdown"):
            raise ConfigError(f"--format must be table or markdown; got {fmt!r}")
        from tlbench.check import ACC_TOL, compare_runs, passed

        findings = compare_runs(run, reference, acc_tol=ACC_TOL if acc_tol is None else acc_tol,
                                per_shots=per_shots)  # fmt: skip
    ok = passed(findings)
    bad = [f for f in findings if f.status not in ("ok", "extra")]
    heads = ("variant", "stage", "metric", "dataset", "shots", "status", "run", "reference", "note")
    rows = [(f.variant, f.stage, f.metric, f.dataset or "", _fmt(f.shots), f.status,
             _fmt(f.value, "{:.4g}"), _fmt(f.reference_value, "{:.4g}"), f.note) for f in bad]  # fmt: skip
    verdict = "reproduced" if ok else "DIFFERS"
    compared = [f for f in findings if f.value is not None and f.reference_value is not None]
    same = sum(f.value == f.reference_value for f in compared)  # bit-identical: same machine kind
    title = (f"{run} vs {reference}: {verdict} ({len(findings)} checks, {len(bad)} not ok; "
             f"{same} of {len(compared)} values bit-identical)")  # fmt: skip
    if fmt == "markdown":
        print(f"### tlbench compare: {title}\n")
        if rows:
            print("| " + " | ".join(heads) + " |\n|" + "---|" * len(heads))
            for r in rows:
                print("| " + " | ".join(r) + " |")
    else:
        table = Table(title=title)
        for h in heads:
            table.add_column(h)
        for r in rows:
            table.add_row(*r, style="red" if r[5] in ("differs", "missing") else None)
        Console(width=max(console.width, 140)).print(table if rows else title)
    if not ok:
        raise typer.Exit(code=1)


@app.command()
def probe(
    model: str = typer.Option(..., "--model", "-m", help="Alias (see `tlbench models`) or timm ViT name."),
    position: float | None = typer.Option(None, help="Relative position p in [0,1]; omit for the baseline."),
    tokens: int = typer.Option(8, help="Number of learned tokens S."),
    version: str = typer.Option("1.1", "--version", help="TokenLearner version: 1.1 or 1.0."),
    fuser: bool = typer.Option(False, help="TokenLearner + TokenFuser in every layer from p on."),
    method: str = typer.Option("tokenlearner", "--method", help=METHOD_HELP),
    param: list[str] = typer.Option([], "--param", help="A method parameter, NAME=INTEGER (repeatable): r=13 for tome_r."),
    train_data: str = typer.Option(Q.train_data, help="Training set: mnist, digits, folder:PATH, cifar10[:ROOT], ...; clips: moving_mnist, videos:PATH"),
    probe_data: str = typer.Option(",".join(Q.probe_data), help="Probe sets, comma list; each is tested on its own held-out split."),
    steps: int = typer.Option(Q.steps, help="Training steps (0: probe the initial weights only)."),
    batch_size: int = typer.Option(Q.batch_size, help="Training batch size."),
    lr: float = typer.Option(Q.lr, help="Peak learning rate (AdamW, warm-up + cosine)."),
    shots: str = typer.Option(",".join(map(str, Q.shots)), help="Shots per class, comma list."),
    seeds: int = typer.Option(Q.seeds, help="Support-set draws per shot count (nested draws)."),
    l2_reg: str = typer.Option(f"{Q.l2_reg:g}", help="Ridge lambda, or 'cv' to pick it on the support set."),
    device: str = typer.Option(Q.device, help="auto (CUDA if present), cpu, cuda or cuda:N."),
    pretrained: bool = typer.Option(False, help="Start the backbone from timm weights (TokenLearner fresh)."),
    checkpoint: Path | None = typer.Option(None, help="Local timm checkpoint for the backbone."),
    img_size: int | None = typer.Option(None, help="Input size (default: the model's)."),
    budget: float = typer.Option(Q.budget_s, help="Skip if the estimated seconds exceed this; 0 = no limit."),
    checkpoint_dir: Path | None = typer.Option(None, help="Keep trained weights here; a rerun loads them."),
    download: bool = typer.Option(False, help="Let torchvision datasets download (needs network)."),
    init_reference: bool = typer.Option(Q.init_reference, "--init-reference/--no-init-reference", help="Also probe the features before training."),
    threads: int | None = typer.Option(None, help="CPU threads (default: all cores)."),
    fmt: str = typer.Option("table", "--format", help="table, json or csv."),
) -> None:
    """Train one variant briefly, then few-shot probe its frozen features (big_vision ridge)."""
    with user_errors():
        check_format(fmt)
        shot_list = parse_ints(shots, "--shots") or []
        lam: float | str = "cv" if l2_reg.strip() == "cv" else (parse_floats(l2_reg, "--l2-reg") or [1024.0])[0]
        probes = [p.strip() for p in probe_data.split(",") if p.strip()]
        params = {}
        for name, values in parse_params(param).items():
            if len(values) > 1:
                raise ConfigError(f"probe trains one variant: give --param {name} once")
            params[name] = values[0]
        if threads is not None and threads < 1:
            raise ConfigError(f"--threads must be >= 1; got {threads}")
        import dataclasses

        import torch
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        from tlbench.adapt import BudgetExceeded
        from tlbench.quality import run_probe, summary_rows
        from tlbench.throughput import resolve_device

        if threads:
            torch.set_num_threads(threads)
        quality = QualityConfig(train_data=train_data, probe_data=tuple(probes), steps=steps,
                                batch_size=batch_size, lr=lr, shots=tuple(shot_list), seeds=seeds,
                                l2_reg=lam, device=str(resolve_device(device)), budget_s=budget,
                                init_reference=init_reference)  # fmt: skip
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), TextColumn("{task.fields[info]}"), console=err_console) as bar:  # fmt: skip
            task = bar.add_task("train", total=max(steps, 1), info="", visible=False)

            started: list[int] = []

            def on_step(step: int, total: int, loss: float) -> None:
                if not started:  # the clock starts with training (or its resumption)
                    started.append(step)
                    bar.reset(task, total=total, completed=step - 1, visible=True)
                bar.update(task, completed=step, info=f"loss {loss:.3f}")

            try:
                result = run_probe(
                    model, position, tokens, version=version, fuser=fuser, method=method, params=params, quality=quality,
                    pretrained=pretrained, checkpoint_path=checkpoint, img_size=img_size,
                    checkpoint_dir=checkpoint_dir, download=download, callback=on_step,
                    status=lambda text: bar.console.print(text, highlight=False),
                )  # fmt: skip
            except BudgetExceeded as e:
                raise BudgetExceeded(e.advice("--budget"), e.estimate_s) from None
    v, tr = result.variant, result.train
    caption = "accuracy: mean ± std over seeds (held-out test split). init: features before training."
    if tr is not None:
        how = "loaded from checkpoint" if tr.loaded else f"{tr.train_s:.0f} s, {tr.ms_per_step:.0f} ms/step"
        caption += f" Trained {tr.steps} steps on {quality.train_data} ({how}), final loss {tr.final_loss:.3f}."
    table = Table(title=f"{v.model} {v.name}: few-shot linear probe", caption=caption)
    rows = summary_rows(result)
    stages = [s for s in ("init", "trained") if f"{s}_mean" in rows[0]]
    for col in ("dataset", "shots", *stages, *(["Δ"] if len(stages) == 2 else [])):
        table.add_column(col, justify="left" if col == "dataset" else "right")
    for r in rows:
        cells = [f"{r[f'{s}_mean']:.3f} ± {r[f'{s}_std']:.3f}" for s in stages]
        delta = [f"{r['trained_mean'] - r['init_mean']:+.3f}"] if len(stages) == 2 else []
        table.add_row(r["dataset"], str(r["shots"]), *cells, *delta)
    emit_records([dataclasses.asdict(r) for r in result.records], fmt, table)

@app.command()
def recommend(
    run_dir: Path = typer.Argument(..., help="A run directory (finished or partial)."),
    max_gflops: float | None = typer.Option(None, "--max-gflops", help="GFLOPs per image at most (fvcore)."),
    min_speedup: float | None = typer.Option(None, "--min-speedup", help="Speedup over the baseline at least, met by its 95% interval's lower bound."),
    max_accuracy_drop: float | None = typer.Option(None, "--max-accuracy-drop", help="Points of few-shot accuracy below the baseline at most, on every probe set chosen."),
    dataset: list[str] = typer.Option([], "--dataset", help="Probe set(s) to judge accuracy on (repeatable or comma list; default: every one the run probed)."),
    shots: int | None = typer.Option(None, "--shots", help="Shot count (default: 5 if measured, else the largest)."),
    show_all: bool = typer.Option(False, "--all", help="Also list the variants over budget."),
    fmt: str = typer.Option("table", "--format", help="table, json or csv."),
) -> None:
    """Which variants fit a compute / speed / accuracy budget, ranked, Pareto front marked.

    Variants lacking a metric a budget needs are listed as 'not measured'. JSON and CSV hold
    every variant with its verdict (fits, not measured, over budget).
    """
    with user_errors():
        check_format(fmt)
        from tlbench.recommend import FITS, OVER, Budget, to_records
        from tlbench.recommend import recommend as run_recommend

        datasets = [d.strip() for item in dataset for d in item.split(",") if d.strip()]
        budget = Budget(max_gflops, min_speedup, max_accuracy_drop)
        frame = run_recommend(run_dir, budget, datasets=datasets or None, shots=shots)
    records = to_records(frame)
    fits = sum(r["verdict"] == FITS for r in records)
    limits = [f"GFLOPs ≤ {max_gflops:g}" if max_gflops is not None else "",
              f"speedup (95% lower bound) ≥ {min_speedup:g}×" if min_speedup is not None else "",
              f"accuracy drop ≤ {max_accuracy_drop:g} pt" if max_accuracy_drop is not None else ""]  # fmt: skip
    acc_cols = [c for c in frame.columns if c.startswith("acc_") and c not in ("acc_mean", "acc_drop")]
    k = records[0]["shots"] if records else None
    table = Table(
        title=f"{run_dir}: {fits} of {len(records)} variants fit " + ", ".join(x for x in limits if x),
        caption=f"accuracy: stage quality, {k}-shot, mean over seeds, %; drop: the worst probe set's, "
        "in points below the baseline. speedup: point estimate [95% interval]; a speedup budget is "
        "met by the lower bound. ★ Pareto front among the fitting variants (no other one has "
        "lower-or-equal GFLOPs and higher-or-equal accuracy).",
    )
    heads = ["#", "variant", "method", "p", "block", "S", "GFLOPs", "speedup",
             *(f"{c[4:]} %" for c in acc_cols), "mean %", "drop pt", "Pareto", "verdict"]  # fmt: skip
    for h in heads:
        table.add_column(h, justify="left" if h in ("variant", "method", "verdict") else "right",
                         no_wrap=h in ("variant", "speedup"))  # fmt: skip
    for r in records:
        if r["verdict"] == OVER and not show_all:
            continue
        sp = "–" if r["speedup"] is None else f"{r['speedup']:.2f}×"
        if r["speedup_low"] is not None and r["variant"] != "baseline":
            sp += f" [{r['speedup_low']:.2f}–{r['speedup_high']:.2f}]"
        verdict = r["verdict"] + (f": {r['reason']}" if r["reason"] else "")
        table.add_row(
            _fmt(r["rank"]), r["variant"], r["method"] or "–", _fmt(r["position"], "{:.4g}"),
            _fmt(r["block_index"]), _fmt(r["num_tokens"]), _fmt(r["gflops"], "{:.4g}"), sp,
            *(_fmt(r[c], "{:.1f}") for c in acc_cols), _fmt(r["acc_mean"], "{:.1f}"),
            _fmt(r["acc_drop"], "{:.1f}"), {True: "★", False: "", None: "–"}[r["pareto"]], verdict,
            style={OVER: "dim", FITS: None}.get(r["verdict"], "yellow"),
        )  # fmt: skip
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
        if fmt not in ("table", "json"):
            raise ConfigError(f"--format must be table or json; got {fmt!r}")
        from tlbench.status import run_status

        st = run_status(run_dir)
    if fmt == "json":
        sys.stdout.write(json.dumps(st.to_dict(), indent=2) + "\n")
    else:
        table = Table(title=f"{run_dir}: {st.summary()}")
        for h in ("model", "variant", "stage", "status", "rows", "note"):
            table.add_column(h, justify="right" if h == "rows" else "left")
        colour = {"done": None, "skipped": "yellow", "failed": "red", "running": "cyan", "not started": "dim"}
        for u in st.units:
            note = (u.reason or "") + (f" (log: {run_dir / u.log})" if u.log else "")
            note = f"job {u.job}" + (f"; {note}" if note else "") if u.status == "running" else note
            table.add_row(u.model, u.variant, u.stage, u.status, _fmt(u.rows), note, style=colour[u.status])
        Console(width=max(console.width, 120)).print(table)
        console.print(st.summary(), highlight=False, soft_wrap=True)
    if not st.complete:
        raise typer.Exit(code=1)


def main() -> None:
    """Console-script entry point."""
    app()
