"""The row selections and labels the report's charts share with tlbench.report.plots, without importing
matplotlib and seaborn (seconds of a `tlbench report` that draws nothing with them). They must
read as plots.py's do: tests/test_report.py checks that they agree."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd

from tlbench.backbones.video import VIDEO_MODELS

METHOD_LABELS = {"tokenlearner": "TokenLearner", "patchmerger": "PatchMerger", "pool": "pooling",
                 "random": "random drop", "topk": "Top-K", "evit": "EViT", "tome": "ToMe",
                 "tome_r": "ToMe per block"}  # fmt: skip
REDUCER = "the reducer"
# The label-free measures against the unreduced model, as a figure's panels name them
TEACHER = {"teacher_cosine": "pre-logit cosine", "teacher_agreement": "top-1 agreement"}


def metric_rows(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Rows of one metric with a finite value; accuracy only after training (stage 'quality')."""
    rows = df[(df["metric"] == metric) & np.isfinite(df["value"].astype("float64"))]
    return rows[rows["stage"] == "quality"] if metric == "fewshot_acc" else rows


# Methods whose series is keyed by their own parameter, not by the tokens a variant keeps: a
# per-block schedule keeps a different S at every position (tome_r: r merged per block). The
# parameter ends the variant's name ('tome_r-p0.25-r2': ToMePerBlock.label).
SERIES_PARAM = {"tome_r": "r"}


def series(df: pd.DataFrame) -> pd.Series:
    """(method, budget) per row: a chart's series; the budget is the token count S, or the method's
    SERIES_PARAM (tome_r's r). Rows from before methods: TokenLearner's."""
    method = df["method"] if "method" in df else pd.Series(None, index=df.index, dtype=object)
    method = method.where(method.notna(), "tokenlearner")
    budget = [_param(v, SERIES_PARAM[m], t) if m in SERIES_PARAM else t
              for m, v, t in zip(method, df["variant"], df["num_tokens"], strict=True)]  # fmt: skip
    return pd.Series(list(zip(method, budget, strict=True)), index=df.index)


def _param(variant: Any, name: str, default: Any) -> Any:
    found = re.search(rf"-{name}(\d+)$", str(variant))
    return float(found.group(1)) if found else default


def budget_kind(method: str) -> str:
    """What a series' budget counts: 'S' (tokens kept) or the method's own parameter ('r')."""
    return SERIES_PARAM.get(method, "S")


def budget_label(key: tuple[str, Any]) -> str:
    """'8 tokens', or 'r = 2' for tome_r."""
    method, value = key
    kind = budget_kind(method)
    return f"{int(value)} tokens" if kind == "S" else f"{kind} = {int(value)}"


def where(df: pd.DataFrame) -> str:
    """What 'position' places: TokenLearner, or any of several reducers."""
    methods = {m for m, _ in series(df[df["variant"] != "baseline"])}
    return METHOD_LABELS.get(next(iter(methods)), REDUCER) if len(methods) == 1 else REDUCER


def reliable(row: pd.Series | dict[str, Any]) -> bool:
    """A speedup is unreliable when its run said so; rows from before intervals count as reliable."""
    flag = row.get("reliable")
    return flag is None or (isinstance(flag, float) and np.isnan(flag)) or flag in (True, "True", 1)


def pareto_front(cost: np.ndarray, value: np.ndarray) -> np.ndarray:
    """Indices of points no other point beats (lower or equal cost, higher value), by cost."""
    front, best = [], -np.inf
    for i in np.argsort(cost, kind="stable"):
        if value[i] > best:
            front.append(i)
            best = value[i]
    return np.array(front, dtype=int)


def item(df: pd.DataFrame) -> str:
    """What one input is: a clip for video models, else an image."""

    models = set(df["model"].dropna()) if "model" in df else set()
    return "clip" if models and models <= set(VIDEO_MODELS) else "image"
