"""What every figure shares: matplotlib settings, method labels and colours, legends, the Pareto front."""


from __future__ import annotations

import matplotlib.pyplot as plt  # headless machines fall back to Agg by themselves
import numpy as np
import pandas as pd
import seaborn as sns

from tlbench.backbones.video import VIDEO_MODELS

BASE_COLOR = "0.25"


RC = {"pdf.fonttype": 42, "ps.fonttype": 42, "savefig.dpi": 200, "axes.titleweight": "bold"}


def apply_style() -> None:
    sns.set_theme(context="paper", style="ticks", palette="colorblind", font_scale=1.15, rc=RC)


def metric_rows(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Rows of one metric with a finite value; accuracy only after training (stage 'quality')."""
    rows = df[(df["metric"] == metric) & np.isfinite(df["value"].astype("float64"))]
    return rows[rows["stage"] == "quality"] if metric == "fewshot_acc" else rows


METHOD_LABELS = {"tokenlearner": "TokenLearner", "patchmerger": "PatchMerger", "pool": "pooling",
                 "random": "random drop", "topk": "Top-K", "evit": "EViT", "tome": "ToMe"}  # fmt: skip


def series_keys(df: pd.DataFrame) -> pd.Series:
    """One line per (method, token count): the key every figure colours by. Rows written before
    methods existed have no method: they are TokenLearner's."""
    method = df["method"] if "method" in df else pd.Series(None, index=df.index, dtype=object)
    method = method.where(method.notna(), "tokenlearner")
    return pd.Series(list(zip(method, df["num_tokens"], strict=True)), index=df.index)


REDUCER = "the reducer"


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
    method, tokens = key
    if short and len({m for m, _ in keys}) == 1:
        return f"{int(tokens)} tokens"
    return f"{METHOD_LABELS.get(method, method)}, {int(tokens)} tokens"


def where_note(df: pd.DataFrame) -> str:
    """What 'position' places: TokenLearner, or any of several reducers."""
    methods = {m for m, _ in series_keys(df[df["variant"] != "baseline"])}
    return METHOD_LABELS.get(next(iter(methods)), REDUCER) if len(methods) == 1 else REDUCER


def model_title(df: pd.DataFrame) -> str:
    models = sorted(df["model"].dropna().unique())
    return ", ".join(models)


def item_name(df: pd.DataFrame) -> str:
    """What one input is: a clip for video models, else an image."""

    models = set(df["model"].dropna()) if "model" in df else set()
    return "clip" if models and models <= set(VIDEO_MODELS) else "image"


def position_label(p: float) -> str:
    """0, 1/4, 1/2, 3/4, 1, 2/11: a simple fraction when p is one; else 3 digits."""
    from fractions import Fraction

    f = Fraction(float(p)).limit_denominator(24)
    return str(f) if abs(float(f) - p) < 1e-9 else f"{p:.3g}"


def is_reliable(row: pd.Series) -> bool:
    """A speedup is unreliable when its run said so; rows from before intervals count as reliable."""
    flag = row.get("reliable")
    return flag is None or (isinstance(flag, float) and np.isnan(flag)) or flag in (True, "True", 1)


def pareto_front(cost: np.ndarray, value: np.ndarray) -> np.ndarray:
    """Indices of points no other point beats (lower or equal cost, higher value), by cost."""
    order = np.argsort(cost, kind="stable")
    front, best = [], -np.inf
    for i in order:
        if value[i] > best:
            front.append(i)
            best = value[i]
    return np.array(front, dtype=int)


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
