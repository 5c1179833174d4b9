"""CI gates: recount a committed compute baseline, and compare a run against a reference run.

A baseline file (results/baselines/*.json) holds, per model, the grid that was counted, each
variant's GFLOPs and FLOP ratio to its model's baseline, and the operators counted as zero.
FLOP counts are deterministic for given torch/timm/fvcore versions, so the tolerance is tight;
it is relative to the stored ratio, to absorb op decompositions that move within allowed ranges.

`compare_runs` proves that a committed run is what the committed code produces: a fresh run of
the same sweep must match it in compute exactly and in few-shot accuracy within a tolerance.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from tlbench import files
from tlbench.errors import ConfigError, ResultsError, TLBenchError

TOLERANCE = 1e-3  # relative, on the FLOP ratio (variant / baseline)
FORMAT = "tlbench-compute-baseline/1"
COMPUTE_METRICS = ("gflops", "gflops_analytic", "params_m")  # deterministic: compared exactly
COMPUTE_RTOL = 1e-9  # relative; only float formatting may move a count
QUALITY_STAGES = ("quality", "quality_init")  # fewshot_acc, mean over seeds, within acc_tol
# Default accuracy tolerance for compare_runs, from a measured spread: the built-in study rerun
# with another float rounding (2 threads per worker; oneDNN and MKL held to AVX2 instead of
# AVX-512) moved a variant's mean accuracy on a probe set by up to 7.1 points (mean 2.5), and
# another training seed by up to 8.0 (mean 3.7) (results/README.md, "Reproducibility"). 10 points
# is a 1.25x margin over the largest; on the same machine kind a rerun is bit-identical.
ACC_TOL = 0.10


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
    from tlbench.models import DEFAULT_METHOD, make_variants

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


def check_tolerance(value: Any, name: str) -> float:
    """`value` as a tolerance in [0, 1), else ConfigError: NaN compares false with everything and a
    tolerance of 1 or more accepts any change, so either would make the gate meaningless."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"{name} must be a number in [0, 1), got {_short(value)}")
    if not (math.isfinite(value) and 0 <= value < 1):
        raise ConfigError(f"{name} must be a finite number in [0, 1), got {value!r}")
    return float(value)


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
        got = _short(doc.get("format")) if isinstance(doc, dict) else f"a {type(doc).__name__}"
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
    raise ResultsError(f"{path}: {key} must be {what}, got {_short(value)}")


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


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


@dataclass(frozen=True)
class RunFinding:
    """One compared value of a run against a reference run; metric '*' stands for a whole unit."""

    model: str
    variant: str
    stage: str
    metric: str
    dataset: str | None
    shots: int | None
    status: str  # ok, differs, missing, extra
    value: float | None  # the run's (mean over seeds for accuracy)
    reference_value: float | None
    note: str = ""

    @property
    def failed(self) -> bool:
        return self.status in ("differs", "missing")


def passed(findings: Iterable[RunFinding]) -> bool:
    """The reproduction holds: nothing differs and nothing the reference has is missing."""
    return not any(f.failed for f in findings)


def compare_runs(
    run: str | Path, reference: str | Path, *, acc_tol: float, per_shots: bool = False
) -> list[RunFinding]:
    """Compare a fresh run with a reference run (the committed one) to prove it reproduces.

    Compute rows (gflops, gflops_analytic, params_m) are deterministic, so they must be equal
    (relative 1e-9). Few-shot accuracy (stage quality, and quality_init when both runs have it) is
    compared as the mean per (model, variant, dataset) over shots and seeds (per shot count too
    with `per_shots`), within `acc_tol` (absolute; accuracies are fractions). On the same machine
    kind a rerun is bit-identical; another CPU rounds floats differently, and training amplifies
    that like another seed would, so the tolerance comes from that measured spread (ACC_TOL), and
    the mean over shots damps the noise of single cells. Every (model, variant, stage) unit of the
    reference must be in the run; units only in the run are reported as extra and do not fail.
    Speed rows (throughput, latency_ms, speedup) and adapt_seconds, adapt_loss, estimate_seconds
    are not compared: they are wall-clock or otherwise machine-dependent.

    Args:
        run: the run directory to check.
        reference: the run directory it must reproduce.
        acc_tol: allowed absolute difference of mean accuracy, in [0, 1).
        per_shots: compare every shot count on its own instead of their mean.

    Returns:
        Findings sorted by model, variant, stage, metric, dataset, shots; see `passed`.
    """
    tol = check_tolerance(acc_tol, "acc_tol")
    (new, new_units), (ref, ref_units) = (
        _run_values(run, per_shots),
        _run_values(reference, per_shots),
    )
    if not any(u[2] == "quality_init" for u in new_units):  # the run did not ask for it
        ref_units = {u for u in ref_units if u[2] != "quality_init"}
    out = [RunFinding(*u, "*", None, None, "missing", None, None, "no rows in the run")
           for u in ref_units - new_units]  # fmt: skip
    out += [RunFinding(*u, "*", None, None, "extra", None, None, "not in the reference")
            for u in new_units - ref_units]  # fmt: skip
    both = new_units & ref_units
    for key in new.keys() | ref.keys():
        if key[:3] not in both:
            continue  # the whole unit is reported above
        if key not in new:
            out.append(RunFinding(*key, "missing", None, ref[key][0], "no value in the run"))
        elif key not in ref:
            out.append(RunFinding(*key, "extra", new[key][0], None, "not in the reference"))
        else:
            out.append(_judge(key, new[key], ref[key], tol))
    return sorted(
        out, key=lambda f: _order((f.model, f.variant, f.stage, f.metric, f.dataset, f.shots))
    )


# model, variant, stage, metric, dataset, shots
Key = tuple[str, str, str, str, str | None, int | None]
Unit = tuple[str, str, str]  # model, variant, stage


def _run_values(
    run_dir: str | Path, per_shots: bool
) -> tuple[dict[Key, tuple[float, int]], set[Unit]]:
    """A run's compared values, key -> (mean over its rows: seeds, and shots unless per_shots;
    row count), and its units of the compared stages (present with any row, compared or not)."""
    from pandas import isna

    from tlbench.results import load_results

    groups: dict[Key, list[float]] = {}
    units: set[Unit] = set()
    for r in load_results(run_dir).to_dict("records"):
        model, variant, stage, metric = (str(r[c]) for c in ("model", "variant", "stage", "metric"))
        if stage != "compute" and stage not in QUALITY_STAGES:
            continue
        units.add((model, variant, stage))
        if metric in (COMPUTE_METRICS if stage == "compute" else ("fewshot_acc",)):
            dataset = None if isna(r["dataset"]) else str(r["dataset"])
            shots = None if isna(r["shots"]) or not per_shots else int(r["shots"])
            key = (model, variant, stage, metric, dataset, shots)
            groups.setdefault(key, []).append(r["value"])
    return {k: (_mean(v), len(v)) for k, v in groups.items()}, units


def _judge(key: Key, new: tuple[float, int], ref: tuple[float, int], acc_tol: float) -> RunFinding:
    """One value present in both runs: equal for compute, within acc_tol for accuracy."""
    (a, n_new), (b, n_ref) = new, ref
    seeds_differ = key[2] != "compute" and n_new != n_ref
    notes = [f"mean of {n_new} rows, of {n_ref} in the reference"] if seeds_differ else []
    if math.isnan(a) and math.isnan(b):  # NaN is a missing measurement (see results.to_frame)
        status = "ok"
        notes.insert(0, "no measurement in either run")
    elif math.isnan(a) or math.isnan(b):
        status = "differs"
        notes.insert(0, f"no measurement in {'the run' if math.isnan(a) else 'the reference'}")
    elif key[2] == "compute":
        status = "ok" if math.isclose(a, b, rel_tol=COMPUTE_RTOL, abs_tol=0.0) else "differs"
        if status == "differs":
            notes.insert(0, f"relative difference {(a - b) / max(abs(a), abs(b)):+.3g}")
    else:
        # accuracies are k/n: a difference of exactly acc_tol must not fail on float rounding
        status = "ok" if abs(a - b) <= acc_tol + 1e-12 else "differs"
        if status == "differs":
            notes.insert(0, f"{a - b:+.4f} is beyond {acc_tol:g}")
    return RunFinding(*key, status, a, b, "; ".join(notes))


def _order(key: tuple[Any, ...]) -> tuple[Any, ...]:
    """Sort key of a Key: None datasets and shots first, without comparing None to str or int."""
    *head, dataset, shots = key
    return (*head, dataset or "", -1 if shots is None else shots)


def _mean(values: list[float]) -> float:
    finite = [float(v) for v in values if not math.isnan(v)]
    return math.fsum(finite) / len(finite) if finite else math.nan
