"""The tables the CLI prints, as rich tables or markdown: one function per command's result, so the
CLI only parses, calls the library and renders, and the same rows can be shown anywhere."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from rich.table import Table

from tlbench.results import summary


def fmt(value: Any, spec: str = "{}") -> str:
    """A cell: '–' for a missing value, else `spec` applied."""
    return "–" if value is None else spec.format(value)


def cell(v: Any) -> str:
    """A summary cell: '–' for missing, 4 significant digits for numbers."""
    if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, (float, int)) and not isinstance(v, bool):
        return f"{v:.4g}"
    return str(v)


@dataclass(frozen=True)
class Grid:
    """A table before rendering: title, column heads, rows of text, a style per row."""

    title: str
    heads: tuple[str, ...]
    rows: list[tuple[str, ...]]
    styles: list[str | None] = field(default_factory=list)
    caption: str | None = None
    left: tuple[str, ...] = ("model", "variant", "alias", "method", "verdict", "dataset", "note", "status")
    no_wrap: tuple[str, ...] = ()

    def rich(self) -> Table:
        table = Table(title=self.title, caption=self.caption)
        for h in self.heads:
            table.add_column(h, justify="left" if h in self.left else "right", no_wrap=h in self.no_wrap)
        for i, r in enumerate(self.rows):
            table.add_row(*r, style=self.styles[i] if i < len(self.styles) else None)
        return table

    def markdown(self, rows: Sequence[tuple[str, ...]] | None = None) -> str:
        shown = self.rows if rows is None else rows
        lines = [f"### {self.title}", ""]
        if shown:
            lines += ["| " + " | ".join(self.heads) + " |", "|" + "---|" * len(self.heads)]
            lines += ["| " + " | ".join(r) + " |" for r in shown]
        return "\n".join(lines) + "\n"


def flops_grid(records: list[dict[str, Any]], per: str) -> Grid:
    r0 = records[0]
    rows = [(r["variant"], fmt(r["position"], "{:.4g}"), fmt(r["block_index"]), fmt(r["num_tokens"]),
             f"{r['gflops']:.3f}", f"{r['gflops_analytic']:.3f}", fmt(r["flops_ratio"], "{:.3f}"),
             f"{r['params_m']:.2f}") for r in records]  # fmt: skip
    return Grid(f"{r0['model']} @ {r0['img_size']} px: GFLOPs per {per} (fvcore, 1 multiply-add = 1 FLOP)",
                ("variant", "p", "block", "S", "GFLOPs", "analytic", "× baseline", "params (M)"), rows)  # fmt: skip


def compare_models_grid(rows: list[Any], label: Any) -> Grid:
    return Grid("GFLOPs per image (fvcore, 1 multiply-add = 1 FLOP) and parameters",
                ("model", "img", "tokens after", "GFLOPs", "params (M)"),
                [(label(r), str(r.img_size), fmt(r.num_tokens), f"{r.gflops:.3f}", f"{r.params_m:.2f}") for r in rows])  # fmt: skip


BENCH_CAPTION = (
    "ms/batch: median over rounds ± half the p10–p90 spread. speedup: median per-round ratio to this "
    "run's baseline, with its 95% bootstrap interval; 'unreliable' when the interval is wider than "
    "±10% (a busy machine: rerun, or use --threads 1). FLOPs×: baseline GFLOPs / variant GFLOPs. "
    "eff. = speedup / FLOPs×. attention: the kernel(s) that ran (flash, efficient, cudnn, math: SDPA; "
    "unfused: explicit softmax(QK^T)V). MFU: achieved FLOP/s (2 x MACs) / the matmul peak measured in "
    "this run; mm/attn/other: shares of a profiled pass. compile×: compiled / eager img/s of the same "
    "variant (95% CI)."
)


def bench_grid(records: list[dict[str, Any]]) -> Grid:
    r0 = records[0]
    title = (f"{r0['model']} on {r0['device_name']} ({r0['device']}, threads {r0['threads']}), {r0['dtype']}, "
             f"batch {r0['batch_size']}, {r0['rounds']} rounds"
             + (f", compiled ({r0['compile_mode']})" if r0["compiled"] else "")
             + (", CUDA graphs" if r0.get("cuda_graphs") else ""))  # fmt: skip
    roof, gain = r0.get("mfu") is not None, r0.get("compile_gain") is not None
    heads = ["variant", "block", "img/s", "ms/batch", "GFLOPs", "speedup", "95% CI", "FLOPs×", "eff.", "attention"]
    heads += ["MFU", "FLOP/B", "mm/attn/other"] if roof else []
    heads += ["eager speedup", "compile×", "compile× CI"] if gain else []
    rows = []
    for r in records:
        spread = (r["latency_ms_p90"] - r["latency_ms_p10"]) / 2 / r["latency_ms"]
        ci = f"{r['speedup_low']:.2f}–{r['speedup_high']:.2f}"
        rows.append((
            r["variant"], fmt(r["block_index"]), f"{r['images_per_s']:.4g}",
            f"{r['latency_ms']:.4g} ±{spread:.0%}", f"{r['gflops']:.4g}", f"{r['speedup']:.2f}×",
            ci if r["speedup_reliable"] or r["variant"] == "baseline" else f"{ci} unreliable",
            f"{r['flops_speedup']:.2f}×", f"{r['efficiency']:.2f}", r["attn_kernel"],
            *([f"{r['mfu']:.1%}", f"{r['arith_intensity']:.3g}",
               f"{r['time_share_matmul']:.0%}/{r['time_share_attention']:.0%}/{r['time_share_other']:.0%}"] if roof else []),
            *([f"{r['eager_speedup']:.2f}×", f"{r['compile_gain']:.2f}×",
               f"{r['compile_gain_low']:.2f}–{r['compile_gain_high']:.2f}"] if gain else []),
        ))  # fmt: skip
    return Grid(title, tuple(heads), rows, caption=BENCH_CAPTION)


def summary_grid(df: pd.DataFrame, units: dict | None = None) -> Grid:
    """One row per variant: compute, speed and the mean few-shot accuracy per probe set."""
    frame = summary(df, units=units)
    return Grid("tlbench sweep summary", tuple(str(c) for c in frame.columns),
                [tuple(cell(v) for v in row) for _, row in frame.iterrows()])  # fmt: skip


CHECK_STYLES = {"regressed": "red", "missing": "red", "ops-changed": "red", "improved": "green"}


def check_grid(findings: list[Any], baseline: Path, verdict: str) -> Grid:
    heads = ("model", "variant", "status", "stored ratio", "current ratio", "stored GFLOPs", "current GFLOPs", "note")
    rows = [(f.model, f.variant, f.status, fmt(f.stored_ratio, "{:.5f}"), fmt(f.current_ratio, "{:.5f}"),
             fmt(f.stored_gflops, "{:.4f}"), fmt(f.current_gflops, "{:.4f}"), f.note) for f in findings]  # fmt: skip
    return Grid(f"tlbench compute check against {baseline}: {verdict}", heads, rows,
                [CHECK_STYLES.get(f.status) for f in findings])  # fmt: skip


def compare_grid(findings: list[Any], run: Path, reference: Path, ok: bool) -> Grid:
    """The values that are not ok; the title says the verdict and how many are bit-identical."""
    bad = [f for f in findings if f.status not in ("ok", "extra")]
    compared = [f for f in findings if f.value is not None and f.reference_value is not None]
    same = sum(f.value == f.reference_value for f in compared)  # bit-identical: same machine kind
    title = (f"{run} vs {reference}: {'reproduced' if ok else 'DIFFERS'} ({len(findings)} checks, "
             f"{len(bad)} not ok; {same} of {len(compared)} values bit-identical)")  # fmt: skip
    several = len({f.model for f in findings}) > 1  # (model, variant) is the key: say the model
    heads = ("model",) * several + ("variant", "stage", "metric", "dataset", "shots", "status", "run", "reference", "note")
    rows = [(f.model,) * several + (f.variant, f.stage, f.metric, f.dataset or "", fmt(f.shots), f.status,
            fmt(f.value, "{:.4g}"), fmt(f.reference_value, "{:.4g}"), f.note) for f in bad]  # fmt: skip
    return Grid(title, heads, rows, ["red" if f.status in ("differs", "missing") else None for f in bad])


def probe_grid(result: Any, rows: list[dict[str, Any]], train_data: str) -> Grid:
    v, tr = result.variant, result.train
    caption = "accuracy: mean ± std over seeds (held-out test split). init: features before training."
    if tr is not None:
        how = "loaded from checkpoint" if tr.loaded else f"{tr.train_s:.0f} s, {tr.ms_per_step:.0f} ms/step"
        caption += f" Trained {tr.steps} steps on {train_data} ({how}), final loss {tr.final_loss:.3f}."
    stages = [s for s in ("init", "trained") if f"{s}_mean" in rows[0]]
    heads = ("dataset", "shots", *stages, *(["Δ"] if len(stages) == 2 else []))
    out = []
    for r in rows:
        cells = [f"{r[f'{s}_mean']:.3f} ± {r[f'{s}_std']:.3f}" for s in stages]
        delta = [f"{r['trained_mean'] - r['init_mean']:+.3f}"] if len(stages) == 2 else []
        out.append((r["dataset"], str(r["shots"]), *cells, *delta))
    return Grid(f"{v.model} {v.name}: few-shot linear probe", heads, out, caption=caption)


RECOMMEND_CAPTION = (
    "accuracy: stage quality, {k}-shot, mean over seeds, %; drop: the worst probe set's, in points below "
    "the baseline. speedup: point estimate [95% interval]; a speedup budget is met by the lower bound. "
    "★ Pareto front among the fitting variants (no other one has lower-or-equal GFLOPs and "
    "higher-or-equal accuracy)."
)


def recommend_grid(run_dir: Path, frame: pd.DataFrame, records: list[dict[str, Any]], limits: list[str],
                   show_all: bool, fits: str, over: str) -> Grid:  # fmt: skip
    acc_cols = [c for c in frame.columns if c.startswith("acc_") and c not in ("acc_mean", "acc_drop")]
    k = records[0]["shots"] if records else None
    n_fit = sum(r["verdict"] == fits for r in records)
    several = len({r["model"] for r in records}) > 1  # a variant is (model, variant)
    heads = ("#", *["model"] * several, "variant", "method", "p", "block", "S", "GFLOPs", "speedup",
             *(f"{c[4:]} %" for c in acc_cols), "mean %", "drop pt", "Pareto", "verdict")  # fmt: skip
    rows, styles = [], []
    for r in records:
        if r["verdict"] == over and not show_all:
            continue
        sp = "–" if r["speedup"] is None else f"{r['speedup']:.2f}×"
        if r["speedup_low"] is not None and r["variant"] != "baseline":
            sp += f" [{r['speedup_low']:.2f}–{r['speedup_high']:.2f}]"
        verdict = r["verdict"] + (f": {r['reason']}" if r["reason"] else "")
        rows.append((fmt(r["rank"]), *[r["model"]] * several, r["variant"], r["method"] or "–", fmt(r["position"], "{:.4g}"),
                     fmt(r["block_index"]), fmt(r["num_tokens"]), fmt(r["gflops"], "{:.4g}"), sp,
                     *(fmt(r[c], "{:.1f}") for c in acc_cols), fmt(r["acc_mean"], "{:.1f}"),
                     fmt(r["acc_drop"], "{:.1f}"), {True: "★", False: "", None: "–"}[r["pareto"]], verdict))  # fmt: skip
        styles.append({over: "dim", fits: None}.get(r["verdict"], "yellow"))
    title = f"{run_dir}: {n_fit} of {len(records)} variants fit " + ", ".join(x for x in limits if x)
    return Grid(title, heads, rows, styles, caption=RECOMMEND_CAPTION.format(k=k), no_wrap=("variant", "speedup"))


STATUS_STYLES = {"done": None, "skipped": "yellow", "failed": "red", "running": "cyan", "not started": "dim",
                 "rows lost": "red"}


def status_grid(run_dir: Path, st: Any) -> Grid:
    rows = []
    for u in st.units:
        note = (u.reason or "") + (f" (log: {run_dir / u.log})" if u.log else "")
        job = f"job {u.job}" + (f" ({u.job_state})" if getattr(u, "job_state", None) else "")
        note = job + (f"; {note}" if note else "") if u.status == "running" else note
        rows.append((u.model, u.variant, u.stage, u.status, fmt(u.rows), note))
    return Grid(f"{run_dir}: {st.summary()}", ("model", "variant", "stage", "status", "rows", "note"), rows,
                [STATUS_STYLES[u.status] for u in st.units], left=("model", "variant", "stage", "status", "note"))  # fmt: skip
