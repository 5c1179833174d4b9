"""Figures from synthetic tables: accuracy vs GFLOPs with several methods, the adaptation figure."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib
import pandas as pd
import pytest

from tlbench.report.plots import (
    POSITION_MARKERS,
    accuracy_vs_gflops,
    accuracy_vs_position_adapt,
    agreement_vs_position,
    plot_results,
    speedup_vs_flops,
)
from tlbench.results import to_frame

matplotlib.use("Agg")


def frame(methods: tuple[str, ...], stages: tuple[str, ...] = ("quality",), tokens: tuple[int, ...] = (4,),
          positions: tuple[float, ...] = (0.0, 0.5)) -> pd.DataFrame:  # fmt: skip
    """A run's rows: baseline and (method x position x tokens), GFLOPs and 1/5-shot accuracy."""
    rows: list[dict[str, Any]] = []

    def add(variant: str, method: str | None, p: float | None, s: int | None, gflops: float, acc: float) -> None:
        key = dict(model="tiny", variant=variant, method=method, position=p, num_tokens=s)
        rows.append(dict(key, stage="compute", metric="gflops", value=gflops, unit="GFLOPs"))
        for stage in stages if method else ("quality",):
            lift = 0.1 if stage == "quality" else 0.0
            for ds, shots, seed in ((d, k, i) for d in ("digits", "mnist") for k in (1, 5) for i in (0, 1)):
                rows.append(dict(key, stage=stage, metric="fewshot_acc", value=acc + lift + 0.01 * seed,
                                 unit="acc", dataset=ds, shots=shots, seed=seed))  # fmt: skip

    add("baseline", None, None, None, 2.0, 0.8)
    for i, m in enumerate(methods):
        for p in positions:
            for s in tokens:
                add(f"{m}-p{p:g}-s{s}", m, p, s, 1.0 + p, 0.5 + 0.2 * p - 0.05 * i)
    return to_frame(rows)


def points(fig: Any) -> list[tuple[str, tuple]]:
    """(marker, colour) of every plotted data point in the first panel."""
    ax = fig.axes[0]
    return [(ln.get_marker(), tuple(ln.get_color()) if not isinstance(ln.get_color(), str) else ln.get_color())
            for ln in ax.lines if len(ln.get_xdata()) == 1 and ln.get_marker() not in ("_", "None")]  # fmt: skip


def test_several_methods_colour_by_method_and_mark_the_position() -> None:
    fig = accuracy_vs_gflops(frame(("tokenlearner", "topk")))
    marks = points(fig)
    reduced = [(m, c) for m, c in marks if m != "*"]
    assert len(reduced) == 4
    assert {m for m, _ in reduced} == set(POSITION_MARKERS[:2])  # a marker per position
    assert len({c for _, c in reduced}) == 2  # a colour per method
    by_marker = {}
    for m, c in reduced:
        by_marker.setdefault(m, set()).add(c)
    assert all(len(cs) == 2 for cs in by_marker.values())  # each position shown in both colours
    labels = [t.get_text() for t in fig.axes[-1].get_legend().get_texts()]
    assert {"TokenLearner", "Top-K", "p = 0", "p = 1/2", "baseline", "Pareto front"} <= set(labels)
    assert not [t for t in fig.axes[0].texts if t.get_text().startswith("p=")]  # markers say it


def test_speedup_figure_with_several_methods_marks_positions_not_text() -> None:
    """Many methods at the same positions crowd together: markers name the position, no labels."""
    df = frame(("tokenlearner", "topk", "tome"))
    speed = df[df["metric"] == "gflops"].drop_duplicates("variant").assign(
        stage="speed", metric="speedup", unit="x", value=lambda d: 2.0 / d["value"],
        ci_low=lambda d: 1.8 / d["value"], ci_high=lambda d: 2.2 / d["value"], device="cpu")
    fig = speedup_vs_flops(pd.concat([df, speed], ignore_index=True))
    reduced = points(fig)
    assert len(reduced) == 6 and {m for m, _ in reduced} == set(POSITION_MARKERS[:2])
    assert len({c for _, c in reduced}) == 3 and not fig.axes[0].texts
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert {"ToMe", "p = 1/2", "speedup = FLOP ratio"} <= set(labels) and "Pareto front" not in labels


def test_one_method_keeps_its_look() -> None:
    fig = accuracy_vs_gflops(frame(("tokenlearner",), tokens=(4, 8)))
    reduced = [(m, c) for m, c in points(fig) if m != "*"]
    assert {m for m, _ in reduced} == {"o"} and len({c for _, c in reduced}) == 2  # colour per S
    assert {t.get_text() for t in fig.axes[0].texts} >= {"p=0", "p=0.5", "baseline"}


def test_several_token_counts_of_several_methods_differ_by_fill() -> None:
    fig = accuracy_vs_gflops(frame(("tokenlearner", "topk"), tokens=(4, 8)))
    fills = {ln.get_fillstyle() for ln in fig.axes[0].lines
             if len(ln.get_xdata()) == 1 and ln.get_marker() in POSITION_MARKERS}  # fmt: skip
    assert fills == {"full", "none"}
    labels = [t.get_text() for t in fig.axes[-1].get_legend().get_texts()]
    assert {"S = 4", "S = 8"} <= set(labels)


BOTH = ("quality_init", "quality")


def test_the_adaptation_figure_needs_both_stages(tmp_path: Path) -> None:
    drawn = {p.name for p in plot_results(frame(("tokenlearner", "topk"), BOTH), tmp_path)}
    assert {"accuracy_vs_position_adapt.png", "accuracy_vs_position_adapt.pdf"} <= drawn
    assert accuracy_vs_position_adapt(frame(("tokenlearner",))) is None  # after only
    before_only = frame(("tokenlearner",), BOTH)
    before_only = before_only[~((before_only["stage"] == "quality") & (before_only["variant"] != "baseline"))]
    assert accuracy_vs_position_adapt(before_only) is None


@pytest.mark.parametrize(("adapt", "before", "after"), [("distill", "off the shelf", "distilled"),
                                                        ("scratch", "initial", "trained"),
                                                        (None, "before adaptation", "after adaptation")])  # fmt: skip
def test_the_adaptation_figure_names_its_stages(adapt: str | None, before: str, after: str) -> None:
    fig = accuracy_vs_position_adapt(frame(("tokenlearner", "topk"), BOTH), adapt=adapt)
    labels = {t.get_text() for t in fig.legends[0].get_texts()}
    assert {before, after} <= labels
    ax = fig.axes[0]
    assert ax.get_ylabel().startswith("5-shot")  # 5 when present
    dashed = [ln for ln in ax.lines if ln.get_linestyle() == "--"]
    solid = [ln for ln in ax.lines if ln.get_linestyle() == "-" and ln.get_marker() != "None"]
    assert len(dashed) == len(solid) == 2  # one line per method and stage
    assert all(ln.get_ydata()[0] < sl.get_ydata()[0] for ln, sl in zip(dashed, solid, strict=True))
    assert [len(ax.get_lines()) for ax in fig.axes] == [5, 5]  # + the baseline line per panel


def with_agreement(df: pd.DataFrame, stages: tuple[str, ...]) -> pd.DataFrame:
    """df plus teacher_cosine and teacher_agreement rows of every reducer variant at each stage:
    higher at later positions, higher after adaptation."""
    red = df[(df["metric"] == "gflops") & (df["variant"] != "baseline")]
    rows = []
    for _, r in red.iterrows():
        for stage in stages:
            lift = 0.3 if stage == "quality" else 0.0
            for metric in ("teacher_cosine", "teacher_agreement"):
                rows.append(dict(model=r["model"], variant=r["variant"], method=r["method"],
                                 position=r["position"], num_tokens=r["num_tokens"], stage=stage,
                                 metric=metric, value=0.5 * r["position"] + lift + 0.1,
                                 unit="fraction", dataset="mnist"))  # fmt: skip
    return pd.concat([df, to_frame(rows)], ignore_index=True)


def test_the_agreement_figure_draws_each_reducer_against_the_unreduced_model(tmp_path: Path) -> None:
    """Off the shelf (adapt = none): a solid line per series and measure, the unreduced model at 1;
    a distill run: dashed, hollow off the shelf under the solid distilled line; no rows, no figure."""
    plain = frame(("tokenlearner", "topk"))
    assert agreement_vs_position(plain) is None
    assert "agreement_vs_position.png" not in {p.name for p in plot_results(plain, tmp_path / "a")}
    fig = agreement_vs_position(with_agreement(plain, ("quality",)))
    assert [ax.get_title() for ax in fig.axes] == ["pre-logit cosine", "top-1 agreement"]
    for ax in fig.axes:
        lines = [ln for ln in ax.lines if ln.get_marker() != "None"]
        assert len(lines) == 2 and all(ln.get_linestyle() == "-" for ln in lines)
        assert list(lines[0].get_xdata()) == [0.0, 0.5]
        assert [ln.get_ydata()[0] for ln in ax.lines if ln.get_marker() == "None"] == [1.0]
    labels = {t.get_text() for t in fig.legends[0].get_texts()}
    assert "the unreduced model" in labels and "off the shelf" not in labels

    fig = agreement_vs_position(with_agreement(frame(("tokenlearner",), BOTH), BOTH), adapt="distill")
    labels = {t.get_text() for t in fig.legends[0].get_texts()}
    assert {"off the shelf", "distilled"} <= labels
    ax = fig.axes[0]
    dashed = [ln for ln in ax.lines if ln.get_linestyle() == "--"]
    solid = [ln for ln in ax.lines if ln.get_linestyle() == "-" and ln.get_marker() != "None"]
    assert len(dashed) == len(solid) == 1 and dashed[0].get_markerfacecolor() == "white"
    assert dashed[0].get_ydata()[0] < solid[0].get_ydata()[0]
    drawn = {p.name for p in plot_results(with_agreement(plain, ("quality",)), tmp_path / "b")}
    assert {"agreement_vs_position.png", "agreement_vs_position.pdf"} <= drawn


def test_a_per_block_schedule_is_a_series_per_r_not_per_derived_token_count() -> None:
    """tome_r keeps a different S at every position; its series is its r, read back from the
    reducer's own variant name, and a legend says 'r = 2' where it would say '8 tokens'."""
    from tlbench.report.rows import budget_label, series
    from tlbench.variants import make_variant

    names = [make_variant("tiny", p, 4, method="tome_r", params={"r": r}).name
             for p in (0.0, 0.5) for r in (1, 2)]  # fmt: skip
    df = pd.DataFrame({"variant": [*names, "p0.5-s4"], "method": ["tome_r"] * 4 + ["tokenlearner"],
                       "num_tokens": [12, 8, 14, 12, 4]})  # fmt: skip
    keys = list(series(df))
    assert keys == [("tome_r", 1.0), ("tome_r", 2.0), ("tome_r", 1.0), ("tome_r", 2.0), ("tokenlearner", 4)]
    assert [budget_label(k) for k in keys[:2] + keys[-1:]] == ["r = 1", "r = 2", "4 tokens"]
    runs = frame(("tokenlearner", "tome_r"), tokens=(4, 8))
    runs["variant"] = runs["variant"].str.replace(r"^(tome_r-p[0-9.]+)-s(\d+)$", r"\1-r\2", regex=True)
    fig = accuracy_vs_gflops(runs)
    labels = [t.get_text() for t in fig.axes[-1].get_legend().get_texts()]
    assert "budget" in labels  # the fill section names S and r alike


def test_an_unreliable_speedup_is_faded_where_the_fill_names_the_budget() -> None:
    """Several methods and token counts: the fill says S, so an unreliable interval must not
    also be drawn hollow; it is faded, and the legend shows it faded."""
    df = frame(("tokenlearner", "topk"), tokens=(4, 8))
    speed = df[df["metric"] == "gflops"].drop_duplicates("variant").assign(
        stage="speed", metric="speedup", unit="x", value=lambda d: 2.0 / d["value"],
        ci_low=lambda d: 1.0 / d["value"], ci_high=lambda d: 3.0 / d["value"], device="cpu",
        reliable=lambda d: d["variant"] != "topk-p0-s4")  # fmt: skip
    fig = speedup_vs_flops(pd.concat([df, speed], ignore_index=True))
    marks = [ln for ln in fig.axes[0].lines if len(ln.get_xdata()) == 1 and ln.get_marker() in POSITION_MARKERS]
    faded = [ln for ln in marks if ln.get_alpha() == 0.35]
    assert len(marks) == 8 and len(faded) == 1
    assert {ln.get_fillstyle() for ln in marks} == {"full", "none"}  # S = 4 and S = 8, both kept
    legend = {t.get_text(): h for t, h in zip(fig.axes[0].get_legend().get_texts(),
                                              fig.axes[0].get_legend().legend_handles, strict=True)}  # fmt: skip
    assert legend["unreliable (95% CI wider than ±10%)"].get_alpha() == 0.35
