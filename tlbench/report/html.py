"""One self-contained HTML page per run (or per set of runs): the run's answer first, then every
paper figure as an interactive chart, the maps, the variant and long-row tables, budgets the
reader sets, what did not run and the manifest.

The page is data plus one script: the run's tables are read here through the results readers
(load_results, read_units, recommend.variant_table, check.compare_runs) and embedded as JSON; the
page's own code (assets/page.js) and Chart.js (assets/chart.umd.min.js, MIT, vendored once) are
inlined, so the file opens offline from file:// and nothing is fetched.
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd

from tlbench import files, results
from tlbench.errors import ResultsError
from tlbench.report.charts import run_charts
from tlbench.report.compare import ACC_TOL, compare_runs, passed
from tlbench.report.recommend import _why_missing, variant_table
from tlbench.report.rows import METHOD_LABELS

REPORT = "report.html"
LOG_TAIL = 20  # lines of a failed unit's traceback shown in the page


def write_report(run_dirs: Sequence[str | Path], out: str | Path | None = None) -> Path:
    """Write the report of one run (default RUN_DIR/report.html) or of several compared with the
    first as reference (default ./compare.html); returns the path. A damaged run raises
    ResultsError before anything is written."""
    runs = [Path(r) for r in run_dirs]
    if not runs:
        raise ResultsError("give at least one run directory")
    payload = report_payload(runs)
    path = (
        Path(out)
        if out is not None
        else (runs[0] / REPORT if len(runs) == 1 else Path("compare.html"))
    )
    files.write_text(path, render(payload))
    return path


def report_payload(runs: Sequence[Path]) -> dict[str, Any]:
    """Everything the page shows, as JSON-ready data."""
    payload: dict[str, Any] = {"runs": [run_payload(r) for r in runs], "compare": []}
    if len(runs) > 1:
        payload["compare"] = [compare_payload(r, runs[0]) for r in runs[1:]]
    return payload


def run_payload(run_dir: Path) -> dict[str, Any]:
    """One run: manifest, variant table, charts, tables, units not done, maps."""

    df = results.load_results(run_dir)  # a missing run, manifest or a damaged row: ResultsError
    manifest = results.read_manifest(run_dir)
    units = results.read_units(run_dir)
    models = list(dict.fromkeys([*df["model"].dropna(), *(m for m, _, _ in units)]))
    variants: list[dict[str, Any]] = []
    datasets: list[str] = []
    shots = None
    for m in models:  # budgets are judged against each model's own baseline
        mine = df[df["model"] == m]
        table, chosen = variant_table(mine, {k: u for k, u in units.items() if k[0] == m})
        datasets = datasets or chosen
        shots = (
            shots if shots is not None else (None if table.empty else _int(table["shots"].iloc[0]))
        )
        every = _every_accuracy(mine)
        for (_, name), r in table.iterrows():
            variants.append(
                _variant_record(m, str(name), r, chosen, every.get(str(name), []), mine, units)
            )
    index = {(v["model"], v["variant"]): i for i, v in enumerate(variants)}
    charts = run_charts(df, lambda m, v: index.get((m, v)))
    metrics = set(df["metric"].dropna())
    return {
        "dir": str(run_dir), "run_id": manifest.get("run_id", run_dir.name),
        "name": manifest["config"].get("name", run_dir.parent.name), "models": models,
        "manifest": manifest, "question": _question(manifest, models),
        "missing": _missing(df, metrics, units), "datasets": datasets, "shots": shots,
        "variants": variants, "front": _front(variants), "charts": charts,
        "summary": _table(results.summary(df, units=units)) if len(df) or units else None,
        "rows": _table(df.dropna(axis=1, how="all")), "not_done": _not_done(run_dir, units),
        "status": _status_line(manifest, units), "maps": _maps(run_dir), "map_tables": _map_tables(run_dir),
        "hosts": _distinct(df, "host"), "gpus": _distinct(df, "gpu"),
        "finished": max((str(u.get("finished", "")) for u in units.values()), default=None),
        "has": {"accuracy": "fewshot_acc" in metrics, "gflops": "gflops" in metrics, "speedup": "speedup" in metrics},
    }  # fmt: skip


def _distinct(df: pd.DataFrame, col: str) -> list[str]:
    return sorted(str(x) for x in df[col].dropna().unique()) if col in df else []


def _int(x: Any) -> int | None:
    return None if x is None or pd.isna(x) else int(x)


def _clean(x: Any) -> Any:
    """JSON-ready scalar: NaN/NA -> None, numpy -> Python."""
    if x is None or x is pd.NA or (isinstance(x, float) and not math.isfinite(x)):
        return None
    if hasattr(x, "item"):
        x = x.item()
        return None if isinstance(x, float) and not math.isfinite(x) else x
    return x


def _every_accuracy(df: pd.DataFrame) -> dict[str, list[list[Any]]]:
    """variant -> [[dataset, shots, mean accuracy %, seeds]] for every trained probe cell."""
    acc = df[(df["metric"] == "fewshot_acc") & (df["stage"] == "quality") & df["value"].notna()]
    out: dict[str, list[list[Any]]] = {}
    for (v, ds, k), g in acc.groupby(["variant", "dataset", "shots"]):
        out.setdefault(str(v), []).append([str(ds), int(k), float(g["value"].mean() * 100), len(g)])
    return out


def _variant_record(model: str, name: str, r: pd.Series, chosen: list[str], every: list[list[Any]],
                    df: pd.DataFrame, units: dict) -> dict[str, Any]:  # fmt: skip
    """One variant as the tooltip, the budgets and the tables read it."""

    sp = df[(df["metric"] == "speedup") & (df["variant"] == name)]
    reliable = (
        None
        if sp.empty or pd.isna(sp["reliable"].iloc[0])
        else sp["reliable"].iloc[0] in (True, "True", 1)
    )
    thr = df[(df["metric"] == "throughput") & (df["variant"] == name)]["value"]
    r = r.copy()
    r["model"] = model  # a variant known only from the ledger has no model in the rows' table
    rec = {
        "model": model, "variant": name, "method": r["method"], "method_label": METHOD_LABELS.get(r["method"], r["method"]),
        "position": r["position"], "block": r["block_index"], "tokens": r["num_tokens"], "gflops": r["gflops"],
        "throughput": thr.iloc[0] if len(thr) else None, "speedup": r["speedup"], "speedup_low": r["speedup_low"],
        "speedup_high": r["speedup_high"], "reliable": reliable, "acc": {ds: r[f"acc_{ds}"] for ds in chosen},
        "acc_mean": r["acc_mean"], "acc_drop": r["acc_drop"], "every_acc": every,
        "why": {what: _why_missing(r, stage, label, units)
                for what, stage, label in (("gflops", "compute", "gflops"), ("speedup", "speed", "speedup"),
                                           ("acc", "quality", "accuracy"))},
    }  # fmt: skip
    return {k: ({d: _clean(a) for d, a in v.items()} if k in ("acc", "why") else v if k == "every_acc" else _clean(v))
            for k, v in rec.items()}  # fmt: skip


def _front(variants: list[dict[str, Any]]) -> list[int]:
    """Indices of the variants on the (GFLOPs, mean accuracy) Pareto front, cheapest first, by
    recommend's rule: on it unless another is at most as costly and at least as accurate, one of
    them strictly (what the page's budgets show with no limit set)."""
    pts = [(i, v["gflops"], v["acc_mean"]) for i, v in enumerate(variants)
           if v["gflops"] is not None and v["acc_mean"] is not None]  # fmt: skip
    front = [i for i, g, a in pts
             if not any(j != i and g2 <= g and a2 >= a and (g2 < g or a2 > a) for j, g2, a2 in pts)]  # fmt: skip
    return sorted(front, key=lambda i: (variants[i]["gflops"], -variants[i]["acc_mean"]))


def _question(manifest: dict[str, Any], models: list[str]) -> str:
    cfg = manifest["config"]
    grid = cfg.get("grid", {}) if isinstance(cfg.get("grid"), dict) else {}
    methods = ", ".join(METHOD_LABELS.get(m, m) for m in grid.get("methods", ["tokenlearner"]))
    stages = [
        s
        for s in ("compute", "speed", "quality")
        if isinstance(cfg.get(s), dict) and cfg[s].get("enabled")
    ]
    where = ", ".join(models) or cfg.get("model", {}).get("name", "the model")
    return (f"Where in {where} should tokens be reduced, and by how much ({methods}; positions "
            f"{grid.get('positions', 'all')}, tokens {grid.get('tokens', '?')})? Measured: {', '.join(stages) or 'nothing'}.")  # fmt: skip


def _missing(df: pd.DataFrame, metrics: set[str], units: dict) -> list[str]:
    """What the page cannot show, in words."""
    out = []
    if df.empty:
        out.append("This run has no result rows yet: no figures, tables or budgets can be drawn.")
    else:
        if "gflops" not in metrics:
            out.append(
                "No compute rows (gflops): the GFLOPs figures and the max-GFLOPs budget are not available."
            )
        if "speedup" not in metrics:
            out.append(
                "No speed rows (speedup): the speedup figure and the min-speedup budget are not available."
            )
        if "fewshot_acc" not in metrics:
            out.append("No quality rows (few-shot accuracy): the accuracy figures, the Pareto front "
                       "and the accuracy-drop budget are not available.")  # fmt: skip
    bad = sum(u["status"] != "done" for u in units.values())
    if bad:
        out.append(f"{bad} units did not finish (skipped or failed): see 'What did not run'.")
    return out


def _table(frame: pd.DataFrame) -> dict[str, Any]:
    """{columns, rows} with JSON-ready cells: compact for the long rows."""
    return {"columns": [str(c) for c in frame.columns],
            "rows": [[_clean(x) for x in row] for row in frame.itertuples(index=False, name=None)]}  # fmt: skip


def _not_done(run_dir: Path, units: dict) -> list[dict[str, Any]]:
    """Skipped and failed units with their reason and the tail of the log a failure wrote."""
    out = []
    for (model, variant, stage), u in units.items():
        if u["status"] == "done":
            continue
        tail = ""
        if u.get("log"):
            log = Path(u["log"]) if Path(u["log"]).is_absolute() else run_dir / u["log"]
            if log.is_file():
                tail = "\n".join(
                    log.read_text(encoding="utf-8", errors="replace").splitlines()[-LOG_TAIL:]
                )
        out.append({"model": model, "variant": variant, "stage": stage, "status": u["status"],
                    "reason": u.get("reason") or u.get("error") or "", "log": u.get("log"), "tail": tail})  # fmt: skip
    for log in sorted((run_dir / "logs").glob("*.log")) if (run_dir / "logs").is_dir() else []:
        if log.stem in ("figures", "maps", "report"):  # drawing errors of the sweep's end
            text = log.read_text(encoding="utf-8", errors="replace").splitlines()
            out.append({"model": "", "variant": "", "stage": log.stem, "status": "failed",
                        "reason": text[-1] if text else "", "log": str(log.relative_to(run_dir)),
                        "tail": "\n".join(text[-LOG_TAIL:])})  # fmt: skip
    return out


def _status_line(manifest: dict[str, Any], units: dict) -> str:
    """Units planned (the manifest's variants x enabled stages) against the ledger's outcomes.
    status.run_status says the same, but expands the config through the model zoo (imports
    torch and timm: seconds); the manifest already lists the variants."""
    cfg = manifest["config"]
    stages = [
        s
        for s in ("compute", "speed", "quality")
        if isinstance(cfg.get(s), dict) and cfg[s].get("enabled")
    ]
    planned = len(manifest.get("variants") or []) * len(stages)
    counts = {s: sum(u["status"] == s for u in units.values()) for s in results.STATUSES}
    recorded = ", ".join(f"{n} {s}" for s, n in counts.items())
    left = planned - sum(counts.values())
    tail = f", {left} not recorded (not started, or cut short)" if planned and left > 0 else ""
    if not units:  # nothing finished yet, or a run from before the ledger
        return f"{planned} units planned; no unit ledger entries"
    return f"{planned or len(units)} units planned: {recorded}{tail}"


def _maps(run_dir: Path) -> list[dict[str, str]]:
    """The TokenLearner maps the sweep drew (maps over time for video runs), as inline PNGs."""
    fig = run_dir / "figures"
    return [{"name": p.stem, "src": "data:image/png;base64," + base64.b64encode(p.read_bytes()).decode()}
            for p in sorted(fig.glob("maps-*.png"))] if fig.is_dir() else []  # fmt: skip


def _map_tables(run_dir: Path) -> list[dict[str, Any]]:
    """maps.csv (digit mass) and tracking.csv (maps over time), as the sweep wrote them."""
    out = []
    for name in ("maps.csv", "tracking.csv"):
        path = run_dir / "figures" / name
        if path.is_file():
            out.append({"name": name, **_table(pd.read_csv(path))})
    return out


def compare_payload(run: Path, reference: Path) -> dict[str, Any]:
    """tlbench compare's verdict for RUN against REFERENCE and its findings that are not ok."""

    findings = compare_runs(run, reference, acc_tol=ACC_TOL)
    bad = [f for f in findings if f.status != "ok"]
    return {"run": str(run), "reference": str(reference), "passed": passed(findings), "checks": len(findings),
            "acc_tol": ACC_TOL, "findings": [{k: _clean(getattr(f, k)) for k in
                                              ("model", "variant", "stage", "metric", "dataset", "shots",
                                               "status", "value", "reference_value", "note")} for f in bad]}  # fmt: skip


def _asset(name: str) -> str:
    return resources.files("tlbench.report").joinpath("assets", name).read_text(encoding="utf-8")


def render(payload: dict[str, Any]) -> str:
    """The page: styles, data and scripts inline. '</' is escaped in the JSON so that no value
    can close its script element."""
    data = json.dumps(payload, allow_nan=False, separators=(",", ":"), default=str).replace(
        "</", "<\\/"
    )
    runs = payload["runs"]
    title = "tlbench report — " + ", ".join(f"{r['name']}/{r['run_id']}" for r in runs)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{_asset('page.css')}</style></head>\n"
        '<body><div id="app"><p>Loading the report…</p></div>\n'
        f'<script id="tlbench-data" type="application/json">{data}</script>\n'
        f"<script>{_asset('chart.umd.min.js')}</script>\n<script>{_asset('page.js')}</script>\n"
        "</body></html>\n"
    )
