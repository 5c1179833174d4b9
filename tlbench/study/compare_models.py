"""Compute across models: TokenLearner variants of some models against the plain baselines of others.

The write-up's point is that a ViT with smaller patches and TokenLearner (L/10 + TL) costs less
than a bigger plain ViT (G/14) in both GFLOPs and parameters. A sweep covers one model; this
counts several (fvcore, part by part: count_flops_composed, so G/14's 48 identical blocks are
traced once) and writes one table and one figure.
"""

from __future__ import annotations

import json
import platform
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import tlbench
from tlbench import files
from tlbench.measure.flops import VariantFlops, count_variants
from tlbench.report.style import BASE_COLOR, apply_style, position_label
from tlbench.study.manifest import git_sha
from tlbench.variants import make_variants

SHORT = {  # paper-style names for the figure and the table
    "vit_l10": "L/10", "vit_l8": "L/8", "vit_gigantic_patch14_224": "G/14",
    "vit_large_patch16_224": "L/16", "vit_base_patch16_224": "B/16", "vit_huge_patch14_224": "H/14",
}  # fmt: skip


def compare_models(
    models: Sequence[str],
    positions: Sequence[float],
    tokens: Sequence[int],
    references: Sequence[str],
    version: str = "1.1",
) -> list[VariantFlops]:
    """Each of `models` plain and with TokenLearner at every position x token count, then each of
    `references` plain; one model in memory at a time (G/14 alone is 7.4 GB of float32)."""
    rows: list[VariantFlops] = []
    for name in models:
        rows += count_variants(make_variants(name, list(positions), list(tokens), version=version))
    for name in references:
        rows += count_variants(make_variants(name, [], []))
    return rows


def label(row: VariantFlops) -> str:
    """'L/10 + 8 TL at 1/2' or 'G/14'."""
    name = SHORT.get(row.model, row.model)
    if row.block_index is None:
        return name

    return f"{name} + {row.num_tokens} TL at {position_label(row.position)}"


def write_comparison(rows: list[VariantFlops], out_dir: str | Path) -> list[Path]:
    """compute.csv, compute.json (rows + versions + command) and compute.png/.pdf under out_dir."""
    import fvcore
    import pandas as pd
    import timm
    import torch


    out = files.make_dir(out_dir)  # a refused path: one line
    records = [{"label": label(r), **{k: v for k, v in asdict(r).items() if k != "zero_ops"}}
               for r in rows]  # fmt: skip
    files.write_text(out / "compute.csv", pd.DataFrame(records).to_csv(index=False))
    meta = {
        "rows": records,
        "convention": "fvcore: 1 multiply-add = 1 FLOP, per image; params include a 1000-class head",
        "versions": {"tlbench": tlbench.__version__, "torch": torch.__version__, "timm": timm.__version__,
                     "fvcore": getattr(fvcore, "__version__", "unknown"),
                     "python": platform.python_version()},  # fmt: skip
        "git_sha": git_sha(),
        "argv": sys.argv,
    }
    files.write_text(out / "compute.json", json.dumps(meta, indent=2) + "\n")
    return [out / "compute.csv", out / "compute.json", *plot_comparison(records, out)]


def plot_comparison(records: list[dict], out_dir: Path) -> list[Path]:
    """Two bar panels, GFLOPs and parameters, one bar per row; plain models in grey."""
    import matplotlib.pyplot as plt


    apply_style()
    labels = [r["label"] for r in records]
    colors = [BASE_COLOR if r["block_index"] is None else "C0" for r in records]
    fig, axes = plt.subplots(1, 2, figsize=(10, 0.45 * len(records) + 1.4), sharey=True)
    for ax, key, title in [(axes[0], "gflops", "GFLOPs per image"), (axes[1], "params_m", "parameters (M)")]:
        values = [r[key] for r in records]
        ax.barh(labels, values, color=colors)
        for y, v in enumerate(values):
            ax.text(v, y, f" {v:,.1f}", va="center", fontsize=8)
        ax.set_xlim(0, max(values) * 1.25)
        ax.set_title(title)
    axes[0].invert_yaxis()  # first row on top (the y axis is shared)
    fig.suptitle("TokenLearner at smaller patches vs bigger plain ViTs, 224 px (fvcore)")
    fig.tight_layout()
    paths = [out_dir / "compute.png", out_dir / "compute.pdf"]

    try:
        for path in paths:
            files.write_with(path, lambda tmp, p=path: fig.savefig(tmp, format=p.suffix[1:], bbox_inches="tight"))
    finally:
        plt.close(fig)
    return paths
