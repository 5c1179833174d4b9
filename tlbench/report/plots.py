"""Paper-style figures from a results table only (no model code): PNG + PDF per figure.

Several reduction methods in one run get one colour per method; in accuracy_vs_gflops a marker per
position (and, with several token counts, a fill per count).

- accuracy_vs_position: few-shot accuracy vs relative position, a line per token count, the
  baseline as a horizontal band (mean ± std over seeds), seeds as error bars (the paper's Fig. 4);
- gflops_vs_position: compute vs relative position, with the baseline;
- accuracy_vs_gflops: the trade-off, baseline marked, points labelled by p, Pareto front drawn;
- speedup: measured speedup vs the FLOP-implied one (where speed was measured);
- accuracy_vs_position_adapt: accuracy vs position before (dashed) and after (solid) adaptation,
  where a run probed reducers at both stages (quality_init and quality);
- agreement_vs_position: teacher cosine and top-1 agreement with the unreduced model vs position,
  where a run measured them (quality.adapt = distill, or none with quality.agreement).

A run of several models (model.names) draws each figure above per model (`NAME-MODEL.png`, never
mixing models) plus the family figures, a colour per model:
- family_gflops_vs_position: compute vs position, every model on one log-scaled axis (drawn from
  compute alone, so a compute-only sweep has its family figure);
- family_accuracy_vs_gflops: the paper's trade-off across models, each reducer variant joined to
  its own baseline, GFLOPs on a log axis, top left is better (drawn when accuracy exists).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.pyplot as plt  # headless machines fall back to Agg by themselves
import numpy as np
import pandas as pd
import seaborn as sns

from tlbench import files
from tlbench.report.family import FAMILY
from tlbench.report.style import (
    BASE_COLOR,
    METHOD_LABELS,
    REDUCER,
    TEACHER,
    apply_style,
    axes_legend,
    bottom_margin,
    budget_kind,
    figure_legend,
    is_reliable,
    item_name,
    metric_rows,
    model_title,
    pareto_front,
    position_axis,
    position_label,
    series_keys,
    series_label,
    series_palette,
    slug,
    where_note,
)


def accuracy_vs_position(df: pd.DataFrame) -> plt.Figure | None:
    """Few-shot accuracy (%) vs relative position, a panel per (dataset, shots)."""
    acc = metric_rows(df, "fewshot_acc")
    if acc.empty:
        return None
    datasets, shots = sorted(acc["dataset"].dropna().unique()), sorted(acc["shots"].dropna().unique())
    fig, axes = plt.subplots(len(datasets), len(shots), figsize=(3.2 * len(shots), 2.8 * len(datasets)),
                             squeeze=False, sharex=True)  # fmt: skip
    tl = acc[acc["variant"] != "baseline"]
    palette = series_palette(series_keys(tl))
    what = where_note(acc)
    for (i, ds), (j, k) in ((a, b) for a in enumerate(datasets) for b in enumerate(shots)):
        ax, sub = axes[i][j], acc[(acc["dataset"] == ds) & (acc["shots"] == k)]
        base = sub[sub["variant"] == "baseline"]["value"] * 100
        if len(base):
            m, s = base.mean(), base.std(ddof=0)
            ax.axhspan(m - s, m + s, color=BASE_COLOR, alpha=0.15, lw=0, label="baseline ± std over seeds")
            ax.axhline(m, color=BASE_COLOR, ls="--", lw=1.2,
                       label=f"baseline (no {what})" if what != REDUCER else "baseline (no reduction)")
        reduced = sub[sub["variant"] != "baseline"]
        for key, g in reduced.groupby(series_keys(reduced)):
            stats = g.groupby("position")["value"].agg(["mean", "std"]).reset_index()
            ax.errorbar(stats["position"], stats["mean"] * 100, yerr=stats["std"].fillna(0) * 100,
                        ms=4, capsize=2.5, lw=1.5, label=series_label(key, palette), **palette[key])  # fmt: skip
        ax.set_title(f"{ds}, {k}-shot", fontsize=10)
        position_axis(ax)
        if j == 0:
            ax.set_ylabel("few-shot accuracy (%)")
        if i == len(datasets) - 1:
            ax.set_xlabel(f"relative position p of {what}")
    fig.suptitle(f"Few-shot linear probe vs position of {what} — {model_title(df)}")
    figure_legend(fig, axes)
    return fig


def gflops_vs_position(df: pd.DataFrame) -> plt.Figure | None:
    """GFLOPs per image vs relative position, a line per token count, baseline dashed."""
    g = metric_rows(df, "gflops")
    if g.empty:
        return None
    fig, ax = plt.subplots(figsize=(4.6, 3.4))
    base = g[g["variant"] == "baseline"]["value"]
    if len(base):
        ax.axhline(base.iloc[0], color=BASE_COLOR, ls="--", lw=1.2, label="baseline")
    tl = g[g["variant"] != "baseline"]
    palette = series_palette(series_keys(tl))
    for key, sub in tl.groupby(series_keys(tl)):
        sub = sub.sort_values("position")
        ax.plot(sub["position"], sub["value"], ms=4, lw=1.5, label=series_label(key, palette, short=True),
                **palette[key])  # fmt: skip
    ax.set_xlabel(f"relative position p of {where_note(g)}")
    ax.set_ylabel(f"GFLOPs per {item_name(df)} (1 MAC = 1 FLOP)")
    ax.set_ylim(bottom=0)
    position_axis(ax, limits=False)
    ax.set_title(f"Compute vs position — {model_title(df)}", fontsize=10)
    axes_legend(ax, len(palette))
    sns.despine(fig)
    return fig


POSITION_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h", "p", "d")
TOKEN_FILLS = ("full", "none", "left", "bottom")  # several token counts: the fill tells them apart


class _MethodStyles:
    """Several methods on one scatter: colour per method, a fixed marker per position value and,
    with several token counts, a fill per count; a legend with one section per encoding."""

    def __init__(self, reduced: pd.DataFrame, palette: dict[tuple[str, int], dict]) -> None:
        self.palette = palette
        self.colors = {m: st["color"] for (m, _), st in palette.items()}
        self.positions = sorted(reduced["position"].dropna().unique())
        self.tokens = sorted({(budget_kind(m), t) for m, t in palette})  # ('S', 8), ('r', 2)

    def marker(self, position: float) -> str:
        return POSITION_MARKERS[self.positions.index(position) % len(POSITION_MARKERS)]

    def fill(self, budget: tuple[str, int]) -> str:
        if len(self.tokens) == 1:
            return "full"
        return TOKEN_FILLS[self.tokens.index(budget) % len(TOKEN_FILLS)]

    def point(self, key: tuple[str, int], position: float) -> dict:
        return dict(marker=self.marker(position), ms=6, color=self.colors[key[0]],
                    fillstyle=self.fill((budget_kind(key[0]), key[1])))  # fmt: skip

    def legend(self, ax: plt.Axes, extras: list[tuple[Any, str]] | None = None) -> None:
        """Beside the axes: methods (colour), positions (marker), token counts (fill), then the
        `extras` (default: baseline and the Pareto front); section headers in bold."""
        from matplotlib.lines import Line2D
        from matplotlib.patches import Patch

        def mark(marker: str, fill: str = "full") -> Line2D:
            return Line2D([], [], ls="none", marker=marker, ms=6, color="0.35", fillstyle=fill)

        blank = Line2D([], [], ls="none", marker="")
        entries = [(blank, "method")]
        entries += [(Patch(color=c), METHOD_LABELS.get(m, m)) for m, c in self.colors.items()]
        entries += [(blank, "position p")]
        entries += [(mark(self.marker(p)), f"p = {position_label(p)}") for p in self.positions]
        if len(self.tokens) > 1:
            entries += [(blank, "tokens S" if {k for k, _ in self.tokens} == {"S"} else "budget")]
            entries += [(mark("o", self.fill(b)), f"{b[0]} = {int(b[1])}") for b in self.tokens]
        if extras is None:
            extras = [(Line2D([], [], ls="none", marker="*", ms=11, color=BASE_COLOR), "baseline"),
                      (Line2D([], [], color="tab:red", lw=1, alpha=0.7), "Pareto front")]  # fmt: skip
        entries += [(blank, ""), *extras]
        handles, labels = zip(*entries, strict=True)
        leg = ax.legend(handles, labels, frameon=False, fontsize=7, loc="upper left",
                        bbox_to_anchor=(1.02, 1), ncol=1 if len(entries) <= 18 else 2,
                        handlelength=1.5)  # fmt: skip
        for text in leg.get_texts():
            if text.get_text() in ("method", "position p", "tokens S", "budget"):
                text.set_fontweight("bold")


def accuracy_vs_gflops(df: pd.DataFrame, shots: int | None = None) -> plt.Figure | None:
    """Accuracy vs GFLOPs at one shot count (5 if present: the paper's), a panel per dataset."""
    acc, g = metric_rows(df, "fewshot_acc"), metric_rows(df, "gflops")
    if acc.empty or g.empty:
        return None
    available = sorted(acc["shots"].dropna().unique())
    shots = shots if shots in available else (5 if 5 in available else available[-1])
    acc = acc[acc["shots"] == shots]
    flops = g.groupby("variant")["value"].first()
    datasets = sorted(acc["dataset"].dropna().unique())
    reduced = acc[acc["variant"] != "baseline"]
    palette = series_palette(series_keys(reduced))
    by_method = len({m for m, _ in palette}) > 1  # colour = method, marker = position
    styles = _MethodStyles(reduced, palette) if by_method else None
    many = len(palette) > 2  # several series: one legend, beside the last panel
    fig, axes = plt.subplots(1, len(datasets), figsize=(4.6 * len(datasets) + 2 * many, 3.6),
                             squeeze=False)  # fmt: skip
    for ax, ds in zip(axes[0], datasets, strict=True):
        sub = acc[acc["dataset"] == ds].assign(series=lambda d: series_keys(d))
        pts = sub.groupby(["variant", "position", "series"], dropna=False)
        pts = pts["value"].agg(["mean", "std"]).reset_index()
        pts["gflops"] = pts["variant"].map(flops)
        pts = pts.dropna(subset=["gflops"])
        for _, r in pts.iterrows():
            is_base = r["variant"] == "baseline"
            if is_base:
                style = dict(marker="*", ms=11, color=BASE_COLOR)
            elif styles:
                style = styles.point(r["series"], r["position"])
            else:
                style = dict(marker=palette[r["series"]]["marker"], ms=5, color=palette[r["series"]]["color"])
            ax.errorbar(r["gflops"], r["mean"] * 100, yerr=(0 if pd.isna(r["std"]) else r["std"] * 100),
                        capsize=2, lw=0, elinewidth=1, **style)  # fmt: skip
            if is_base or not styles:  # with several methods the marker names the position
                label = "baseline" if is_base else f"p={r['position']:.3g}"
                ax.annotate(label, (r["gflops"], r["mean"] * 100), textcoords="offset points",
                            xytext=(5, 4), fontsize=7)  # fmt: skip
        front = pareto_front(pts["gflops"].to_numpy(), pts["mean"].to_numpy())
        ax.step(pts["gflops"].to_numpy()[front], pts["mean"].to_numpy()[front] * 100, where="post",
                color="tab:red", lw=1, alpha=0.7, label="Pareto front")  # fmt: skip
        if not styles:
            for key, st in palette.items():
                ax.plot([], [], ls="none", marker=st["marker"], color=st["color"], label=series_label(key, palette))
            ax.plot([], [], "*", ms=11, color=BASE_COLOR, label="baseline")
        ax.margins(x=0.15, y=0.08)
        ax.set_xlabel(f"GFLOPs per {item_name(df)}")
        ax.set_ylabel(f"{shots}-shot accuracy (%)")
        ax.set_title(ds, fontsize=10)
        if styles:
            if ax is axes[0][-1]:
                styles.legend(ax)
        elif not many:
            ax.legend(frameon=False, fontsize=7, loc="lower right")
        elif ax is axes[0][-1]:
            ax.legend(frameon=False, fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1))
    fig.suptitle(f"Accuracy vs compute — {model_title(df)}", y=1.02)
    sns.despine(fig)
    return fig


# quality.adapt -> (before, after): how the dashed and solid lines of the adaptation figure read
STAGE_NAMES = {"distill": ("off the shelf", "distilled"), "scratch": ("initial", "trained")}
BEFORE_AFTER = ("before adaptation", "after adaptation")  # runs without a manifest


def accuracy_vs_position_adapt(df: pd.DataFrame, adapt: str | None = None) -> plt.Figure | None:
    """Accuracy vs position before (dashed) and after (solid) adaptation, a panel per dataset.

    Drawn when reducer variants have few-shot rows of both stages: 'quality_init' (the reducer
    inserted into the trained baseline, or the initial weights) and 'quality'. One shot count (5 if
    present, else the largest), mean over seeds; the trained baseline is the horizontal line.
    `adapt` (the run's quality.adapt) names the two stages."""
    acc = df[(df["metric"] == "fewshot_acc") & np.isfinite(df["value"].astype("float64"))]
    reduced = acc[acc["variant"] != "baseline"]
    pairs = {st: reduced[reduced["stage"] == st] for st in ("quality_init", "quality")}
    common = set(pairs["quality_init"]["shots"].dropna()) & set(pairs["quality"]["shots"].dropna())
    datasets = sorted(set(pairs["quality_init"]["dataset"].dropna()) & set(pairs["quality"]["dataset"].dropna()))
    if not common or not datasets:
        return None
    shots = 5 if 5 in common else max(common)
    before, after = STAGE_NAMES.get(adapt or "", BEFORE_AFTER)
    palette = series_palette(series_keys(reduced))
    fig, axes = plt.subplots(1, len(datasets), figsize=(4.2 * len(datasets), 3.4), squeeze=False)
    for ax, ds in zip(axes[0], datasets, strict=True):
        base = acc[(acc["variant"] == "baseline") & (acc["stage"] == "quality") & (acc["dataset"] == ds)
                   & (acc["shots"] == shots)]["value"]  # fmt: skip
        if len(base):
            ax.axhline(base.mean() * 100, color=BASE_COLOR, ls=":", lw=1.5)
        for stage, ls in (("quality_init", "--"), ("quality", "-")):
            rows = pairs[stage][(pairs[stage]["dataset"] == ds) & (pairs[stage]["shots"] == shots)]
            for key, g in rows.groupby(series_keys(rows)):
                mean = g.groupby("position")["value"].mean()
                st = palette[key]
                ax.plot(mean.index, mean.to_numpy() * 100, ls=ls, lw=1.5, ms=4, marker=st["marker"],
                        color=st["color"], mfc="white" if ls == "--" else st["color"])  # fmt: skip
        ax.set_title(ds, fontsize=10)
        position_axis(ax)
        ax.set_xlabel(f"relative position p of {where_note(acc)}")
        if ax is axes[0][0]:
            ax.set_ylabel(f"{shots}-shot accuracy (%)")
    from matplotlib.lines import Line2D

    # the line-style key fills the first column (legends fill column by column), the series follow
    handles = [Line2D([], [], color="0.35", ls="--", marker="o", ms=4, mfc="white"),
               Line2D([], [], color="0.35", ls="-", marker="o", ms=4),
               Line2D([], [], color=BASE_COLOR, ls=":", lw=1.5)]  # fmt: skip
    labels = [before, after, "baseline"]
    handles += [Line2D([], [], color=st["color"], marker=st["marker"], ms=4, lw=1.5)
                for st in palette.values()]  # fmt: skip
    labels += [series_label(key, palette, short=True) for key in palette]
    rows = max(3, -(-len(labels) // 5))  # at most 5 columns
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), frameon=False,
               ncol=-(-len(labels) // rows), fontsize=8)  # fmt: skip
    gap = "\n" if len(datasets) == 1 else " "  # one panel: two lines, no wider than the figure
    fig.suptitle(f"Few-shot accuracy {before} vs {after}{gap}(mean over seeds) — {model_title(df)}")
    sns.despine(fig)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    return fig


def agreement_vs_position(df: pd.DataFrame, adapt: str | None = None) -> plt.Figure | None:
    """How much of the unreduced model each reducer keeps, label-free: teacher cosine and top-1
    agreement vs position, a line per (method, tokens), a panel per measure. A distill run's
    variants off the shelf are dashed and hollow beside the distilled ones; 1 is the unreduced
    model itself."""
    rows = df[df["metric"].isin(list(TEACHER)) & np.isfinite(df["value"].astype("float64"))]
    rows = rows[rows["variant"] != "baseline"]
    if rows.empty:
        return None
    stages = [st for st in ("quality_init", "quality") if (rows["stage"] == st).any()]
    before, after = STAGE_NAMES.get(adapt or "", BEFORE_AFTER)
    palette = series_palette(series_keys(rows))
    fig, axes = plt.subplots(1, 2, figsize=(8.4, 3.4), squeeze=False, sharex=True)
    for ax, metric in zip(axes[0], TEACHER, strict=True):
        ax.axhline(1.0, color=BASE_COLOR, ls=":", lw=1.5)
        for stage in stages:
            hollow = stage == "quality_init" and len(stages) > 1
            sub = rows[(rows["metric"] == metric) & (rows["stage"] == stage)]
            for key, g in sub.groupby(series_keys(sub)):
                mean = g.groupby("position")["value"].mean()
                st = palette[key]
                ax.plot(mean.index, mean.to_numpy(), ls="--" if hollow else st["ls"], lw=1.5, ms=4,
                        marker=st["marker"], color=st["color"], mfc="white" if hollow else st["color"])  # fmt: skip
        ax.set_title(TEACHER[metric], fontsize=10)
        position_axis(ax)
        ax.set_xlabel(f"relative position p of {where_note(rows)}")
    axes[0][0].set_ylabel("against the unreduced model")
    from matplotlib.lines import Line2D

    handles, labels = [Line2D([], [], color=BASE_COLOR, ls=":", lw=1.5)], ["the unreduced model"]
    if len(stages) > 1:
        handles += [Line2D([], [], color="0.35", ls="--", marker="o", ms=4, mfc="white"),
                    Line2D([], [], color="0.35", ls="-", marker="o", ms=4)]  # fmt: skip
        labels += [before, after]
    handles += [Line2D([], [], color=st["color"], marker=st["marker"], ls=st["ls"], ms=4, lw=1.5)
                for st in palette.values()]  # fmt: skip
    labels += [series_label(key, palette, short=True) for key in palette]
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), frameon=False,
               ncol=min(len(labels), 4), fontsize=8)  # fmt: skip
    data = ", ".join(sorted(rows["dataset"].dropna().astype(str).unique())) or "held-out data"
    fig.suptitle(f"The reduced model against the unreduced one ({data}, held out) — {model_title(df)}")
    sns.despine(fig)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    return fig


def speedup_vs_flops(df: pd.DataFrame) -> plt.Figure | None:
    """Measured speedup vs FLOP-implied speedup (baseline GFLOPs / variant GFLOPs)."""
    sp, g = metric_rows(df, "speedup"), metric_rows(df, "gflops")
    if sp.empty or g.empty:
        return None
    flops = g.groupby("variant")["value"].first()
    if "baseline" not in flops:
        return None
    sp = sp[sp["variant"] != "baseline"].copy()
    sp["flops_speedup"] = flops["baseline"] / sp["variant"].map(flops)
    fig, ax = plt.subplots(figsize=(4.2, 3.8))
    top = sp["ci_high"] if "ci_high" in sp and sp["ci_high"].notna().any() else sp["value"]
    hi = max(sp["flops_speedup"].max(), sp["value"].max(), top.max()) * 1.1
    bottom = sp["ci_low"] if "ci_low" in sp and sp["ci_low"].notna().any() else sp["value"]
    lo = min(0.95, sp["value"].min() / 1.05, bottom.min() / 1.05)  # a variant can be slower
    ax.set_xscale("log")
    ax.set_yscale("log")
    diagonal = ax.plot([lo, hi], [lo, hi], color=BASE_COLOR, ls="--", lw=1, label="speedup = FLOP ratio")
    sp["series"] = series_keys(sp)
    palette = series_palette(sp["series"])
    styles = _MethodStyles(sp, palette) if len({m for m, _ in palette}) > 1 else None
    for _, r in sp.iterrows():
        c, m, shaky = palette[r["series"]]["color"], palette[r["series"]]["marker"], not is_reliable(r)
        ci_low, ci_high = r.get("ci_low"), r.get("ci_high")
        if pd.notna(ci_low) and pd.notna(ci_high):
            ax.errorbar(r["flops_speedup"], r["value"], lw=0, elinewidth=1, capsize=2, color=c,
                        yerr=[[max(r["value"] - ci_low, 0)], [max(ci_high - r["value"], 0)]])  # fmt: skip
        if styles:  # several methods: the marker names the position, the fill the budget, so an
            # unreliable interval is a faded mark, not a hollow one
            ax.plot(r["flops_speedup"], r["value"], ls="none", **styles.point(r["series"], r["position"]),
                    **({"alpha": 0.35} if shaky else {}))  # fmt: skip
            continue
        ax.plot(r["flops_speedup"], r["value"], marker=m, ls="none", color=c, mfc="white" if shaky else c)
        ax.annotate(f"p={r['position']:.3g}", (r["flops_speedup"], r["value"]),
                    textcoords="offset points", xytext=(5, -9), fontsize=7)  # fmt: skip
    if not styles:
        for key, st in palette.items():
            ax.plot([], [], ls="none", marker=st["marker"], color=st["color"], label=series_label(key, palette, short=True))
    shaky_mark = None
    if not all(is_reliable(r) for _, r in sp.iterrows()):
        faded = {"alpha": 0.35} if styles else {"mfc": "white"}
        (shaky_mark,) = ax.plot([], [], "o", color="0.4", **faded, label="unreliable (95% CI wider than ±10%)")
    dev = sp["device"].dropna().unique()
    ax.set_xlabel("FLOP-implied speedup (×)")
    ax.set_ylabel("measured speedup (×)")
    ticks = [t for t in (0.5, 0.75, 1, 1.5, 2, 3, 4, 6, 8, 12, 16, 24, 32) if lo <= t <= hi]
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_locator(matplotlib.ticker.FixedLocator(ticks))
        axis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        axis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_aspect("equal")
    where = f"{model_title(df)} on {dev[0]}" if len(dev) else model_title(df)
    ax.set_title(f"Wall-clock vs FLOPs — {where}", fontsize=9)
    if styles:
        extras = [(diagonal[0], "speedup = FLOP ratio")]
        styles.legend(ax, extras + ([(shaky_mark, shaky_mark.get_label())] if shaky_mark else []))
    else:
        axes_legend(ax, len(palette))
    sns.despine(fig)
    return fig


FIGURES = {
    "accuracy_vs_position": accuracy_vs_position,
    "gflops_vs_position": gflops_vs_position,
    "accuracy_vs_gflops": accuracy_vs_gflops,
    "speedup_vs_flops": speedup_vs_flops,
    "accuracy_vs_position_adapt": accuracy_vs_position_adapt,
    "agreement_vs_position": agreement_vs_position,
}


# Which figures a missing unit of each stage leaves incomplete: they say so in a footnote.
AFFECTED = {
    "compute": ("gflops_vs_position", "accuracy_vs_gflops", "speedup_vs_flops",
                "family_gflops_vs_position", "family_accuracy_vs_gflops"),
    "speed": ("speedup_vs_flops",),
    "quality": ("accuracy_vs_position", "accuracy_vs_gflops", "accuracy_vs_position_adapt",
                "agreement_vs_position", "family_accuracy_vs_gflops"),
}  # fmt: skip


def plot_results(df: pd.DataFrame, out_dir: str | Path, missing: list[tuple[str, str, str]] | None = None,
                 adapt: str | None = None) -> list[Path]:  # fmt: skip
    """Render every figure the table has data for into out_dir (PNG + PDF); return the paths.

    `missing` lists (stage, variant, why) for units that were skipped or failed: each figure they
    leave incomplete says so under its axes, so a figure with two points never passes for a study.
    `adapt` is the run's quality.adapt (results.adapt_mode): it names the stages before and after
    adaptation; without it they are 'before/after adaptation'.
    """
    out_dir = files.make_dir(out_dir)  # a file in the way or no permission: one-line error
    apply_style()
    models = list(dict.fromkeys(df["model"].dropna())) if "model" in df else []
    if len(models) <= 1:
        return _draw(df, FIGURES, out_dir, "", [m[:3] for m in missing or ()], adapt)
    written = []
    for model in models:  # each model's own figures, as a one-model run draws them
        mine = [m[:3] for m in missing or () if len(m) < 4 or m[3] == model]
        written += _draw(df[df["model"] == model], FIGURES, out_dir, f"-{slug(model)}", mine, adapt)
    labelled = [(m[0], f"{m[3]} {m[1]}" if len(m) > 3 else m[1], m[2]) for m in missing or ()]
    return written + _draw(df, FAMILY, out_dir, "", labelled, adapt)


def _draw(df: pd.DataFrame, figures: dict[str, Any], out_dir: Path, suffix: str,
          missing: list[tuple[str, str, str]], adapt: str | None) -> list[Path]:  # fmt: skip
    written = []
    for name, make in figures.items():
        staged = make in (accuracy_vs_position_adapt, agreement_vs_position)
        fig = make(df, adapt=adapt) if staged else make(df)
        if fig is None:
            continue
        stages: dict[tuple[str, str], list[str]] = {}  # (variant, why) -> stages: one reason said once
        for stage, variant, why in missing:
            if name in AFFECTED.get(stage, ()):
                stages.setdefault((variant, why), []).append(stage)
        notes = [f"{variant}: {', '.join(st)} {why}" for (variant, why), st in stages.items()]
        if notes:  # below everything drawn, legends under the axes included
            fig.text(0.01, bottom_margin(fig) - 0.02, "Not shown: " + "; ".join(notes), fontsize=7,
                     color="tab:red", ha="left", va="top", wrap=True)  # fmt: skip
        for ext in ("png", "pdf"):
            path = out_dir / f"{name}{suffix}.{ext}"
            files.write_with(path, lambda tmp, ext=ext, fig=fig: fig.savefig(tmp, format=ext, bbox_inches="tight"))
            written.append(path)
        plt.close(fig)
    return written


