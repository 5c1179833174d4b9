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

from tlbench.errors import ConfigError, TLBenchError

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
    from tlbench.models import ALIASES, CUSTOM_MODELS, DESCRIPTIONS, model_info, vit_names

    table = Table(title="tlbench model aliases (any timm VisionTransformer name works too)")
    for col in ("alias", "model", "depth", "width", "heads", "patch", "img", "tokens"):
        table.add_column(col, justify="left" if col in ("alias", "model") else "right")
    for alias in [*CUSTOM_MODELS, *ALIASES]:
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
    version: str = typer.Option("1.1", "--version", help="TokenLearner version: 1.1 or 1.0."),
    fuser: bool = typer.Option(False, help="TokenLearner + TokenFuser in every layer from p on."),
    baseline: bool = typer.Option(True, "--baseline/--no-baseline", help="Include the unmodified model."),
    fmt: str = typer.Option("table", "--format", help="table, json or csv."),
) -> None:
    """Count GFLOPs (fvcore, 1 multiply-add = 1 FLOP, every op accounted) and parameters per variant."""
    with user_errors():
        check_format(fmt)
        pos, toks = parse_floats(positions, "--positions"), parse_ints(tokens, "--tokens")
        from tlbench.flops import count_variants
        from tlbench.models import make_variants

        variants = make_variants(model, pos, toks, baseline=baseline, version=version, fuser=fuser,
                                 img_size=img_size)  # fmt: skip
        rows = count_variants(variants, img_size)
    records = [dict(vars(r)) for r in rows]
    base = next((r["gflops"] for r in records if r["variant"] == "baseline"), None)
    for r in records:
        r["flops_ratio"] = r["gflops"] / base if base else None
    table = Table(title=f"{records[0]['model']} @ {records[0]['img_size']} px: GFLOPs per image "
                        "(fvcore, 1 multiply-add = 1 FLOP)")  # fmt: skip
    for col in ("variant", "p", "block", "S", "GFLOPs", "analytic", "× baseline", "params (M)"):
        table.add_column(col, justify="left" if col == "variant" else "right")
    for r in records:
        table.add_row(
            r["variant"], _fmt(r["position"], "{:.4g}"), _fmt(r["block_index"]),
            _fmt(r["num_tokens"]), f"{r['gflops']:.3f}", f"{r['gflops_analytic']:.3f}",
            _fmt(r["flops_ratio"], "{:.3f}"), f"{r['params_m']:.2f}",
        )  # fmt: skip
    emit_records(records, fmt, table)


def _fmt(value: Any, spec: str = "{}") -> str:
    return "–" if value is None else spec.format(value)


def main() -> None:
    """Console-script entry point."""
    app()
