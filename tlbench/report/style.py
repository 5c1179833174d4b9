"""What every matplotlib figure shares: settings, colours and markers, legends; the row helpers
and labels come from rows.py, which the HTML report shares without importing matplotlib."""


from __future__ import annotations

import matplotlib.pyplot as plt  # headless machines fall back to Agg by themselves
import numpy as np
import pandas as pd
import seaborn as sns

from tlbench.report.rows import (  # noqa: F401 (shared names)
    METHOD_LABELS,
    REDUCER,
    TEACHER,
    budget_kind,
    budget_label,
    metric_rows,
    pareto_front,
)
from tlbench.report.rows import item as item_name  # noqa: F401
from tlbench.report.rows import reliable as is_reliable  # noqa: F401
from tlbench.report.rows import series as series_keys  # noqa: F401
from tlbench.report.rows import where as where_note  # noqa: F401

BASE_COLOR = "0.25"


RC = {"pdf.fonttype": 42, "ps.fonttype": 42, "savefig.dpi": 200, "axes.titleweight": "bold"}


def apply_style() -> None:
    sns.set_theme(context="paper", style="ticks", palette="colorblind", font_scale=1.15, rc=RC)


def series_palette(keys: pd.Series) -> dict[tuple[str, int], dict]:
    """Line style per (method, tokens): with one method a colour per token count (the paper's
    figure); with several a colour per method and a marker and dash per token count."""
    found = sorted({k for k in keys if not pd.isna(k[1])})
    methods, tokens = sorted({m for m, _ in found}), sorted({t for _, t in found})
    if len(methods) <= 1:
        colors = sns.color_palette("colorblind", max(len(tokens), 1))
        return {k: dict(color=colors[tokens.index(k[1])], marker="o", ls="-") for k in found}
    colors = sns.color_palette("colorblind", len(methods))
    return {(m, t): dict(color=colors[methods.index(m) % len(colors)],
                         marker=MARKERS[tokens.index(t) % 4], ls=LINES[tokens.index(t) % 4])
            for m, t in found}  # fmt: skip


def series_label(key: tuple[str, int], keys: dict[tuple[str, int], dict], short: bool = False) -> str:
    """'TokenLearner, 8 tokens'; '8 tokens' in a short legend when one method is shown."""
    method = key[0]
    if short and len({m for m, _ in keys}) == 1:
        return budget_label(key)
    return f"{METHOD_LABELS.get(method, method)}, {budget_label(key)}"


def model_title(df: pd.DataFrame) -> str:
    models = sorted(df["model"].dropna().unique())
    return ", ".join(models)


def position_label(p: float) -> str:
    """0, 1/4, 1/2, 3/4, 1, 2/11: a simple fraction when p is one; else 3 digits."""
    from fractions import Fraction

    f = Fraction(float(p)).limit_denominator(24)
    return str(f) if abs(float(f) - p) < 1e-9 else f"{p:.3g}"


def position_axis(ax: plt.Axes, limits: bool = True) -> None:
    """The relative-position x axis every position figure shares: ticks 0, 1/4, 1/2, 3/4, 1, and
    (with `limits`) a small margin past 0 and 1."""
    if limits:
        ax.set_xlim(-0.05, 1.05)
    ax.set_xticks([0, 0.25, 0.5, 0.75, 1])
    ax.set_xticklabels(["0", "1/4", "1/2", "3/4", "1"])


def slug(model: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9._-]+", "_", model)


def bottom_margin(fig: plt.Figure) -> float:
    """The lowest point of anything drawn, in figure coordinates (below 0 for a legend under it)."""
    box = fig.get_tightbbox(fig.canvas.get_renderer())
    return min(0.0, box.y0 / fig.get_figheight())


def axes_legend(ax: plt.Axes, series: int) -> None:
    """Inside the axes for a few lines; beside them when several methods would cover the data."""
    if series > 3:
        ax.legend(frameon=False, fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1))
    else:
        ax.legend(frameon=False, fontsize=8)


def figure_legend(fig: plt.Figure, axes: np.ndarray) -> None:
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=min(len(labels), 4), frameon=False,
               bbox_to_anchor=(0.5, 0.0))  # fmt: skip  (below the axes, however many rows)
    sns.despine(fig)
    fig.tight_layout(rect=(0, 0, 1, 0.97))

MARKERS, LINES = ("o", "s", "^", "D"), ("-", "--", ":", "-.")
