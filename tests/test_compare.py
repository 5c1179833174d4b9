"""compare_runs: a rerun reproduces a reference run in compute exactly, in accuracy within acc_tol."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pytest

from tlbench import results
from tlbench.errors import ConfigError, ResultsError
from tlbench.report.compare import RunFinding, compare_runs, passed

ACC_TOL = 0.02


@dataclass(frozen=True)
class V:
    """Stand-in for tlbench.backbones.vit.Variant (what make_row reads), without importing torch."""

    model: str
    name: str
    position: float | None
    block_index: int | None
    num_tokens: int | None


BASE, P0 = V("tiny", "baseline", None, None, None), V("tiny", "p0-s4", 0.0, 0, 4)


def _rows(gflops: float = 1e-3, acc: float = 0.5, variants=(BASE, P0), quality=(BASE, P0)) -> list:
    """One run's rows: compute, speed and quality stages, 2 seeds x 2 shots x 1 dataset."""
    rows = []
    for i, v in enumerate(variants):
        rows += [results.make_row(v, "compute", "gflops", gflops / (i + 1)),
                 results.make_row(v, "compute", "gflops_analytic", gflops / (i + 1)),
                 results.make_row(v, "compute", "params_m", 0.1),
                 results.make_row(v, "speed", "throughput", 1000.0 * (i + 1)),
                 results.make_row(v, "speed", "latency_ms", 3.0)]  # fmt: skip
    for v in quality:
        rows += [results.make_row(v, "quality", "adapt_seconds", 12.0)]
        for stage, a in (("quality_init", 0.3), ("quality", acc)):
            rows += [results.make_row(v, stage, "fewshot_acc", a + (0.1 if seed else -0.1),
                                      dataset="digits", shots=shots, seed=seed)
                     for shots in (1, 5) for seed in (0, 1)]  # fmt: skip
    return rows


def _run(path: Path, rows: list) -> Path:
    results.write_manifest(path, {"config": {"name": "test"}})
    results.append_rows(path, rows)
    return path


@pytest.fixture()
def reference(tmp_path: Path) -> Path:
    return _run(tmp_path / "reference", _rows())


def _failed(findings: list[RunFinding]) -> list[tuple[str, str, str, str]]:
    return [(f.variant, f.stage, f.metric, f.status) for f in findings if f.failed]


def test_an_identical_run_passes(tmp_path: Path, reference: Path) -> None:
    findings = compare_runs(_run(tmp_path / "run", _rows()), reference, acc_tol=0.0)
    assert passed(findings) and {f.status for f in findings} == {"ok"}
    # compute 3 metrics + 2 quality stages (mean over shots and seeds), per variant; speed and
    # adapt_* are not compared
    assert len(findings) == 2 * (3 + 2)
    per_shots = compare_runs(
        _run(tmp_path / "run2", _rows()), reference, acc_tol=0.0, per_shots=True
    )
    assert passed(per_shots) and len(per_shots) == 2 * (3 + 2 * 2)
    assert not {"throughput", "latency_ms", "adapt_seconds"} & {f.metric for f in findings}


def test_findings_are_sorted(tmp_path: Path, reference: Path) -> None:
    findings = compare_runs(_run(tmp_path / "run", _rows()), reference, acc_tol=ACC_TOL)
    keys = [
        (f.model, f.variant, f.stage, f.metric, f.dataset or "", f.shots or -1) for f in findings
    ]
    assert keys == sorted(keys)


def test_the_quality_value_is_the_mean_over_seeds(tmp_path: Path, reference: Path) -> None:
    run = _run(tmp_path / "run", _rows())
    findings = compare_runs(run, reference, acc_tol=ACC_TOL, per_shots=True)
    acc = [f for f in findings if f.stage == "quality" and f.variant == "baseline"]
    assert [(f.dataset, f.shots) for f in acc] == [("digits", 1), ("digits", 5)]
    assert all(math.isclose(f.value, 0.5) and math.isclose(f.reference_value, 0.5) for f in acc)


def test_a_relative_gflops_change_of_1e6_fails(tmp_path: Path, reference: Path) -> None:
    run = _run(tmp_path / "run", _rows(gflops=1e-3 * (1 + 1e-6)))
    findings = compare_runs(run, reference, acc_tol=ACC_TOL)
    assert not passed(findings)
    assert _failed(findings) == [("baseline", "compute", "gflops", "differs"),
                                 ("baseline", "compute", "gflops_analytic", "differs"),
                                 ("p0-s4", "compute", "gflops", "differs"),
                                 ("p0-s4", "compute", "gflops_analytic", "differs")]  # fmt: skip
    assert "relative difference" in next(f for f in findings if f.failed).note


def test_speed_differences_are_not_compared(tmp_path: Path, reference: Path) -> None:
    rows = [dict(r, value=r["value"] * 3) if r["stage"] == "speed" or r["metric"] == "adapt_seconds"
            else r for r in _rows()]  # fmt: skip
    assert passed(compare_runs(_run(tmp_path / "run", rows), reference, acc_tol=0.0))


@pytest.mark.parametrize("shift", [ACC_TOL / 2, -ACC_TOL, ACC_TOL])
def test_accuracy_within_the_tolerance_passes(tmp_path: Path, reference: Path, shift) -> None:
    run = _run(tmp_path / "run", _rows(acc=0.5 + shift))
    findings = compare_runs(run, reference, acc_tol=ACC_TOL)
    assert passed(findings) and {f.status for f in findings} == {"ok"}


def test_accuracy_beyond_the_tolerance_fails(tmp_path: Path, reference: Path) -> None:
    run = _run(tmp_path / "run", _rows(acc=0.5 + 2 * ACC_TOL))
    findings = compare_runs(run, reference, acc_tol=ACC_TOL)
    assert not passed(findings)
    failed = {(v, stage, status) for v, stage, _, status in _failed(findings)}
    assert failed == {("baseline", "quality", "differs"), ("p0-s4", "quality", "differs")}
    assert "beyond 0.02" in next(f for f in findings if f.failed).note


def test_a_skipped_quality_unit_is_missing(tmp_path: Path, reference: Path) -> None:
    run = _run(tmp_path / "run", _rows(quality=(BASE,)))
    findings = compare_runs(run, reference, acc_tol=ACC_TOL)
    assert not passed(findings)
    assert _failed(findings) == [("p0-s4", "quality", "*", "missing"),
                                 ("p0-s4", "quality_init", "*", "missing")]  # fmt: skip


def test_a_missing_value_inside_a_unit_is_missing(tmp_path: Path, reference: Path) -> None:
    rows = [r for r in _rows() if not (r["variant"] == "p0-s4" and r.get("shots") == 5)]
    findings = compare_runs(
        _run(tmp_path / "run", rows), reference, acc_tol=ACC_TOL, per_shots=True
    )
    assert [(f.stage, f.shots, f.status) for f in findings if f.failed] == [
        ("quality", 5, "missing"), ("quality_init", 5, "missing")]  # fmt: skip


def test_quality_init_is_compared_only_when_both_runs_have_it(tmp_path: Path, reference) -> None:
    rows = [r for r in _rows() if r["stage"] != "quality_init"]
    findings = compare_runs(_run(tmp_path / "run", rows), reference, acc_tol=ACC_TOL)
    assert passed(findings) and "quality_init" not in {f.stage for f in findings}


def test_extra_units_pass(tmp_path: Path, reference: Path) -> None:
    p25 = V("tiny", "p0.25-s4", 0.25, 1, 4)
    run = _run(tmp_path / "run", _rows(variants=(BASE, P0, p25), quality=(BASE, P0, p25)))
    findings = compare_runs(run, reference, acc_tol=ACC_TOL)
    assert passed(findings)
    assert sorted((f.stage, f.status) for f in findings if f.variant == "p0.25-s4") == [
        ("compute", "extra"), ("quality", "extra"), ("quality_init", "extra")]  # fmt: skip


def test_a_lost_measurement_differs(tmp_path: Path, reference: Path) -> None:
    rows = [dict(r, value=None) if r["metric"] == "params_m" and r["variant"] == "baseline"
            else r for r in _rows()]  # fmt: skip
    findings = compare_runs(_run(tmp_path / "run", rows), reference, acc_tol=ACC_TOL)
    assert _failed(findings) == [("baseline", "compute", "params_m", "differs")]
    assert "no measurement in the run" in next(f for f in findings if f.failed).note


@pytest.mark.parametrize("acc_tol", [math.nan, math.inf, -0.01, 1.0, "0.1", True], ids=repr)
def test_bad_tolerance_is_a_config_error(tmp_path: Path, reference: Path, acc_tol) -> None:
    with pytest.raises(ConfigError, match=r"^acc_tol must be a (finite )?number in \[0, 1\)"):
        compare_runs(reference, reference, acc_tol=acc_tol)


@pytest.mark.parametrize("which", ["run", "reference"])
def test_not_a_run_is_a_results_error(tmp_path: Path, reference: Path, which: str) -> None:
    other = tmp_path / "empty"
    other.mkdir()
    args = (other, reference) if which == "run" else (reference, other)
    with pytest.raises(ResultsError, match="not a tlbench run") as e:
        compare_runs(*args, acc_tol=ACC_TOL)
    assert "\n" not in str(e.value)


def test_the_mean_over_shots_absorbs_one_noisy_cell(tmp_path: Path, reference: Path) -> None:
    """Cross-machine noise moves single cells more than their mean; a real shift moves the mean."""
    noisy = [dict(r, value=r["value"] + (1.5 * ACC_TOL if r.get("shots") == 1 else -ACC_TOL))
             if r["metric"] == "fewshot_acc" else r for r in _rows()]  # fmt: skip
    assert passed(compare_runs(_run(tmp_path / "noisy", noisy), reference, acc_tol=ACC_TOL))
    assert not passed(compare_runs(tmp_path / "noisy", reference, acc_tol=ACC_TOL, per_shots=True))
    shifted = [dict(r, value=r["value"] + 2 * ACC_TOL) if r["metric"] == "fewshot_acc" else r
               for r in _rows()]  # fmt: skip
    assert not passed(compare_runs(_run(tmp_path / "shifted", shifted), reference, acc_tol=ACC_TOL))
