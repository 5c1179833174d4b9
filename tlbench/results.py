"""Tidy results on disk: manifest first, rows appended per finished variant, CSV view.

Layout of one run, `<out>/<sweep>/<run_id>/`:
- manifest.json: resolved config, versions, git SHA, device; written before any row;
- rows.jsonl: one JSON object per (model, variant, stage, metric[, dataset, shots, seed]) row;
  each finished unit of work is appended with one write() + flush + fsync, so a crash loses at
  most the variant in flight, and a truncated last line is the only damage a kill can do;
- results.csv: the same rows, regenerated from rows.jsonl after every append.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from tlbench.errors import ResultsError

# metric -> unit: the one vocabulary. Axes (shots, seed, dataset) are columns, never in the name.
METRICS: dict[str, str] = {
    "gflops": "GFLOPs",  # fvcore, 1 fused multiply-add = 1 FLOP, per image
    "gflops_analytic": "GFLOPs",
    "params_m": "M",
    "throughput": "img/s",
    "latency_ms": "ms",  # median per batch
    "speedup": "x",  # throughput / baseline throughput, timed interleaved in the same run
    "fewshot_acc": "acc",  # fraction in [0, 1]
    "adapt_loss": "loss",
    "adapt_seconds": "s",
}
COLUMNS = [
    "run_id", "model", "variant", "position", "block_index", "num_tokens", "stage", "metric",
    "value", "unit", "dataset", "shots", "seed", "batch_size", "device", "dtype",
]  # fmt: skip
INT_COLUMNS = ["block_index", "num_tokens", "shots", "seed", "batch_size"]
REQUIRED = {"model", "variant", "stage", "metric", "value", "unit"}
MANIFEST, ROWS, CSV = "manifest.json", "rows.jsonl", "results.csv"


def make_row(variant: Any, stage: str, metric: str, value: float, **extra: Any) -> dict[str, Any]:
    """One long-format row for a tlbench.models.Variant; extra columns (shots, seed, ...) as given."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; add it to results.METRICS")
    return {
        "model": variant.model, "variant": variant.name, "position": variant.position,
        "block_index": variant.block_index, "num_tokens": variant.num_tokens, "stage": stage,
        "metric": metric, "value": float(value), "unit": METRICS[metric], **extra,
    }  # fmt: skip


def write_manifest(run_dir: Path, manifest: dict[str, Any]) -> None:
    """Write manifest.json atomically (temp file + rename)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    _atomic_write(run_dir / MANIFEST, json.dumps(manifest, indent=2, default=str) + "\n")


def read_manifest(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / MANIFEST
    if not path.is_file():
        raise ResultsError(f"{path}: not a tlbench run (no {MANIFEST})")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ResultsError(f"{path}:{e.lineno}: corrupt manifest ({e.msg})") from None


def append_rows(run_dir: Path, rows: list[dict[str, Any]], run_id: str | None = None) -> None:
    """Append rows in one write, flush and fsync; then refresh results.csv."""
    if not rows:
        return
    run_id = run_id or Path(run_dir).name
    text = "".join(json.dumps({"run_id": run_id, **r}, allow_nan=True) + "\n" for r in rows)
    path = Path(run_dir) / ROWS
    with open(path, "a", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    write_csv(run_dir)


def repair_tail(run_dir: Path) -> bool:
    """Cut a truncated last line (a kill mid-write) so appends start on a fresh line."""
    path = Path(run_dir) / ROWS
    if not path.is_file():
        return False
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return False
    with open(path, "r+b") as f:
        f.truncate(data.rfind(b"\n") + 1)
    return True


def read_rows(run_dir: Path) -> list[dict[str, Any]]:
    """Rows of rows.jsonl. A truncated last line is dropped with a warning; any other bad line
    raises ResultsError naming file:line."""
    path = Path(run_dir) / ROWS
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
        rows.append(row)
    return rows


def to_frame(rows: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """Rows -> DataFrame with the schema's columns and nullable integer dtypes."""
    df = pd.DataFrame(list(rows))
    for col in COLUMNS:
        if col not in df:
            df[col] = None
    df = df[COLUMNS + [c for c in df.columns if c not in COLUMNS]]
    for col in INT_COLUMNS:
        df[col] = pd.to_numeric(df[col], errors="coerce").astype("Int64")
    df["position"] = pd.to_numeric(df["position"], errors="coerce").astype("float64")
    df["value"] = pd.to_numeric(df["value"], errors="coerce").astype("float64")
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
    _atomic_write(Path(run_dir) / CSV, df.to_csv(index=False))


def done_units(run_dir: Path) -> set[tuple[str, str, str]]:
    """(model, variant, stage) units already on disk: what --resume skips."""
    return {(r["model"], r["variant"], r["stage"]) for r in read_rows(run_dir)}


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def summary(df: pd.DataFrame, shots: int | None = None) -> pd.DataFrame:
    """Wide view, one row per variant: GFLOPs, x baseline, img/s, speedup and the trained
    few-shot accuracy (mean over seeds, %) per probe dataset at one shot count (5 if present)."""
    variants = df.drop_duplicates("variant")[["variant", "position", "block_index", "num_tokens"]]
    out = variants.set_index("variant")
    value = df.pivot_table(index="variant", columns="metric", values="value", aggfunc="first")
    if "gflops" in value:
        out["GFLOPs"] = value["gflops"]
        if "baseline" in value.index:
            out["×base"] = value["gflops"] / value.loc["baseline", "gflops"]
    for metric, col in (("throughput", "img/s"), ("speedup", "speedup")):
        if metric in value:
            out[col] = value[metric]
    acc = df[(df["metric"] == "fewshot_acc") & (df["stage"] == "quality")]
    if not acc.empty:
        available = sorted(acc["shots"].dropna().unique())
        k = shots if shots in available else (5 if 5 in available else available[-1])
        table = acc[acc["shots"] == k].pivot_table(index="variant", columns="dataset", values="value")
        for ds in table.columns:
            out[f"{ds} {k}-shot %"] = table[ds] * 100
    out = out.drop(columns=["position", "num_tokens"])  # the variant name carries p and S
    return out.reset_index().rename(columns={"block_index": "block"})
