"""Results I/O: round trip, truncated last line tolerated, corrupt middle line named, schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tlbench import results
from tlbench.core import Variant
from tlbench.errors import ResultsError

BASE = Variant("tiny", None, None, None)
TL = Variant("tiny", 0.5, 2, 4)


def _run(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    results.write_manifest(run, {"config": {}})
    results.append_rows(run, [results.make_row(BASE, "compute", "gflops", 2.5),
                              results.make_row(TL, "compute", "gflops", 1.5)])  # fmt: skip
    results.append_rows(run, [results.make_row(TL, "quality", "fewshot_acc", 0.75, dataset="digits",
                                               shots=5, seed=1)])  # fmt: skip
    return run


def test_round_trip_schema_and_dtypes(tmp_path: Path) -> None:
    df = results.load_results(_run(tmp_path))
    assert list(df.columns[:10]) == results.COLUMNS[:10]
    assert len(df) == 3 and set(df["run_id"]) == {"run"}
    assert str(df["block_index"].dtype) == "Int64" and str(df["shots"].dtype) == "Int64"
    base = df[df["variant"] == "baseline"].iloc[0]
    assert base["unit"] == "GFLOPs" and base["block_index"] is __import__("pandas").NA
    acc = df[df["metric"] == "fewshot_acc"].iloc[0]
    assert (acc["shots"], acc["seed"], acc["dataset"], acc["unit"]) == (5, 1, "digits", "acc")


def test_csv_view_follows_the_rows(tmp_path: Path) -> None:
    run = _run(tmp_path)
    assert len((run / results.CSV).read_text().strip().splitlines()) == 1 + 3


def test_truncated_last_line_is_tolerated_and_repaired(tmp_path: Path) -> None:
    run = _run(tmp_path)
    with open(run / results.ROWS, "a") as f:
        f.write('{"model": "tiny", "varia')  # a kill mid-write
    with pytest.warns(UserWarning, match="truncated"):
        assert len(results.load_results(run)) == 3
    assert results.repair_tail(run)
    results.append_rows(run, [results.make_row(BASE, "compute", "params_m", 0.2)])
    assert len(results.load_results(run)) == 4  # the new row starts on a clean line


def test_corrupt_middle_line_names_file_and_line(tmp_path: Path) -> None:
    run = _run(tmp_path)
    lines = (run / results.ROWS).read_text().splitlines()
    lines[1] = "{not json"
    (run / results.ROWS).write_text("\n".join(lines) + "\n")
    with pytest.raises(ResultsError, match=r"rows.jsonl:2: corrupt row"):
        results.load_results(run)


def test_row_without_required_columns_is_refused(tmp_path: Path) -> None:
    run = _run(tmp_path)
    with open(run / results.ROWS, "a") as f:
        f.write(json.dumps({"model": "tiny"}) + "\n")
    with pytest.raises(ResultsError, match=r":4: not a results row"):
        results.load_results(run)


def test_missing_run_and_corrupt_manifest(tmp_path: Path) -> None:
    with pytest.raises(ResultsError, match="no such run"):
        results.load_results(tmp_path / "nope")
    run = _run(tmp_path)
    (run / results.MANIFEST).write_text("{")
    with pytest.raises(ResultsError, match="manifest.json:1: corrupt manifest"):
        results.load_results(run)


def test_unknown_metric_is_a_bug() -> None:
    with pytest.raises(ValueError, match="unknown metric"):
        results.make_row(BASE, "compute", "gflops_per_watt", 1.0)


def test_summary_is_one_row_per_variant(tmp_path: Path) -> None:
    s = results.summary(results.load_results(_run(tmp_path)))
    assert list(s["variant"]) == ["baseline", "p0.5-s4"]
    assert s.set_index("variant").loc["p0.5-s4", "×base"] == pytest.approx(0.6)
    assert s.set_index("variant").loc["p0.5-s4", "digits 5-shot %"] == pytest.approx(75.0)
