"""Commands on one model: names, FLOPs, speed, one variant's quality, token maps. Each parses,
makes one library call and renders (report/tables.py); heavy modules load inside the command."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from tlbench.cli.app import (
    METHOD_HELP,
    PARAM_HELP,
    G,
    M,
    Q,
    S,
    app,
    check_format,
    console,
    emit_records,
    err_console,
    parse_floats,
    parse_ints,
    parse_params,
    user_errors,
)
from tlbench.config import PAPER_TOKENS, SpeedConfig
from tlbench.core import DEFAULT_METHOD
from tlbench.errors import ConfigError


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
