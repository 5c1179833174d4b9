"""Tidy results on disk: manifest first, rows appended per finished variant, CSV view.

Layout of one run, `<out>/<sweep>/<run_id>/`:
- manifest.json: resolved config, versions, git SHA, device; written before any row;
- rows.jsonl: one JSON object per (model, variant, stage, metric[, dataset, shots, seed]) row;
  each finished unit of work is appended with one write() + flush + fsync, so a crash loses at
  most the variant in flight, and a truncated last line is the only damage a kill can do;
- results.csv: the same rows, regenerated from rows.jsonl after every append;
- units.jsonl: the unit ledger, one line per finished (model, variant, stage) unit: done, skipped
  (with the reason) or failed (error class, one-line message, the traceback's log file). A unit is
  done when its ledger line is written, after its rows: rows of a unit without one (a kill between
  the two writes) are dropped on resume and the unit runs again, so no row is lost or duplicated.
Runs written before the ledger existed have no units.jsonl: their units count as done by their rows.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from tlbench import files, schema
from tlbench.errors import ResultsError

# metric -> unit: the one vocabulary. Axes (shots, seed, dataset) are columns, never in the name.
METRICS: dict[str, str] = {
    "gflops": "GFLOPs",  # fvcore, 1 fused multiply-add = 1 FLOP, per image
    "gflops_analytic": "GFLOPs",
    "params_m": "M",
    "throughput": "img/s",
    "latency_ms": "ms",  # median per batch
    "speedup": "x",  # throughput / baseline throughput, timed interleaved in the same run
    # roofline (measure/roofline.py), speed stage: FLOPs = 2 x analytic MACs
    "efficiency": "x",  # speedup / FLOP-implied speedup (1: every saved FLOP saved time)
    "mfu": "frac",  # achieved FLOP/s / this run's measured matmul peak (same device, dtype)
    "achieved_tflops": "TFLOP/s",
    "arith_intensity": "FLOP/B",  # FLOPs / bytes an eager pass moves, per image at the batch
    "peak_tflops": "TFLOP/s",  # the roofs, measured once per run on the device
    "peak_gbs": "GB/s",
    "time_share_matmul": "frac",  # of one profiled run's wall time
    "time_share_attention": "frac",
    "time_share_other": "frac",
    "fewshot_acc": "acc",  # fraction in [0, 1]
    "teacher_agreement": "acc",  # distilled variants: top-1 agreement with the baseline (teacher)
    "teacher_cosine": "cos",  # and mean cosine of the pre-logits, on held-out training-set images
    "adapt_loss": "loss",
    "adapt_seconds": "s",  # wall time of the training stage
    "estimate_seconds": "s",  # what the cost estimate predicted for it, before it ran
}
COLUMNS = [
    "run_id", "model", "variant", "method", "position", "block_index", "num_tokens", "stage", "metric",
    "value", "unit", "dataset", "shots", "seed", "batch_size", "device", "dtype",
    "attn_kernel",  # speed rows: the attention kernel(s) that ran, e.g. 'flash' (kernels.py)
    "host", "gpu",  # speed rows: the machine (node) and the GPU (UUID; none on a CPU) that timed it
    "ci_low", "ci_high", "reliable",  # an interval for `value` where one is measured (speedup)
]  # fmt: skip
INT_COLUMNS = ["block_index", "num_tokens", "shots", "seed", "batch_size"]
REQUIRED = {"model", "variant", "stage", "metric", "value", "unit"}
MANIFEST, ROWS, CSV, UNITS = "manifest.json", "rows.jsonl", "results.csv", "units.jsonl"
JOBS = "jobs.jsonl"  # executor runs: one line per unit submitted as a job (unit, job id, time)
STATUSES = ("done", "skipped", "failed")
UNIT_OF_STAGE = {"quality_init": "quality"}  # row stage -> the unit that writes it


def make_row(variant: Any, stage: str, metric: str, value: float, **extra: Any) -> dict[str, Any]:
    """One long-format row for a tlbench.backbones.vit.Variant; extra columns (shots, seed, ...) as given."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; add it to results.METRICS")
    return {
        "model": variant.model, "variant": variant.name,
        "method": None if variant.block_index is None else getattr(variant, "method", "tokenlearner"),
        "position": variant.position,
        "block_index": variant.block_index, "num_tokens": variant.num_tokens, "stage": stage,
        "metric": metric, "value": float(value), "unit": METRICS[metric], **extra,
    }  # fmt: skip


def write_manifest(run_dir: Path, manifest: dict[str, Any]) -> None:
    """Write manifest.json atomically, then start an empty unit ledger (the run's format marker)."""
    files.write_text(Path(run_dir) / MANIFEST, json.dumps(manifest, indent=2, default=str) + "\n")
    files.append_text(Path(run_dir) / UNITS, "")


def read_manifest(run_dir: Path) -> dict[str, Any]:
    """manifest.json as a dict with a 'config' table; anything else is a ResultsError."""
    path = Path(run_dir) / MANIFEST
    if not path.is_file():
        raise ResultsError(f"{path}: not a tlbench run (no {MANIFEST})")
    doc = files.read_json(path, "manifest", ResultsError)  # unreadable, not UTF-8, not JSON: one line
    if not isinstance(doc, dict) or not isinstance(doc.get("config"), dict):
        raise ResultsError(f"{path}: not a tlbench manifest (expected an object with a 'config' table)")
    return doc


def adapt_mode(run_dir: Path) -> str | None:
    """The run's quality.adapt ('scratch', 'none', 'distill'), for labels; None if unreadable."""
    try:
        quality = read_manifest(Path(run_dir))["config"].get("quality")
    except ResultsError:
        return None
    return quality.get("adapt") if isinstance(quality, dict) else None


def append_rows(run_dir: Path, rows: list[dict[str, Any]], run_id: str | None = None) -> None:
    """Append rows in one write, flush and fsync; then refresh results.csv."""
    if not rows:
        return
    run_id = run_id or Path(run_dir).name
    text = "".join(json.dumps({"run_id": run_id, **r}, allow_nan=True) + "\n" for r in rows)
    files.append_text(Path(run_dir) / ROWS, text)
    write_csv(run_dir)


def record_unit(run_dir: Path, model: str, variant: str, stage: str, status: str, **info: Any) -> None:
    """Append one unit's outcome to the ledger (after its rows): done, skipped or failed."""
    if status not in STATUSES:
        raise ValueError(f"unknown unit status {status!r}")
    line = {"model": model, "variant": variant, "stage": stage, "status": status, **info,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}  # fmt: skip
    files.append_text(Path(run_dir) / UNITS, json.dumps(line) + "\n")


def not_done(run_dir: Path) -> list[tuple[str, str, str, str]]:
    """(stage, variant, 'skipped (reason)' | 'failed (error)', model) for every unit not done:
    what a summary and the figures must say is missing."""
    return [(stage, variant, u["status"] + (f" ({u['reason']})" if u.get("reason") else ""), model)
            for (model, variant, stage), u in read_units(run_dir).items() if u["status"] != "done"]  # fmt: skip


def has_ledger(run_dir: Path) -> bool:
    return (Path(run_dir) / UNITS).is_file()


def read_units(run_dir: Path) -> dict[tuple[str, str, str], dict[str, Any]]:
    """(model, variant, stage) -> the unit's latest ledger line (a retry supersedes a failure)."""
    path = Path(run_dir) / UNITS
    if not path.is_file():
        return {}
    out = {}
    lines = path.read_text(encoding="utf-8", errors="replace").split("\n")
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            u = json.loads(line)
            key = (str(u["model"]), str(u["variant"]), str(u["stage"]))
            if u["status"] not in STATUSES:
                raise KeyError("status")
        except (json.JSONDecodeError, KeyError, TypeError):
            if i == len(lines):  # a kill mid-write: the unit simply did not finish
                continue
            raise ResultsError(f"{path}:{i}: corrupt unit record") from None
        schema.check_unit(u, f"{path}:{i}")  # a list for a stage name is damage, not a name
        out[key] = u
    return out


def read_jobs(run_dir: Path) -> dict[tuple[str, str, str], dict[str, Any]]:
    """(model, variant, stage) -> the unit's latest job record (job_id, executor, submitted)."""
    path = Path(run_dir) / JOBS
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines() if path.is_file() else []:
        try:
            r = json.loads(line)
            out[(r["model"], r["variant"], r["stage"])] = r
        except (json.JSONDecodeError, KeyError, TypeError):
            continue  # a kill mid-append: that job is simply not listed
    return out


def repair_tail(run_dir: Path) -> bool:
    """Cut a truncated last line (a kill mid-write) of the rows and the ledger; True if one was cut."""
    cut = False
    for name in (ROWS, UNITS):
        path = Path(run_dir) / name
        data = path.read_bytes() if path.is_file() else b""
        if data and not data.endswith(b"\n"):
            files.write_text(path, data[: data.rfind(b"\n") + 1].decode("utf-8", errors="replace"))
            cut = cut or name == ROWS
    return cut


def read_rows(run_dir: Path) -> list[dict[str, Any]]:
    """Rows of rows.jsonl. A truncated last line is dropped with a warning; any other bad line
    raises ResultsError naming file:line."""
    path = Path(run_dir) / ROWS
    if path.exists() and not path.is_file():  # never read as "no rows yet": that loses them silently
        raise ResultsError(f"{path}: not a file; move it out of the run (then --resume redoes its units)")
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8", errors="replace").split("\n")
    rows = []
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        last = i == len(lines)  # no newline after it: the write was cut
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            if last:
                warnings.warn(f"{path}:{i}: ignoring a truncated last line", stacklevel=2)
                continue
            raise ResultsError(f"{path}:{i}: corrupt row ({e.msg})") from None
        if not isinstance(row, dict) or not REQUIRED <= set(row):
            missing = sorted(REQUIRED - set(row)) if isinstance(row, dict) else "a JSON object"
            raise ResultsError(f"{path}:{i}: not a results row (missing {missing})")
        schema.check_row(row, f"{path}:{i}")  # every column's type, for every reader
        rows.append(row)
    return rows


def to_frame(rows: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """Rows -> DataFrame with the schema's columns and nullable integer dtypes."""
    df = pd.DataFrame(list(rows))
    for col in COLUMNS:
        if col not in df:
            df[col] = None
    df = df[COLUMNS + [c for c in df.columns if c not in COLUMNS]]
    older = df["method"].isna() & df["position"].notna()  # rows from before methods: TokenLearner's
    df["method"] = df["method"].astype(object).where(~older, "tokenlearner")
    for col in INT_COLUMNS:
        df[col] = pd.to_numeric(df[col], errors="coerce").astype("Int64")
    for col in ("position", "value", "ci_low", "ci_high"):
        values = pd.to_numeric(df[col], errors="coerce").astype("float64")
        df[col] = values.where(values.abs() != math.inf)  # +-inf is no measurement: NaN
    return df


def load_results(run_dir: str | Path) -> pd.DataFrame:
    """A run's rows as a tidy DataFrame: model, variant, position, block_index, num_tokens,
    stage, metric, value, unit (+ dataset, shots, seed, batch_size, device, dtype)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ResultsError(f"{run_dir}: no such run directory")
    read_manifest(run_dir)
    return to_frame(read_rows(run_dir))


def write_csv(run_dir: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        df = to_frame(read_rows(run_dir))
    files.write_text(Path(run_dir) / CSV, df.to_csv(index=False))


def done_units(run_dir: Path) -> set[tuple[str, str, str]]:
    """(model, variant, stage) units that are finished: what --resume skips.

    With a ledger, a unit is done when its ledger line says so (failed and skipped units are
    retried); without one (runs from before the ledger), when any of its rows exists.
    """
    if has_ledger(run_dir):
        return {k for k, u in read_units(run_dir).items() if u["status"] == "done"}
    return {(r["model"], r["variant"], unit_stage(r["stage"])) for r in read_rows(run_dir)}


def unit_stage(stage: str) -> str:
    """The unit a row's stage belongs to: the probe before training is part of quality."""
    return UNIT_OF_STAGE.get(stage, stage)


def drop_unfinished(run_dir: Path) -> int:
    """Remove rows of units the ledger does not record as done (cut by a kill); returns how many.

    The unit runs again on resume and writes all its rows, so none is lost or duplicated.
    """
    if not has_ledger(run_dir):
        return 0
    done = done_units(run_dir)
    path = Path(run_dir) / ROWS
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True) if path.is_file() else []
    keep = [line for line, r in zip(lines, _parsed(lines), strict=True)
            if r is None or (r["model"], r["variant"], unit_stage(r["stage"])) in done]  # fmt: skip
    if len(keep) < len(lines):
        files.write_text(path, "".join(keep))
        write_csv(run_dir)
    return len(lines) - len(keep)


def _parsed(lines: list[str]) -> list[dict[str, Any] | None]:
    out: list[dict[str, Any] | None] = []
    for line in lines:
        try:
            row = json.loads(line) if line.strip() else None
        except json.JSONDecodeError:
            row = None
        out.append(row if isinstance(row, dict) and REQUIRED <= set(row) else None)
    return out


def summary(
    df: pd.DataFrame,
    shots: int | None = None,
    units: dict[tuple[str, str, str], dict[str, Any]] | None = None,
) -> pd.DataFrame:
    """Wide view, one row per variant: GFLOPs, x baseline, img/s, speedup with its interval, the
    trained few-shot accuracy (mean over seeds, %) per probe dataset at one shot count (5 if
    present), training time against its estimate, and a note for every unit skipped or failed.
    A run of several models: one such table per model, stacked, with a `model` column first."""
    models = list(dict.fromkeys([*df["model"].dropna(), *(m for m, _, _ in units or {})]))
    if len(models) > 1:
        parts = [summary(df[df["model"] == m], shots, {k: u for k, u in (units or {}).items() if k[0] == m})
                 for m in models]  # fmt: skip
        return pd.concat([p.assign(model=m)[["model", *p.columns]] for m, p in zip(models, parts, strict=True)],
                         ignore_index=True)  # fmt: skip
    names = list(dict.fromkeys([*df["variant"], *(v for _, v, _ in units or {})]))
    out = pd.DataFrame(index=pd.Index(names, name="variant"))
    meta = df.drop_duplicates("variant").set_index("variant")
    out["block"] = meta["block_index"].reindex(out.index).astype("Int64")
    first = df.pivot_table(index="variant", columns="metric", values="value", aggfunc="first")
    value = first.reindex(out.index)
    if "gflops" in value:
        out["GFLOPs"] = value["gflops"]
        if "baseline" in first.index:
            out["×base"] = value["gflops"] / first.loc["baseline", "gflops"]
    if "throughput" in value:
        out["img/s"] = value["throughput"]
    sp = df[df["metric"] == "speedup"].drop_duplicates("variant").set_index("variant")
    if not sp.empty:
        out["speedup"] = sp["value"].reindex(out.index)
        out["95% CI"] = [_interval(sp, v) for v in out.index]
    acc = df[(df["metric"] == "fewshot_acc") & (df["stage"] == "quality")]
    if not acc.empty:
        available = sorted(acc["shots"].dropna().unique())
        k = shots if shots in available else (5 if 5 in available else available[-1])
        table = acc[acc["shots"] == k].pivot_table(index="variant", columns="dataset", values="value")
        for ds in table.columns:
            out[f"{ds} {k}-shot %"] = table[ds].reindex(out.index) * 100
    if "adapt_seconds" in value:
        out["train s"] = value["adapt_seconds"]
        if "estimate_seconds" in value:
            out["est./actual"] = value["estimate_seconds"] / value["adapt_seconds"]
    notes: dict[str, dict[str, list[str]]] = {v: {} for v in out.index}  # why -> its stages
    for (_, v, stage), u in (units or {}).items():
        if u["status"] != "done" and v in notes:
            why = f"{u['status']}" + (f": {u['reason']}" if u.get("reason") else "")
            notes[v].setdefault(why, []).append(stage)  # one reason for several stages is said once
    if any(notes.values()):
        out["notes"] = ["; ".join(f"{', '.join(st)} {why}" for why, st in n.items()) for n in notes.values()]
    return out.reset_index()


def _interval(sp: pd.DataFrame, variant: str) -> str:
    if variant not in sp.index or pd.isna(sp.at[variant, "ci_low"]):
        return ""
    r = sp.loc[variant]
    text = f"{r['ci_low']:.3g}–{r['ci_high']:.3g}"
    return text if r["reliable"] in (True, "True", 1) else text + " unreliable"
