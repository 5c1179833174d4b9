"""The model-family figures: several models with and without a reducer in one figure (the paper's Fig. 3 and 4)."""


from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt  # headless machines fall back to Agg by themselves
import numpy as np
import pandas as pd
import seaborn as sns

from tlbench.report.style import (
    LINES,
    MARKERS,
    item_name,
    metric_rows,
    position_axis,
    position_label,
    series_keys,
    series_label,
    where_note,
)


def _model_colors(df: pd.DataFrame) -> dict[str, Any]:
    """A colour per model, the models ordered by their baseline's GFLOPs (else as they come)."""
    g = metric_rows(df, "gflops")
    base = g[g["variant"] == "baseline"].groupby("model")["value"].first()
    models = sorted(dict.fromkeys(df["model"].dropna()), key=lambda m: base.get(m, np.inf))
    colors = sns.color_palette("colorblind", max(len(models), 1))
    return {m: colors[i % len(colors)] for i, m in enumerate(models)}


def family_gflops_vs_position(df: pd.DataFrame) -> plt.Figure | None:
    """GFLOPs vs position for several models on one log axis: a colour per model, its baseline
    dashed; with several methods or token counts a marker and dash per (method, tokens)."""
    g = metric_rows(df, "gflops")
    if g["model"].nunique() < 2:
        return None
    colors = _model_colors(df)
    reduced = g[g["variant"] != "baseline"]
    keys = sorted(set(series_keys(reduced)), key=str)
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for model, c in colors.items():
        sub = g[g["model"] == model]
        base = sub[sub["variant"] == "baseline"]["value"]
        if len(base):
            ax.axhline(base.iloc[0], color=c, ls="--", lw=1)
        red = sub[sub["variant"] != "baseline"]
        for key, s in red.groupby(series_keys(red)):
            i = keys.index(key)
            s = s.sort_values("position")
            ax.plot(s["position"], s["value"], marker=MARKERS[i % 4], ls=LINES[i % 4], ms=4, lw=1.5, color=c)
        ax.plot([], [], color=c, lw=2, label=model)
    if len(keys) > 1:
        for i, key in enumerate(keys):
            ax.plot([], [], color="0.35", marker=MARKERS[i % 4], ls=LINES[i % 4], label=series_label(key, dict.fromkeys(keys)))
    ax.plot([], [], color="0.35", ls="--", lw=1, label="baseline (no reduction)")
    ax.set_yscale("log")
    ax.set_xlabel(f"relative position p of {where_note(g)}")
    ax.set_ylabel(f"GFLOPs per {item_name(df)} (1 MAC = 1 FLOP)")
    position_axis(ax)
    ax.set_title(f"Compute vs position — {len(colors)} models", fontsize=10)
    ax.legend(frameon=False, fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1))
    sns.despine(fig)
    return fig


def family_accuracy_vs_gflops(df: pd.DataFrame, shots: int | None = None) -> plt.Figure | None:
    """The paper's accuracy vs GFLOPs across models, a panel per dataset: a colour per model, its
    baseline a star, each reducer variant a dot joined to that baseline; GFLOPs on a log axis.
    Top left (more accurate for less compute) is better."""
    acc, g = metric_rows(df, "fewshot_acc"), metric_rows(df, "gflops")
    if acc.empty or g.empty or acc["model"].nunique() < 2:
        return None
    available = sorted(acc["shots"].dropna().unique())
    shots = shots if shots in available else (5 if 5 in available else available[-1])
    acc = acc[acc["shots"] == shots]
    flops = g.groupby(["model", "variant"])["value"].first()
    colors = _model_colors(df)
    datasets = sorted(acc["dataset"].dropna().unique())
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.0 * len(datasets) + 2, 4.0), squeeze=False)
    for ax, ds in zip(axes[0], datasets, strict=True):
        pts = acc[acc["dataset"] == ds].groupby(["model", "variant", "position"], dropna=False)
        pts = pts["value"].agg(["mean", "std"]).reset_index()
        pts["gflops"] = [flops.get((m, v), np.nan) for m, v in zip(pts["model"], pts["variant"], strict=True)]
        pts = pts.dropna(subset=["gflops"])
        for model, c in colors.items():
            mine = pts[pts["model"] == model]
            base, red = mine[mine["variant"] == "baseline"], mine[mine["variant"] != "baseline"]
            for _, r in red.iterrows():
                if len(base):  # the variant joined to its own baseline: what the reducer trades
                    b = base.iloc[0]
                    ax.plot([b["gflops"], r["gflops"]], [b["mean"] * 100, r["mean"] * 100], color=c, lw=0.8, alpha=0.5)
                ax.errorbar(r["gflops"], r["mean"] * 100, yerr=0 if pd.isna(r["std"]) else r["std"] * 100,
                            marker="o", ms=5, color=c, lw=0, elinewidth=1, capsize=2)  # fmt: skip
                ax.annotate(f"p={position_label(r['position'])}", (r["gflops"], r["mean"] * 100),
                            textcoords="offset points", xytext=(4, -8), fontsize=6, color=c)  # fmt: skip
            for _, b in base.iterrows():
                ax.plot(b["gflops"], b["mean"] * 100, marker="*", ms=12, color=c, mec="0.2", mew=0.5, ls="none")
        ax.set_xscale("log")
        ax.margins(x=0.1, y=0.1)
        ax.annotate("better", xy=(0.03, 0.97), xytext=(0.2, 0.8), xycoords="axes fraction",
                    textcoords="axes fraction", fontsize=8, color="0.3", ha="center", va="center",
                    arrowprops=dict(arrowstyle="->", color="0.4", lw=1))  # fmt: skip
        ax.set_xlabel(f"GFLOPs per {item_name(df)} (log scale)")
        ax.set_ylabel(f"{shots}-shot accuracy (%)")
        ax.set_title(f"{ds} (top left is better)", fontsize=10)
    ax = axes[0][-1]
    for model, c in colors.items():
        ax.plot([], [], ls="none", marker="o", color=c, label=model)
    ax.plot([], [], ls="none", marker="*", ms=11, color="0.5", mec="0.2", mew=0.5, label="baseline")
    ax.plot([], [], ls="none", marker="o", color="0.5", label=where_note(acc))
    ax.legend(frameon=False, fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1))
    fig.suptitle(f"Accuracy vs compute across {len(colors)} models", y=1.02)
    sns.despine(fig)
    return fig


FAMILY = {
    "family_gflops_vs_position": family_gflops_vs_position,
    "family_accuracy_vs_gflops": family_accuracy_vs_gflops,
}

