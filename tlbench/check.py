"""CI gate for compute savings: recount a committed baseline's variants and compare.

A baseline file (results/baselines/*.json) holds, per model, the grid that was counted, each
variant's GFLOPs and FLOP ratio to its model's baseline, and the operators counted as zero.
FLOP counts are deterministic for given torch/timm/fvcore versions, so the tolerance is tight;
it is relative to the stored ratio, to absorb op decompositions that move within allowed ranges.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tlbench.errors import ConfigError, ResultsError, TLBenchError

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

    from tlbench.flops import count_variants
    from tlbench.models import make_variants

    entries = []
    for g in grids:
        variants = make_variants(g["model"], g.get("positions"), g.get("tokens", [8, 16]),
                                 version=g.get("version", "1.1"), fuser=g.get("fuser", False),
                                 img_size=g.get("img_size"))  # fmt: skip
        rows = count_variants(variants, g.get("img_size"))
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
        "versions": {"torch": torch.__version__, "timm": timm.__version__,
                     "fvcore": getattr(fvcore, "__version__", "unknown")},  # fmt: skip
        "models": entries,
    }


def read_baseline(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"baseline file not found: {path}")
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ResultsError(f"{path}:{e.lineno}: corrupt baseline ({e.msg})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or "models" not in doc:
        raise ResultsError(f"{path}: not a tlbench compute baseline (format {FORMAT!r})")
    return doc


def compare(stored: dict[str, Any], current: dict[str, Any], tolerance: float) -> list[Finding]:
    """Stored vs current, variant by variant; savings may grow, not shrink beyond the tolerance."""
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
    tol = float(doc.get("tolerance", TOLERANCE) if tolerance is None else tolerance)
    try:
        current = measure([m["grid"] for m in doc["models"]])
    except TLBenchError as e:
        raise ConfigError(f"{baseline}: cannot recount its grid: {e}") from None
    except (KeyError, TypeError) as e:
        raise ResultsError(f"{baseline}: malformed entry ({e})") from None
    findings = compare(doc, current, tol)
    if update:
        current["tolerance"] = tol
        write_baseline(baseline, current)
    return findings, update or not any(f.failed for f in findings)


def write_baseline(path: str | Path, doc: dict[str, Any]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n")


def new_baseline(path: str | Path, grids: list[dict[str, Any]]) -> None:
    """Create a baseline file for the given grids (model, positions, tokens, version, fuser, img_size)."""
    write_baseline(path, measure(grids))
