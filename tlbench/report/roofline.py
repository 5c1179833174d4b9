"""figures/roofline: each variant's achieved FLOP/s against its arithmetic intensity under the
device's measured roofs, beside where its time went (matmul, attention, the rest).

Reads the speed-stage roofline rows of a sweep (results.METRICS: achieved_tflops,
arith_intensity, peak_tflops, peak_gbs, time_share_*) or `tlbench bench` records; one panel pair
per model (and dtype/compile setting, when a run has several).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tlbench.report.token_maps import save_figure

POINT_KEYS = ("achieved_tflops", "arith_intensity", "peak_tflops", "peak_gbs",
              "time_share_matmul", "time_share_attention", "time_share_other")  # fmt: skip
SHARES = (("time_share_matmul", "matmul", "#4c72b0"), ("time_share_attention", "attention", "#dd8452"),
          ("time_share_other", "other", "#bbbbbb"))  # fmt: skip


def points_from_rows(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, dtype, compile, variant) with the POINT_KEYS as columns, from a run's
    long rows; empty when the run has no roofline rows."""
    speed = df[(df["stage"] == "speed") & df["metric"].isin(POINT_KEYS)]
    if speed.empty:
        return pd.DataFrame(columns=["model", "setting", "variant", *POINT_KEYS])
    speed = speed.assign(setting=_setting(speed))
    wide = speed.pivot_table(index=["model", "setting", "variant"], columns="metric", values="value",
                             aggfunc="last", sort=False).reset_index()  # fmt: skip
    return wide.dropna(subset=["achieved_tflops", "arith_intensity"])


def points_from_records(records: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """The same table from `tlbench bench` records (bench.RECORD_KEYS)."""
    rows = [{"model": r["model"], "variant": r["variant"],
             "setting": f"{r['dtype']}, {'compiled ' + r['compile_mode'] if r['compiled'] else 'eager'}",
             **{k: r.get(k) for k in POINT_KEYS}} for r in records]  # fmt: skip
    df = pd.DataFrame(rows)
    return df.dropna(subset=["achieved_tflops", "arith_intensity"]) if not df.empty else df


def _setting(df: pd.DataFrame) -> pd.Series:
    dtype = df["dtype"].astype(str) if "dtype" in df else pd.Series("", index=df.index)
    comp = (
        df["compile"].fillna("eager").astype(str)
        if "compile" in df
        else pd.Series("eager", index=df.index)
    )
    return dtype + ", " + comp.where(comp == "eager", "compiled " + comp)


def plot_roofline(points: pd.DataFrame, out_stem: str | Path, title: str = "") -> list[Path]:
    """OUT_STEM.png/.pdf: per model and setting, the roofline panel and the time-share bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt


    groups = list(points.groupby(["model", "setting"], sort=False))
    if not groups:
        return []
    fig, axes = plt.subplots(len(groups), 2, figsize=(12, 4.2 * len(groups)), squeeze=False,
                             gridspec_kw={"width_ratios": [1.3, 1]})  # fmt: skip
    for ((model, setting), frame), (ax, bars) in zip(groups, axes, strict=True):
        g = pd.concat(
            [frame[frame["variant"] == "baseline"], frame[frame["variant"] != "baseline"]]
        )
        peak, bw = float(g["peak_tflops"].iloc[0]), float(g["peak_gbs"].iloc[0])
        x = g["arith_intensity"].to_numpy(float)
        knee = peak * 1e3 / bw  # FLOP/B where the bandwidth roof meets the compute roof
        lo, hi = min(x.min(), knee) / 4, max(x.max(), knee) * 4
        grid = np.geomspace(lo, hi, 200)
        ax.loglog(grid, np.minimum(peak, bw * grid / 1e3), "k-", lw=1.5,
                  label=f"roof: matmul {peak:.3g} TFLOP/s, copy {bw:.3g} GB/s (measured)")  # fmt: skip
        for (_, r), color in zip(g.iterrows(), plt.cm.tab10.colors * 10, strict=False):
            roof = min(peak, bw * r["arith_intensity"] / 1e3)
            ax.loglog(r["arith_intensity"], r["achieved_tflops"], "o", color=color,
                      label=f"{r['variant']}: {r['achieved_tflops'] / roof:.0%} of its roof")  # fmt: skip
        ax.set_xlabel("arithmetic intensity (FLOP per byte an eager pass moves)")
        ax.set_ylabel("achieved TFLOP/s (2 x MACs x img/s)")
        ax.set_title(f"{model}, {setting}")
        y = g["achieved_tflops"].to_numpy(float)
        ax.set_xlim(lo, hi)
        ax.set_ylim(min(y.min(), bw * lo / 1e3) / 2, max(y.max(), peak) * 2)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)
        ax.grid(True, which="both", alpha=0.3)
        names = list(g["variant"])
        left = np.zeros(len(g))
        for key, label, color in SHARES:
            share = g[key].fillna(0).to_numpy(float)
            bars.barh(names, share, left=left, color=color, label=label)
            left += share
        bars.invert_yaxis()
        bars.set_xlim(0, 1)
        bars.set_xlabel("share of a profiled forward pass's wall time")
        bars.legend(fontsize=7, loc="lower right")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, out_stem)


def run_roofline(df: pd.DataFrame, fig_dir: Path) -> list[Path]:
    """figures/roofline.png/.pdf of a sweep run, when its speed stage measured the roofline."""
    points = points_from_rows(df)
    return plot_roofline(points, Path(fig_dir) / "roofline") if not points.empty else []
