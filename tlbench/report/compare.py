"""Does a run reproduce a reference run? `compare_runs` proves that a committed run is what the
committed code produces: a fresh run of the same sweep must match it in compute exactly and in
few-shot accuracy within a tolerance (`tlbench compare`, CI, the report's comparison page).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pandas import isna

from tlbench.errors import ConfigError
from tlbench.results import load_results

COMPUTE_METRICS = ("gflops", "gflops_analytic", "params_m")  # deterministic: compared exactly


COMPUTE_RTOL = 1e-9  # relative; only float formatting may move a count


QUALITY_STAGES = ("quality", "quality_init")  # fewshot_acc, mean over seeds, within acc_tol


# Default accuracy tolerance for compare_runs, from a measured spread: the built-in study rerun
# with another float rounding (2 threads per worker; oneDNN and MKL held to AVX2 instead of
# AVX-512) moved a variant's mean accuracy on a probe set by up to 7.1 points (mean 2.5), and
# another training seed by up to 8.0 (mean 3.7) (results/README.md, "Reproducibility"). 10 points
# is a 1.25x margin over the largest; on the same machine kind a rerun is bit-identical.
ACC_TOL = 0.10


def check_tolerance(value: Any, name: str) -> float:
    """`value` as a tolerance in [0, 1), else ConfigError: NaN compares false with everything and a
    tolerance of 1 or more accepts any change, so either would make the gate meaningless."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"{name} must be a number in [0, 1), got {short_repr(value)}")
    if not (math.isfinite(value) and 0 <= value < 1):
        raise ConfigError(f"{name} must be a finite number in [0, 1), got {value!r}")
    return float(value)


def short_repr(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


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

