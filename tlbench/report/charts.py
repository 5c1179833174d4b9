"""The paper figures of tlbench.report.plots as chart specs (plain JSON) that the report's page draws
with Chart.js: the same data, grouping and log axes as the PNGs, one chart per PNG panel.

A spec: {figure, model, title, x: {label, log, positions}, y: {label, log}, series: [...]}; a
series: {label, color, shape, line, dash, hollow, reference, points: [[x, y, low, high, key]]}.
`key` indexes the run's variant table (the tooltip's source), `low`/`high` an error bar (std over
seeds, or the speedup's 95% interval). Reference series (a baseline line, the Pareto front, the
diagonal) are drawn but are not marks: `marks(spec)` counts the points a reader can hover.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from tlbench.report.rows import METHOD_LABELS, TEACHER, budget_label, pareto_front
from tlbench.report.rows import item as _item
from tlbench.report.rows import metric_rows as _metric
from tlbench.report.rows import reliable as _reliable
from tlbench.report.rows import series as _series
from tlbench.report.rows import where as _where

# seaborn's "colorblind" palette, as the PNGs use it
COLORS = ("#0173b2", "#de8f05", "#029e73", "#d55e00", "#cc78bc", "#ca9161", "#fbafe4", "#949494",
          "#ece133", "#56b4e9")  # fmt: skip
BASE, FRONT = "#404040", "#d62728"
SHAPES = ("circle", "rect", "triangle", "rectRot", "crossRot", "star", "rectRounded", "cross")
Keys = Callable[[str, str], int | None]  # (model, variant) -> index in the variant table


def _num(x: Any) -> float | None:
    return None if x is None or pd.isna(x) or not math.isfinite(float(x)) else float(x)


def _pt(x: Any, y: Any, low: Any = None, high: Any = None, key: int | None = None) -> list[Any]:
    return [_num(x), _num(y), _num(low), _num(high), key]


def _series_style(keys: list[tuple[str, Any]]) -> dict[tuple[str, Any], dict[str, Any]]:
    """As plots._palette: one method, a colour per token count; several, a colour per method and
    a dash per token count."""
    found = sorted({k for k in keys if not pd.isna(k[1])}, key=str)
    methods, tokens = sorted({m for m, _ in found}), sorted({t for _, t in found})
    out = {}
    for m, t in found:
        one = len(methods) <= 1
        color = COLORS[(tokens.index(t) if one else methods.index(m)) % len(COLORS)]
        out[(m, t)] = dict(color=color, shape="circle" if one else SHAPES[tokens.index(t) % len(SHAPES)],
                           dash=not one and tokens.index(t) % 2 == 1,
                           name=f"{METHOD_LABELS.get(m, m)}, {budget_label((m, t))}")  # fmt: skip
    return out


def _series_dict(label: str, points: list[list[Any]], **style: Any) -> dict[str, Any]:
    return dict(label=label, color=style.get("color", BASE), shape=style.get("shape", "circle"),
                line=style.get("line", False), dash=style.get("dash", False), hollow=style.get("hollow", False),
                reference=style.get("reference", False), stepped=style.get("stepped", False), points=points)  # fmt: skip


def _hline(label: str, y: float, x0: float = 0.0, x1: float = 1.0) -> dict[str, Any]:
    return _series_dict(label, [_pt(x0, y), _pt(x1, y)], line=True, dash=True, reference=True)


def _spec(
    figure: str, model: str, title: str, x: dict, y: dict, series: list[dict]
) -> dict[str, Any]:
    return dict(figure=figure, model=model, title=title, x=x, y=y, series=series)


def _shots(acc: pd.DataFrame) -> int:
    available = sorted(int(k) for k in acc["shots"].dropna().unique())
    return 5 if 5 in available else available[-1]


def accuracy_vs_gflops(df: pd.DataFrame, model: str, key: Keys, item: str) -> list[dict[str, Any]]:
    """Accuracy (mean ± std over seeds) vs GFLOPs at 5 shots (else the most), a chart per probe
    set; the baseline a star, the Pareto front a red step line."""
    acc, g = _metric(df, "fewshot_acc"), _metric(df, "gflops")
    if acc.empty or g.empty:
        return []
    k = _shots(acc)
    flops = g.groupby("variant")["value"].first()
    styles = _series_style(list(_series(acc[acc["variant"] != "baseline"])))
    specs = []
    for ds in sorted(acc["dataset"].dropna().unique()):
        sub = acc[(acc["dataset"] == ds) & (acc["shots"] == k)]
        stats = sub.groupby("variant")["value"].agg(["mean", "std"]) * 100
        stats["gflops"] = flops.reindex(stats.index)
        stats = stats.dropna(subset=["gflops", "mean"])
        series = []
        if "baseline" in stats.index:
            b = stats.loc["baseline"]
            point = _pt(b["gflops"], b["mean"], b["mean"] - (b["std"] or 0), b["mean"] + (b["std"] or 0),
                        key(model, "baseline"))  # fmt: skip
            series.append(_series_dict("baseline", [point], color=BASE, shape="star"))
        red = sub[sub["variant"] != "baseline"]
        for skey, rows in red.groupby(_series(red)):
            names = [v for v in dict.fromkeys(rows["variant"]) if v in stats.index]
            pts = [_pt(stats.at[v, "gflops"], stats.at[v, "mean"], stats.at[v, "mean"] - _std(stats, v),
                       stats.at[v, "mean"] + _std(stats, v), key(model, v)) for v in names]  # fmt: skip
            series.append(
                _series_dict(styles[skey]["name"], pts, **{**styles[skey], "dash": False})
            )
        front = pareto_front(stats["gflops"].to_numpy(), stats["mean"].to_numpy())
        fr = stats.iloc[front]
        series.append(_series_dict("Pareto front", [_pt(x, y) for x, y in zip(fr["gflops"], fr["mean"], strict=True)],
                                   color=FRONT, line=True, reference=True, stepped=True))  # fmt: skip
        specs.append(_spec("accuracy_vs_gflops", model, f"Accuracy vs compute — {model}, {ds}",
                           dict(label=f"GFLOPs per {item}", log=False),
                           dict(label=f"{k}-shot accuracy (%)", log=False), series))  # fmt: skip
    return specs


def _std(stats: pd.DataFrame, v: str) -> float:
    s = stats.at[v, "std"]
    return 0.0 if pd.isna(s) else float(s)


def accuracy_vs_position(
    df: pd.DataFrame, model: str, key: Keys, item: str
) -> list[dict[str, Any]]:
    """Few-shot accuracy vs relative position, a chart per (probe set, shots), a line per
    (method, tokens), the baseline's mean a dashed line."""
    acc = _metric(df, "fewshot_acc")
    if acc.empty:
        return []
    red = acc[acc["variant"] != "baseline"]
    styles = _series_style(list(_series(red)))
    specs = []
    for ds in sorted(acc["dataset"].dropna().unique()):
        for k in sorted(int(s) for s in acc["shots"].dropna().unique()):
            sub = acc[(acc["dataset"] == ds) & (acc["shots"] == k)]
            series = []
            base = sub[sub["variant"] == "baseline"]["value"] * 100
            if len(base):
                series.append(
                    _hline(f"baseline {base.mean():.1f} ± {base.std(ddof=0):.1f}", base.mean())
                )
            r = sub[sub["variant"] != "baseline"]
            for skey, rows in r.groupby(_series(r)):
                stats = (
                    rows.groupby(["position", "variant"])["value"]
                    .agg(["mean", "std"])
                    .reset_index()
                )
                pts = [_pt(s["position"], s["mean"] * 100, (s["mean"] - _z(s["std"])) * 100,
                           (s["mean"] + _z(s["std"])) * 100, key(model, s["variant"]))
                       for _, s in stats.sort_values("position").iterrows()]  # fmt: skip
                series.append(_series_dict(styles[skey]["name"], pts, **styles[skey], line=True))
            specs.append(_spec("accuracy_vs_position", model, f"{ds}, {k}-shot — {model}",
                               dict(label=f"relative position p of {_where(acc)}", log=False, positions=True),
                               dict(label="few-shot accuracy (%)", log=False), series))  # fmt: skip
    return specs


def _z(x: Any) -> float:
    return 0.0 if pd.isna(x) else float(x)


def gflops_vs_position(df: pd.DataFrame, model: str, key: Keys, item: str) -> list[dict[str, Any]]:
    """GFLOPs vs relative position, a line per (method, tokens), the baseline dashed."""
    g = _metric(df, "gflops")
    if g.empty:
        return []
    series = []
    base = g[g["variant"] == "baseline"]["value"]
    if len(base):
        series.append(_hline("baseline", base.iloc[0]))
    red = g[g["variant"] != "baseline"]
    styles = _series_style(list(_series(red)))
    for skey, rows in red.groupby(_series(red)):
        rows = rows.drop_duplicates("variant").sort_values("position")
        pts = [
            _pt(r["position"], r["value"], key=key(model, r["variant"])) for _, r in rows.iterrows()
        ]
        series.append(_series_dict(styles[skey]["name"], pts, **styles[skey], line=True))
    return [_spec("gflops_vs_position", model, f"Compute vs position — {model}",
                  dict(label=f"relative position p of {_where(g)}", log=False, positions=True),
                  dict(label=f"GFLOPs per {item} (1 MAC = 1 FLOP)", log=False, zero=True), series)]  # fmt: skip


def speedup_vs_flops(df: pd.DataFrame, model: str, key: Keys, item: str) -> list[dict[str, Any]]:
    """Measured speedup (95% interval as error bar, hollow when unreliable) vs the FLOP-implied
    one, both axes log, the diagonal where they agree."""
    sp, g = _metric(df, "speedup"), _metric(df, "gflops")
    flops = g.groupby("variant")["value"].first()
    if sp.empty or "baseline" not in flops:
        return []
    sp = sp[sp["variant"] != "baseline"].drop_duplicates("variant").copy()
    sp["implied"] = flops["baseline"] / sp["variant"].map(flops)
    sp = sp.dropna(subset=["implied"])
    if sp.empty:
        return []
    styles = _series_style(list(_series(sp)))
    lo = min(
        0.95,
        sp["value"].min() / 1.05,
        sp["ci_low"].min(skipna=True) / 1.05 if sp["ci_low"].notna().any() else 1,
    )
    hi = (
        max(
            sp["implied"].max(),
            sp["value"].max(),
            sp["ci_high"].max(skipna=True) if sp["ci_high"].notna().any() else 1,
        )
        * 1.1
    )
    series = [
        _series_dict(
            "speedup = FLOP ratio", [_pt(lo, lo), _pt(hi, hi)], line=True, dash=True, reference=True
        )
    ]
    for skey, rows in sp.groupby(_series(sp)):
        for shaky in (False, True):
            part = rows[[(not _reliable(r)) == shaky for _, r in rows.iterrows()]]
            if part.empty:
                continue
            pts = [_pt(r["implied"], r["value"], r["ci_low"], r["ci_high"], key(model, r["variant"]))
                   for _, r in part.iterrows()]  # fmt: skip
            label = styles[skey]["name"] + (" (unreliable)" if shaky else "")
            series.append(_series_dict(label, pts, **{**styles[skey], "dash": False}, hollow=shaky))
    dev = sp["device"].dropna().unique()
    where = f"{model} on {dev[0]}" if len(dev) else model
    return [_spec("speedup_vs_flops", model, f"Wall-clock vs FLOPs — {where}",
                  dict(label="FLOP-implied speedup (×)", log=True, min=lo, max=hi),
                  dict(label="measured speedup (×)", log=True, min=lo, max=hi), series)]  # fmt: skip


def accuracy_vs_position_adapt(
    df: pd.DataFrame, model: str, key: Keys, item: str
) -> list[dict[str, Any]]:
    """Accuracy vs position before (dashed, hollow) and after (solid) adaptation, a chart per
    probe set, where reducer variants were probed at both stages."""
    acc = df[(df["metric"] == "fewshot_acc") & np.isfinite(df["value"].astype("float64"))]
    red = acc[acc["variant"] != "baseline"]
    init, after = red[red["stage"] == "quality_init"], red[red["stage"] == "quality"]
    common = sorted(set(init["shots"].dropna()) & set(after["shots"].dropna()))
    datasets = sorted(set(init["dataset"].dropna()) & set(after["dataset"].dropna()))
    if not common or not datasets:
        return []
    k = 5 if 5 in common else max(common)
    styles = _series_style(list(_series(red)))
    specs = []
    for ds in datasets:
        series = []
        base = acc[(acc["variant"] == "baseline") & (acc["stage"] == "quality") & (acc["dataset"] == ds)
                   & (acc["shots"] == k)]["value"]  # fmt: skip
        if len(base):
            series.append(_hline("trained baseline", base.mean() * 100))
        for stage, before in (("quality_init", True), ("quality", False)):
            rows = red[(red["stage"] == stage) & (red["dataset"] == ds) & (red["shots"] == k)]
            for skey, g in rows.groupby(_series(rows)):
                mean = (
                    g.groupby(["position", "variant"])["value"]
                    .mean()
                    .reset_index()
                    .sort_values("position")
                )
                pts = [
                    _pt(r["position"], r["value"] * 100, key=key(model, r["variant"]))
                    for _, r in mean.iterrows()
                ]
                label = styles[skey]["name"] + (" — before" if before else " — after")
                series.append(
                    _series_dict(
                        label, pts, **{**styles[skey], "dash": before}, line=True, hollow=before
                    )
                )
        specs.append(_spec("accuracy_vs_position_adapt", model, f"Before vs after adaptation — {model}, {ds}",
                           dict(label=f"relative position p of {_where(acc)}", log=False, positions=True),
                           dict(label=f"{k}-shot accuracy (%)", log=False), series))  # fmt: skip
    return specs


def agreement_vs_position(df: pd.DataFrame, model: str, key: Keys, item: str) -> list[dict[str, Any]]:
    """Teacher cosine and top-1 agreement with the unreduced model vs position, a chart per
    measure (as the PNG's panels); a distill run's off-the-shelf stage dashed and hollow."""
    rows = df[df["metric"].isin(list(TEACHER)) & (df["variant"] != "baseline")]
    rows = rows[np.isfinite(rows["value"].astype("float64"))]
    if rows.empty:
        return []
    stages = [st for st in ("quality_init", "quality") if (rows["stage"] == st).any()]
    styles = _series_style(list(_series(rows)))
    specs = []
    for metric, name in TEACHER.items():
        series = [_hline("the unreduced model", 1.0)]
        for stage in stages:
            before = stage == "quality_init" and len(stages) > 1
            sub = rows[(rows["metric"] == metric) & (rows["stage"] == stage)]
            for skey, g in sub.groupby(_series(sub)):
                mean = g.groupby(["position", "variant"])["value"].mean().reset_index()
                pts = [_pt(r["position"], r["value"], key=key(model, r["variant"]))
                       for _, r in mean.sort_values("position").iterrows()]  # fmt: skip
                label = styles[skey]["name"] + ((" — before" if before else " — after") if len(stages) > 1 else "")
                series.append(_series_dict(label, pts, **{**styles[skey], "dash": before}, line=True,
                                           hollow=before))  # fmt: skip
        specs.append(_spec("agreement_vs_position", model, f"{name.capitalize()} with the unreduced model — {model}",
                           dict(label=f"relative position p of {_where(rows)}", log=False, positions=True),
                           dict(label=f"{name} (1 = the unreduced model)", log=False), series))  # fmt: skip
    return specs


def family_gflops_vs_position(df: pd.DataFrame, key: Keys, item: str) -> list[dict[str, Any]]:
    """GFLOPs vs position, a colour per model, GFLOPs on a log axis (as the family PNG)."""
    g = _metric(df, "gflops")
    models = list(dict.fromkeys(g["model"].dropna()))
    if len(models) < 2:
        return []
    series = []
    red = g[g["variant"] != "baseline"]
    keys = sorted(set(_series(red)), key=str)  # a shape and dash per (method, tokens)
    for i, m in enumerate(models):
        color = COLORS[i % len(COLORS)]
        base = g[(g["model"] == m) & (g["variant"] == "baseline")]["value"]
        if len(base):
            series.append({**_hline(f"{m} baseline", base.iloc[0]), "color": color})
        mine = red[red["model"] == m]
        for skey, rows in mine.groupby(_series(mine)):
            rows = rows.drop_duplicates("variant").sort_values("position")
            pts = [
                _pt(r["position"], r["value"], key=key(m, r["variant"])) for _, r in rows.iterrows()
            ]
            j = keys.index(skey)
            label = f"{m}, {METHOD_LABELS.get(skey[0], skey[0])} {budget_label(skey)}"
            series.append(_series_dict(label, pts, color=color, line=True, shape=SHAPES[j % len(SHAPES)],
                                       dash=j % 2 == 1))  # fmt: skip
    return [_spec("family_gflops_vs_position", "", f"Compute vs position — {len(models)} models",
                  dict(label=f"relative position p of {_where(g)}", log=False, positions=True),
                  dict(label=f"GFLOPs per {item} (log scale)", log=True), series)]  # fmt: skip


def family_accuracy_vs_gflops(df: pd.DataFrame, key: Keys, item: str) -> list[dict[str, Any]]:
    """Accuracy vs GFLOPs across models, a chart per probe set, GFLOPs on a log axis; each
    model's baseline a star."""
    acc, g = _metric(df, "fewshot_acc"), _metric(df, "gflops")
    if acc.empty or g.empty or acc["model"].nunique() < 2:
        return []
    k = _shots(acc)
    flops = g.groupby(["model", "variant"])["value"].first()
    specs = []
    for ds in sorted(acc["dataset"].dropna().unique()):
        sub = acc[(acc["dataset"] == ds) & (acc["shots"] == k)]
        stats = sub.groupby(["model", "variant"])["value"].agg(["mean", "std"]).reset_index()
        series = []
        for i, m in enumerate(dict.fromkeys(stats["model"])):
            mine = stats[stats["model"] == m]
            for is_base in (True, False):
                part = mine[(mine["variant"] == "baseline") == is_base]
                pts = [_pt(flops.get((m, r["variant"])), r["mean"] * 100, (r["mean"] - _z(r["std"])) * 100,
                           (r["mean"] + _z(r["std"])) * 100, key(m, r["variant"]))
                       for _, r in part.iterrows() if (m, r["variant"]) in flops.index]  # fmt: skip
                if pts:
                    series.append(_series_dict(f"{m} baseline" if is_base else m, pts,
                                               color=COLORS[i % len(COLORS)], shape="star" if is_base else "circle"))  # fmt: skip
        specs.append(_spec("family_accuracy_vs_gflops", "", f"Accuracy vs compute across models — {ds} (top left is better)",
                           dict(label=f"GFLOPs per {item} (log scale)", log=True),
                           dict(label=f"{k}-shot accuracy (%)", log=False), series))  # fmt: skip
    return specs


PER_MODEL = (accuracy_vs_gflops, accuracy_vs_position, gflops_vs_position, speedup_vs_flops,
             accuracy_vs_position_adapt, agreement_vs_position)  # fmt: skip
FAMILY = (family_accuracy_vs_gflops, family_gflops_vs_position)


def run_charts(df: pd.DataFrame, key: Keys) -> list[dict[str, Any]]:
    """Every chart the rows have data for: the family charts first (several models), then each
    model's own, in the order of plots.FIGURES. GFLOPs are per image, or per clip for video."""
    item = _item(df) if len(df) else "image"
    models = list(dict.fromkeys(df["model"].dropna()))
    specs = [s for make in FAMILY for s in make(df, key, item)] if len(models) > 1 else []
    for m in models:
        mine = df[df["model"] == m]
        specs += [s for make in PER_MODEL for s in make(mine, m, key, item)]
    return specs


def marks(spec: dict[str, Any]) -> int:
    """Points a reader can hover in a chart: every point of its non-reference series."""
    return sum(len(s["points"]) for s in spec["series"] if not s["reference"])
