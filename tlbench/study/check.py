"""The compute gate: recount a committed compute baseline (`tlbench check`).

A baseline file (results/baselines/*.json) holds, per model, the grid that was counted, each
variant's GFLOPs and FLOP ratio to its model's baseline, and the operators counted as zero.
FLOP counts are deterministic for given torch/timm/fvcore versions, so the tolerance is tight;
it is relative to the stored ratio, to absorb op decompositions that move within allowed ranges.
(Run-against-run comparison, `tlbench compare`, is report/compare.py.)
"""

from __future__ import annotations

import json
import math
import numbers
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from tlbench import files
from tlbench.core import DEFAULT_METHOD
from tlbench.errors import ConfigError, ResultsError, TLBenchError
from tlbench.measure.flops import count_variants
from tlbench.report.compare import check_tolerance, short_repr
from tlbench.variants import make_variants

TOLERANCE = 1e-3  # relative, on the FLOP ratio (variant / baseline)
FORMAT = "tlbench-compute-baseline/1"


@dataclass(frozen=True)
class Finding:
    """One line of the comparison."""

    model: str
    variant: str
    status: str  # ok, regressed, improved, missing, new, ops-changed
    stored_ratio: float | None
    current_ratio: float | None
    stored_gflops: float | None
    current_gflops: float | None
    note: str = ""

    @property
    def failed(self) -> bool:
        return self.status in ("regressed", "missing", "ops-changed")


def measure(grids: list[dict[str, Any]]) -> dict[str, Any]:
    """Count every grid with the current code -> the baseline document."""
    import fvcore
    import timm
    import torch


    entries = []
    for g in grids:
        variants = make_variants(g["model"], g.get("positions"), g.get("tokens", [8, 16]),
                                 version=g.get("version", "1.1"), fuser=g.get("fuser", False),
                                 img_size=g.get("img_size"), method=g.get("method", DEFAULT_METHOD),
                                 frames=g.get("frames"))  # fmt: skip
        rows = count_variants(variants, g.get("img_size"), g.get("frames"))
        base = rows[0].gflops
        zero_ops = set().union(*(r.zero_ops for r in rows))
        entries.append({
            "grid": g,
            "model": rows[0].model,
            "variants": {r.variant: {"gflops": r.gflops, "flops_ratio": r.gflops / base}
                         for r in rows},
            "zero_ops": sorted(zero_ops),
        })  # fmt: skip
    return {
        "format": FORMAT,
        "tolerance": TOLERANCE,
        "versions": {
            "torch": torch.__version__,
            "timm": timm.__version__,
            "fvcore": getattr(fvcore, "__version__", "unknown"),
        },
        "models": entries,
    }


def read_baseline(path: str | Path) -> dict[str, Any]:
    """Load and validate a baseline file; damage is a one-line ResultsError naming the key."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"baseline file not found: {path}")
    doc = files.read_json(path, "baseline", ResultsError)  # unreadable, not UTF-8, not JSON: one line
    validate_baseline(doc, path)
    return doc


def validate_baseline(doc: Any, path: str | Path) -> None:
    """Check a baseline document's structure before anything trusts it.

    Without this, an empty `models` list passes (nothing to compare) and a wrong type fails deep in
    compare() with a KeyError; here each violation names the file and the key path instead.
    """
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        got = short_repr(doc.get("format")) if isinstance(doc, dict) else f"a {type(doc).__name__}"
        raise ResultsError(f"{path}: not a tlbench compute baseline (format {FORMAT!r}, got {got})")
    if "tolerance" in doc and not _is_number(doc["tolerance"]):
        _bad(path, "tolerance", "a number", doc["tolerance"])
    models = _field(doc, "models", "", path)
    if not isinstance(models, list) or not models:
        _bad(path, "models", "a non-empty list", models)
    for i, entry in enumerate(models):
        key = f"models[{i}]"
        if not isinstance(entry, dict):
            _bad(path, key, "an object", entry)
        grid = _field(entry, "grid", key, path)
        if not isinstance(grid, dict):
            _bad(path, f"{key}.grid", "an object", grid)
        if not isinstance(_field(grid, "model", f"{key}.grid", path), str):
            _bad(path, f"{key}.grid.model", "a string", grid["model"])
        if not isinstance(_field(entry, "model", key, path), str):
            _bad(path, f"{key}.model", "a string", entry["model"])
        variants = _field(entry, "variants", key, path)
        if not isinstance(variants, dict) or not variants:
            _bad(path, f"{key}.variants", "a non-empty object", variants)
        for name, v in variants.items():
            if not isinstance(v, dict):
                _bad(path, f"{key}.variants.{name}", "an object", v)
            for field in ("gflops", "flops_ratio"):
                x = _field(v, field, f"{key}.variants.{name}", path)
                if not (_is_number(x) and math.isfinite(x) and x > 0):
                    _bad(path, f"{key}.variants.{name}.{field}", "a positive number", x)
        zero_ops = _field(entry, "zero_ops", key, path)
        if not isinstance(zero_ops, list) or not all(isinstance(op, str) for op in zero_ops):
            _bad(path, f"{key}.zero_ops", "a list of strings", zero_ops)


def _is_number(x: Any) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _field(obj: dict[str, Any], name: str, parent: str, path: str | Path) -> Any:
    if name not in obj:
        raise ResultsError(f"{path}: {parent + '.' if parent else ''}{name} is missing")
    return obj[name]


def _bad(path: str | Path, key: str, what: str, value: Any) -> NoReturn:
    raise ResultsError(f"{path}: {key} must be {what}, got {short_repr(value)}")


def compare(stored: dict[str, Any], current: dict[str, Any], tolerance: float) -> list[Finding]:
    """Stored vs current, variant by variant; savings may grow, not shrink beyond the tolerance."""
    n_old, n_new = len(stored["models"]), len(current["models"])
    if n_old != n_new:  # measure() makes one entry per grid, so this is a bug, not a regression
        raise ResultsError(f"the recount yields {n_new} model entries for the baseline's {n_old}")
    out = []
    for old, new in zip(stored["models"], current["models"], strict=True):
        model = old["model"]
        for name, o in old["variants"].items():
            n = new["variants"].get(name)
            if n is None:
                out.append(Finding(model, name, "missing", o["flops_ratio"], None, o["gflops"], None,
                                   "the grid no longer yields this variant"))  # fmt: skip
                continue
            ratio_o, ratio_n = o["flops_ratio"], n["flops_ratio"]
            status = "ok"
            if ratio_n > ratio_o * (1 + tolerance):
                status = "regressed"
            elif ratio_n < ratio_o * (1 - tolerance):
                status = "improved"
            out.append(Finding(model, name, status, ratio_o, ratio_n, o["gflops"], n["gflops"]))
        for name in sorted(set(new["variants"]) - set(old["variants"])):
            n = new["variants"][name]
            out.append(Finding(model, name, "new", None, n["flops_ratio"], None, n["gflops"],
                               "not in the baseline; --update adds it"))  # fmt: skip
        if sorted(old["zero_ops"]) != sorted(new["zero_ops"]):
            added = sorted(set(new["zero_ops"]) - set(old["zero_ops"]))
            gone = sorted(set(old["zero_ops"]) - set(new["zero_ops"]))
            out.append(Finding(model, "*", "ops-changed", None, None, None, None,
                               f"operators counted as zero: +{added} -{gone}"))  # fmt: skip
    return out


def run_check(
    baseline: str | Path, *, update: bool = False, tolerance: float | None = None
) -> tuple[list[Finding], bool]:
    """Recount the baseline's grids; return (findings, passed). `update` rewrites the file."""
    doc = read_baseline(baseline)
    if tolerance is None:
        tol = check_tolerance(doc.get("tolerance", TOLERANCE), f"{baseline}: tolerance")
    else:
        tol = check_tolerance(tolerance, "tolerance")
    try:
        current = measure([m["grid"] for m in doc["models"]])
    except TLBenchError as e:
        raise ConfigError(f"{baseline}: cannot recount its grid: {e}") from None
    except (KeyError, TypeError) as e:
        raise ResultsError(f"{baseline}: malformed entry ({e})") from None
    try:
        findings = compare(doc, current, tol)
    except ResultsError as e:
        raise ResultsError(f"{baseline}: {e}") from None
    if update:
        current["tolerance"] = tol
        write_baseline(baseline, current)
    return findings, update or not any(f.failed for f in findings)


def write_baseline(path: str | Path, doc: dict[str, Any]) -> None:
    files.write_text(path, json.dumps(doc, indent=2) + "\n")  # a refused path: one line, the old file kept


def new_baseline(path: str | Path, grids: list[dict[str, Any]]) -> None:
    """Create a baseline file for the given grids (model, positions, tokens, version, fuser, img_size,
    method, frames)."""
    write_baseline(path, measure(grids))


