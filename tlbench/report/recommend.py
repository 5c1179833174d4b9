"""Which variant fits my budget? A finished (or partial) run's variants against a compute, speed
and accuracy budget, ranked, with the Pareto front over (GFLOPs, accuracy) marked.

Budget semantics (what a user can rely on):
- `max_gflops`: the fvcore `gflops` row (1 fused multiply-add = 1 FLOP, per image) <= X.
- `min_speedup`: the 95% bootstrap interval's *lower bound* (`ci_low`) >= Y, so that a variant
  which only looks fast on a noisy machine is not recommended; the point estimate is reported
  next to it. A speedup row without an interval is judged on its point estimate, and says so.
- `max_accuracy_drop`: baseline accuracy - variant accuracy, in percentage points, on *every*
  probe set chosen (the worst drop <= Z): a budget is a guarantee, not an average. Accuracy is
  the stage `quality` few-shot accuracy at one shot count, mean over seeds.
- A variant that lacks a metric some budget needs is "not measured", never passed or dropped.

A variant is (model, variant): a run of several models judges each against its own model's
baseline, and ranks them together (the Pareto front spans the models).

Ranking: variants that fit first, Pareto-optimal ones first among them, then by mean accuracy
(highest first) and GFLOPs (lowest first). The Pareto front is taken among the fitting variants
(the best trade-offs the budget allows): a variant is on it unless another fitting variant has
lower-or-equal GFLOPs and higher-or-equal mean accuracy, one of them strictly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from tlbench import results
from tlbench.errors import ConfigError
from tlbench.report import picks

FITS, OVER, NOT_MEASURED = "fits", "over budget", "not measured"
KEY = ["model", "variant"]  # a variant's identity: two models of a run share variant names


@dataclass(frozen=True)
class Budget:
    """Limits; None means no limit on that axis. At least one must be set."""

    max_gflops: float | None = None
    min_speedup: float | None = None  # judged on the interval's lower bound
    max_accuracy_drop: float | None = None  # percentage points, worst probe set

    def check(self) -> None:
        if self.max_gflops is None and self.min_speedup is None and self.max_accuracy_drop is None:
            raise ConfigError(
                "give at least one budget: --max-gflops, --min-speedup or --max-accuracy-drop"
            )
        for name, v in vars(self).items():
            if v is not None and not (math.isfinite(v) and v >= 0):
                raise ConfigError(f"--{name.replace('_', '-')} must be a number >= 0; got {v}")


def accuracy_table(
    df: pd.DataFrame, datasets: list[str] | None = None, shots: int | None = None
) -> tuple[pd.DataFrame, int | None, list[str]]:
    """Mean over seeds of stage-`quality` few-shot accuracy, in %, one column per probe set, at
    one shot count (`shots`; default 5 if measured, else the largest). Returns (table indexed by
    (model, variant), shots used, datasets used); an empty table when the run has no accuracy rows."""
    acc = df[(df["metric"] == "fewshot_acc") & (df["stage"] == "quality") & df["value"].notna()]
    if acc.empty:
        return pd.DataFrame(), None, []
    measured = sorted(int(k) for k in acc["shots"].dropna().unique())
    if shots is not None and shots not in measured:
        raise ConfigError(
            f"--shots {shots}: the run measured {', '.join(map(str, measured))} shots"
        )
    k = shots if shots is not None else (5 if 5 in measured else measured[-1])
    present = sorted(str(d) for d in acc["dataset"].dropna().unique())
    chosen = datasets or present
    unknown = [d for d in chosen if d not in present]
    if unknown:
        raise ConfigError(f"--dataset {', '.join(unknown)}: the run probed {', '.join(present)}")
    sel = acc[(acc["shots"] == k) & acc["dataset"].isin(chosen)]
    table = (
        sel.pivot_table(index=KEY, columns="dataset", values="value", aggfunc="mean") * 100
    )
    return table.reindex(columns=chosen), k, chosen


def recommend(
    run_dir: str | Path,
    budget: Budget,
    *,
    datasets: list[str] | None = None,
    shots: int | None = None,
    model: str | None = None,
) -> pd.DataFrame:
    """Every variant of the run with its metrics, verdict (fits / over budget / not measured)
    and reason, Pareto flag (among fitting variants; None without GFLOPs or accuracy), ranked.

    `model` keeps one model of a several-model run (an alias or the run's name for it).

    Columns: rank (fitting variants only), variant, model, method, position, block_index, num_tokens,
    gflops, speedup, speedup_low, speedup_high, acc_<dataset> (%), acc_mean, acc_drop (worst, in
    points), verdict, reason, pareto. Raises ConfigError for a budget on a metric the run lacks.
    """
    budget.check()
    df = results.load_results(run_dir)
    units = results.read_units(Path(run_dir))
    if model is not None:
        name = picks.pick_model(run_dir, [*df["model"].dropna(), *(m for m, _, _ in units)], model)
        df, units = df[df["model"] == name], {k: u for k, u in units.items() if k[0] == name}
    metrics = set(df["metric"].dropna())
    for need, flag in (
        ("gflops", "max_gflops"),
        ("speedup", "min_speedup"),
        ("fewshot_acc", "max_accuracy_drop"),
    ):
        if getattr(budget, flag) is not None and need not in metrics:
            raise ConfigError(f"{run_dir}: --{flag.replace('_', '-')} needs {need} rows, and this run "
                              f"has none (its metrics: {', '.join(sorted(metrics)) or 'no rows yet'})")  # fmt: skip
    out, chosen = variant_table(df, units, datasets, shots)
    verdicts = [_verdict(row, budget, units, chosen) for _, row in out.iterrows()]
    out["verdict"] = [v for v, _ in verdicts]
    out["reason"] = [r for _, r in verdicts]
    out["pareto"] = _pareto(out)
    order = {FITS: 0, NOT_MEASURED: 1, OVER: 2}
    out = out.reset_index()
    out = out[["variant", "model", *(c for c in out.columns if c not in KEY)]]
    out = out.assign(_v=out["verdict"].map(order), _p=~out["pareto"].fillna(False).astype(bool))
    out = out.sort_values(["_v", "_p", "acc_mean", "gflops", "variant", "model"],
                          ascending=[True, True, False, True, True, True], na_position="last", kind="stable")  # fmt: skip
    out = out.drop(columns=["_v", "_p"]).reset_index(drop=True)
    fits = out["verdict"] == FITS
    out.insert(
        0, "rank", pd.array([i + 1 if f else None for i, f in enumerate(fits)], dtype="Int64")
    )
    return out


def variant_table(
    df: pd.DataFrame,
    units: dict[tuple[str, str, str], dict[str, Any]],
    datasets: list[str] | None = None,
    shots: int | None = None,
) -> tuple[pd.DataFrame, list[str]]:
    """The metrics every budget is judged on, one row per (model, variant): method, position,
    block_index, num_tokens, gflops, speedup(_low, _high), acc_<dataset> (%), acc_mean, acc_drop
    (worst, in points, against the variant's own model's baseline), shots; and the probe sets
    chosen. Shared by `recommend` and the HTML report, which judges it against budgets in the page."""
    keys = list(dict.fromkeys([*zip(df["model"], df["variant"], strict=True), *((m, v) for m, v, _ in units)]))
    index = pd.MultiIndex.from_tuples(keys, names=KEY) if keys else pd.MultiIndex.from_arrays([[], []], names=KEY)
    meta = df.drop_duplicates(KEY).set_index(KEY).reindex(index)
    out = pd.DataFrame(index=index)
    base = out.index.get_level_values("variant") == "baseline"  # a variant with only ledger lines: no method
    out["method"] = meta["method"].where(meta["position"].notna() | ~base, "baseline")
    for col in ("position", "block_index", "num_tokens"):
        out[col] = meta[col]
    gflops = df[df["metric"] == "gflops"].drop_duplicates(KEY).set_index(KEY)["value"]
    out["gflops"] = gflops.reindex(out.index)
    sp = df[df["metric"] == "speedup"].drop_duplicates(KEY).set_index(KEY)
    out["speedup"] = sp["value"].reindex(out.index)
    out["speedup_low"] = sp["ci_low"].reindex(out.index)
    out["speedup_high"] = sp["ci_high"].reindex(out.index)
    table, k, chosen = accuracy_table(df, datasets, shots)
    drops = pd.DataFrame(index=out.index)
    for ds in chosen:
        out[f"acc_{ds}"] = table[ds].reindex(out.index)
        base = {m: table[ds].get((m, "baseline"), math.nan) for m in out.index.get_level_values("model")}
        drops[ds] = [base[m] - a for (m, _), a in out[f"acc_{ds}"].items()]  # each model's own baseline
    acc_cols = [f"acc_{ds}" for ds in chosen]
    # a mean over fewer probe sets than chosen would not compare: NaN unless every one is measured
    out["acc_mean"] = out[acc_cols].mean(axis=1, skipna=False) if acc_cols else math.nan
    out["acc_drop"] = drops.max(axis=1, skipna=False) if chosen else math.nan
    out["shots"] = k
    return out, chosen


def _verdict(row: pd.Series, b: Budget, units: dict, chosen: list[str]) -> tuple[str, str]:
    """(verdict, reason): the first missing metric a budget needs, else every limit it breaks."""
    missing, over, notes = [], [], []
    if b.max_gflops is not None:
        if pd.isna(row["gflops"]):
            missing.append(_why_missing(row, "compute", "gflops", units))
        elif row["gflops"] > b.max_gflops:
            over.append(f"{row['gflops']:.4g} GFLOPs > {b.max_gflops:g}")
    if b.min_speedup is not None:
        low = row["speedup_low"] if pd.notna(row["speedup_low"]) else row["speedup"]
        if pd.isna(low):
            missing.append(_why_missing(row, "speed", "speedup", units))
        else:
            if pd.isna(row["speedup_low"]):
                notes.append("no speedup interval: judged on the point estimate")
            if low < b.min_speedup:
                over.append(f"speedup {'lower bound ' if pd.notna(row['speedup_low']) else ''}"
                            f"{low:.3g}x < {b.min_speedup:g}x")  # fmt: skip
    if b.max_accuracy_drop is not None:
        if pd.isna(row["acc_mean"]):
            missing.append(_why_missing(row, "quality", "accuracy", units))
        elif pd.isna(row["acc_drop"]):
            missing.append("no baseline accuracy to measure the drop from")
        elif row["acc_drop"] > b.max_accuracy_drop:
            over.append(f"accuracy drop {row['acc_drop']:.2f} pt > {b.max_accuracy_drop:g}")
    if missing:
        return NOT_MEASURED, "; ".join(missing + notes)
    if over:
        return OVER, "; ".join(over + notes)
    return FITS, "; ".join(notes)


def _why_missing(row: pd.Series, stage: str, what: str, units: dict) -> str:
    """'no speedup (speed failed: ...)': the ledger's word for a unit that lacks the metric."""
    u = units.get((*row.name, stage))  # row.name: (model, variant)
    if u is None:
        return f"no {what} ({stage} not run)"
    if u["status"] == "done":
        return f"no {what} in the rows of its {stage} unit"
    return f"no {what} ({stage} {u['status']}" + (f": {u['reason']})" if u.get("reason") else ")")


def _pareto(out: pd.DataFrame) -> list[bool | None]:
    """Among fitting variants with GFLOPs and accuracy, True when no other one dominates; None
    for a variant outside that set (not fitting, or lacking either number)."""
    ok = (out["verdict"] == FITS) & out["gflops"].notna() & out["acc_mean"].notna()
    pts = [(v, out.at[v, "gflops"], out.at[v, "acc_mean"]) for v in out.index[ok]]
    flags: list[bool | None] = []
    for v in out.index:
        if not ok[v]:
            flags.append(None)
            continue
        g, a = out.at[v, "gflops"], out.at[v, "acc_mean"]
        flags.append(
            not any(w != v and g2 <= g and a2 >= a and (g2 < g or a2 > a) for w, g2, a2 in pts)
        )
    return flags


def to_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """JSON-ready records: NaN and pandas NA become None, numpy scalars plain Python."""
    records = []
    for row in frame.to_dict(orient="records"):
        rec = {}
        for k, v in row.items():
            if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
                rec[k] = None
            elif hasattr(v, "item"):
                rec[k] = v.item()
            else:
                rec[k] = v
        records.append(rec)
    return records
