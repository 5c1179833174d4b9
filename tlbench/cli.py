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

from tlbench.config import PAPER_TOKENS, GridConfig, ModelConfig, QualityConfig, SpeedConfig
from tlbench.core import DEFAULT_METHOD
from tlbench.errors import ConfigError, TLBenchError

Q, S, G, M = QualityConfig(), SpeedConfig(), GridConfig(), ModelConfig()  # option defaults: config.py is where they live
METHOD_HELP = ("Token reduction method: tokenlearner, patchmerger, pool, random, topk, evit, "
               "tome (merge N patch tokens to S in block k) or tome_r (merge r per block from k "
               "on; needs --param r=R; S is then derived) (tlbench/reducers/); S is the number "
               "of tokens it keeps.")
PARAM_HELP = "A method parameter, NAME=INTEGER (repeatable; a name given twice is a grid): r=13 for tome_r."


class CheckedGroup(typer.core.TyperGroup):
    """The app's commands, each checking its input before it runs, in one place (so a new option
    is covered without anyone remembering): every option against tlbench.bounds (numbers in range,
    no empty value), and a value Click cannot parse (`--count abc`) as one `error:` line, exit 2."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        for command in self.commands.values():
            command.callback = _checked(command)

    def invoke(self, ctx: Any) -> Any:
        usage_error = typer.BadParameter.__mro__[1]  # Click's UsageError (typer vendors Click)
        try:
            return super().invoke(ctx)
        except usage_error as e:
            if type(e).__name__ == "NoArgsIsHelpError":
                raise
            name = e.ctx.command_path if e.ctx is not None else "tlbench"
            err_console.print(f"[bold red]error:[/] {e.format_message()} (see {name} -h)",
                              highlight=False, soft_wrap=True)  # fmt: skip
            raise typer.Exit(code=2) from None


def _checked(command: Any) -> Any:
    """The command's callback, after bounds.check_option on each of its parameters."""
    import functools

    from tlbench.bounds import check_option
    from tlbench.files import check_path

    inner = command.callback

    @functools.wraps(inner)
    def run(**kwargs: Any) -> Any:
        with user_errors():
            for p in command.params:
                name = max(p.opts, key=len) if p.opts[0].startswith("-") else p.name.upper()
                if isinstance(kwargs.get(p.name), Path):
                    check_path(kwargs[p.name], name)
                elif p.name in kwargs and name.startswith("-"):
                    check_option(command.name, name, kwargs[p.name])
        return inner(**kwargs)

    return run


app = typer.Typer(
    cls=CheckedGroup,
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
    import warnings

    with warnings.catch_warnings():  # restores showwarning on exit
        warnings.showwarning = _warning_line
        try:
            yield
        except TLBenchError as e:
            err_console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
            raise typer.Exit(code=2) from None


def _warning_line(message: Any, category: type, filename: str, lineno: int, *rest: Any) -> None:
    """tlbench's own warnings as one `warning:` line (not a file and line of our source); others
    as Python prints them."""
    import warnings

    if Path(filename).resolve().is_relative_to(Path(__file__).resolve().parent):
        err_console.print(f"[yellow]warning:[/] {message}", highlight=False, soft_wrap=True)
    else:
        warnings._showwarning_orig(message, category, filename, lineno, *rest)  # type: ignore[attr-defined]


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
    from tlbench.backbones.registry import ALIASES, CUSTOM_MODELS, DESCRIPTIONS, REPATCHED
    from tlbench.backbones.video import VIDEO_MODELS
    from tlbench.backbones.vit import coverage, model_info

    table = Table(title="tlbench model aliases (any timm VisionTransformer name works too)")
    for col in ("alias", "model", "depth", "width", "heads", "patch", "img", "tokens"):
        table.add_column(col, justify="left" if col in ("alias", "model") else "right")
    for alias in [*CUSTOM_MODELS, *ALIASES, *REPATCHED, *VIDEO_MODELS, "dinov2_s14"]:
        i = model_info(alias)
        table.add_row(alias, DESCRIPTIONS.get(alias, i.name), str(i.depth), str(i.embed_dim),
                      str(i.num_heads), str(i.patch_size), str(i.img_size[0]),
                      f"{i.num_patches}+{i.num_prefix_tokens}")  # fmt: skip
    console.print(table)
    for cls, (names, refused) in coverage().items():
        if all_timm:
            console.print(f"\n[bold]{cls}[/bold]: {len(names)} accepted", *names, sep="\n")
            console.print(*(f"refused: {why.split(';')[0]}" for why in refused.values()), sep="\n")
        console.print(f"timm {cls}: {len(names)} of {len(names) + len(refused)} names accepted"
                      + ("" if all_timm else " (`tlbench models --all` lists them)"))  # fmt: skip


@app.command()
def flops(
    model: str = typer.Option(..., "--model", "-m", help="Alias (see `tlbench models`) or timm ViT name."),
    positions: str | None = typer.Option(
        None, help="Relative positions p in [0,1], comma list. Default: every block index 0..depth."
    ),
    tokens: str = typer.Option(",".join(map(str, PAPER_TOKENS)), help="Numbers of learned tokens S, comma list."),
    img_size: int | None = typer.Option(None, help="Input size (default: the model's)."),
    frames: int | None = typer.Option(None, help="Video models: frames per clip (default: the model's)."),
    version: str = typer.Option(G.version, "--version", help="TokenLearner version: 1.1 or 1.0."),
    fuser: bool = typer.Option(G.fuser, help="TokenLearner + TokenFuser in every layer from p on."),
    method: str = typer.Option(DEFAULT_METHOD, "--method", help=METHOD_HELP),
    param: list[str] = typer.Option([], "--param", help=PARAM_HELP),
    baseline: bool = typer.Option(True, "--baseline/--no-baseline", help="Include the unmodified model."),
    fmt: str = typer.Option("table", "--format", help="table, json or csv."),
) -> None:
    """Count GFLOPs (fvcore, 1 multiply-add = 1 FLOP, every op accounted) and parameters per variant."""
    with user_errors():
        from tlbench.report import tables

        check_format(fmt)
        pos, toks = parse_floats(positions, "--positions"), parse_ints(tokens, "--tokens")
        from tlbench.backbones.video import VIDEO_MODELS
        from tlbench.measure.flops import count_variants
        from tlbench.variants import make_variants

        variants = make_variants(model, pos, toks, baseline=baseline, version=version, fuser=fuser,
                                 img_size=img_size, method=method, params=parse_params(param),
                                 frames=frames)  # fmt: skip
        rows = count_variants(variants, img_size, frames)
    records = [{k: v for k, v in vars(r).items() if k != "zero_ops"} for r in rows]
    base = next((r["gflops"] for r in records if r["variant"] == "baseline"), None)
    for r in records:
        r["flops_ratio"] = r["gflops"] / base if base else None
    per = "clip" if variants[0].model in VIDEO_MODELS else "image"
    table = tables.flops_grid(records, per).rich()
    emit_records(records, fmt, table)


@app.command("compare-models")
def compare_models(
    model: list[str] = typer.Option(..., "--model", "-m", help="A model to count with TokenLearner (repeatable)."),
    positions: str = typer.Option("0.5,0.75", help="Relative positions p, comma list."),
    tokens: str = typer.Option(",".join(map(str, PAPER_TOKENS)), help="Numbers of learned tokens S, comma list."),
    reference: list[str] = typer.Option([], "--reference", "-r", help="A model counted plain only (repeatable)."),
    version: str = typer.Option(G.version, "--version", help="TokenLearner version: 1.1 or 1.0."),
    out: Path | None = typer.Option(None, help="Write compute.csv/.json and compute.png/.pdf here."),
) -> None:
    """GFLOPs and parameters of several models, with TokenLearner and plain, in one table."""
    with user_errors():
        from tlbench.report import tables
        from tlbench.study.compare_models import compare_models as count
        from tlbench.study.compare_models import label, write_comparison

        pos, toks = parse_floats(positions, "--positions") or [], parse_ints(tokens, "--tokens") or []
        rows = count(model, pos, toks, reference, version=version)
        written = write_comparison(rows, out) if out is not None else []
    table = tables.compare_models_grid(rows, label).rich()
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
    model: str | None = typer.Option(None, "--model", "-m", help="With --checkpoint: the model it was trained as (default: the built-in study's model). With RUN_DIR: the model whose variant to draw (needed when several models have it)."),
    position: float | None = typer.Option(None, help="With --checkpoint: relative position p of the TokenLearner."),
    tokens: int = typer.Option(8, help="With --checkpoint: number of learned tokens S."),
    version: str = typer.Option(G.version, "--version", help="With --checkpoint: TokenLearner version 1.1 or 1.0."),
    fuser: bool = typer.Option(G.fuser, help="With --checkpoint: trained with the TokenFuser."),
    img_size: int | None = typer.Option(None, help="With --checkpoint: input size (default: the model's)."),
    images: Path | None = typer.Option(None, "--images", help="A folder of images (default: built-in digits)."),
    count: int = typer.Option(4, help="How many images (one digit per class by default)."),
    threshold: float = typer.Option(0.5, help="Digit pixels: gray value above this (built-in digits only)."),
    out: Path = typer.Option(Path("maps"), help="Output path without suffix: OUT.png and OUT.pdf."),
) -> None:
    """Draw each learned token's map over a few images (no training: stored weights only)."""
    with user_errors():
        from tlbench.report import maps as lib
        from tlbench.report import token_maps

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
            source = token_maps.from_run(run_dir, variant, model)
        else:
            source = token_maps.from_checkpoint(checkpoint, model or M.name, position, tokens, version, fuser, img_size)
        imgs = None
        if images is not None:
            from tlbench.backbones.vit import model_info

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


@app.command()
def bench(
    model: str = typer.Option(..., "--model", "-m", help="Alias (see `tlbench models`) or timm ViT name."),
    positions: str = typer.Option(",".join(f"{p:g}" for p in G.positions), help="Relative positions p in [0,1], comma list."),
    tokens: str = typer.Option(",".join(map(str, G.tokens)), help="Numbers of learned tokens S, comma list."),
    method: str = typer.Option(DEFAULT_METHOD, "--method", help=METHOD_HELP),
    param: list[str] = typer.Option([], "--param", help=PARAM_HELP),
    batch_size: str = typer.Option(str(S.batch_size), help="Images per forward pass, or 'auto': CUDA, largest that fits from 1024 down; CPU, 8."),
    dtype: str = typer.Option(S.dtype, help="float32 (TF32 off), bfloat16 / float16 autocast, or bfloat16-pure / float16-pure (weights and input cast)."),
    compile_: bool = typer.Option(S.compile, "--compile", help="Time torch.compile'd models."),
    compile_mode: str = typer.Option(S.compile_mode, "--compile-mode", help="torch.compile mode: default, reduce-overhead, max-autotune, max-autotune-no-cudagraphs."),
    compile_gain: bool = typer.Option(False, "--compile-gain", help="With --compile, also time every variant eager in the same rounds: compiled / eager with its interval."),
    cuda_graphs: bool = typer.Option(S.cuda_graphs, "--cuda-graphs", help="CUDA only: capture each forward as a CUDA graph and time replays."),
    channels_last: bool = typer.Option(S.channels_last, "--channels-last", help="NHWC input and patch convolution."),
    roofline: bool = typer.Option(S.roofline, "--roofline/--no-roofline", help="Measure the device's matmul peak and bandwidth, bytes moved and time shares (mfu, intensity, time_share_*)."),
    figure: Path | None = typer.Option(None, "--figure", help="Write the roofline figure to FIGURE.png and FIGURE.pdf."),
    device: str = typer.Option(S.device, help="auto (CUDA if present), cpu, cuda or cuda:N."),
    rounds: int | None = typer.Option(S.rounds, help="Timed rounds (default: adaptive: at least 5 on a CPU, 10 on CUDA, more until every speedup's 95% interval is within ±5% or --time-cap is spent)."),
    time_cap: float | None = typer.Option(S.time_cap_s, "--time-cap", help="Seconds of adaptive timing at most."),
    threads: int | None = typer.Option(S.threads, help="CPU threads (default: all cores)."),
    fmt: str = typer.Option("table", "--format", help="table, json or csv."),
) -> None:
    """Time the baseline and each variant interleaved; speedup vs FLOP-implied speedup."""
    with user_errors():
        from tlbench.report import tables

        check_format(fmt)
        pos, toks = parse_floats(positions, "--positions"), parse_ints(tokens, "--tokens")
        params = parse_params(param)
        if threads is not None and threads < 1:
            raise ConfigError(f"--threads must be >= 1; got {threads}")
        if time_cap is not None and not time_cap > 0:
            raise ConfigError(f"--time-cap must be a positive number of seconds; got {time_cap}")
        from tlbench.measure.bench import bench_variants
        from tlbench.report.roofline import plot_roofline, points_from_records

        with err_console.status("benchmarking") as status:
            speed = SpeedConfig(device=device, batch_size=batch_size, dtype=dtype, compile=compile_,
                                compile_mode=compile_mode, cuda_graphs=cuda_graphs, channels_last=channels_last,
                                roofline=roofline or figure is not None, rounds=rounds, time_cap_s=time_cap,
                                threads=threads)  # fmt: skip
            records = bench_variants(model, pos, toks, method=method, params=params, speed=speed,
                                     compile_gain=compile_gain, progress=status.update)  # fmt: skip
        if figure is not None:
            plot_roofline(points_from_records(records), figure)
    table = tables.bench_grid(records).rich()
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
def probe(
    model: str = typer.Option(..., "--model", "-m", help="Alias (see `tlbench models`) or timm ViT name."),
    position: float | None = typer.Option(None, help="Relative position p in [0,1]; omit for the baseline."),
    tokens: int = typer.Option(8, help="Number of learned tokens S."),
    version: str = typer.Option(G.version, "--version", help="TokenLearner version: 1.1 or 1.0."),
    fuser: bool = typer.Option(G.fuser, help="TokenLearner + TokenFuser in every layer from p on."),
    method: str = typer.Option(DEFAULT_METHOD, "--method", help=METHOD_HELP),
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
    threads: int | None = typer.Option(Q.threads, help="CPU threads (default: as a sweep's training process, whose thread count sets the float rounding)."),
    fmt: str = typer.Option("table", "--format", help="table, json or csv."),
) -> None:
    """Train one variant briefly, then few-shot probe its frozen features (big_vision ridge)."""
    with user_errors():
        from tlbench.report import tables

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

        from tlbench.measure.throughput import resolve_device
        from tlbench.quality.probe import run_probe, summary_rows
        from tlbench.quality.train import BudgetExceeded

        if threads:
            torch.set_num_threads(threads)
        from tlbench.config import quality_config

        quality = quality_config("tlbench probe", train_data=train_data, probe_data=probes, steps=steps,
                                batch_size=batch_size, lr=lr, shots=shot_list, seeds=seeds,
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
    table = tables.probe_grid(result, summary_rows(result), quality.train_data).rich()
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


def main() -> None:
    """Console-script entry point."""
    app()
