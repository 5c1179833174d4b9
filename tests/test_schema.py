"""One schema for every reader: a results row whose value has the wrong type (in any column) is
one line naming rows.jsonl:LINE and the column, exit 2, through plot, resume, compare, recommend
and status; a ledger line and a manifest's variant record likewise; the committed runs pass."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from committed import committed_run
from typer.testing import CliRunner

from tlbench import results, schema
from tlbench.cli import app
from tlbench.errors import ResultsError

ROOT = Path(__file__).resolve().parents[1] / "results"
RUN = committed_run("default")
runner = CliRunner()
LINE = 6  # the damaged line of rows.jsonl (1-based), a compute row of a TokenLearner variant

# column -> a value of the wrong type for it (NaN in a key column, a list for a name, a float count)
WRONG = {
    "run_id": 5, "model": ["vit_cpu6"], "variant": 3, "method": 1.5, "position": "0.5",
    "block_index": 2.5, "num_tokens": 8.5, "stage": ["compute"], "metric": float("nan"), "value": "fast",
    "unit": None, "dataset": 5, "shots": "5", "seed": 1.5, "batch_size": "auto", "device": 0,
    "dtype": [], "attn_kernel": {}, "host": True, "gpu": 1, "ci_low": "low", "ci_high": [1.0],
    "reliable": "yes", "extra_column": [1, 2],
}  # fmt: skip
READERS = {
    "plot": lambda run, tmp: ["plot", str(run), "--out", str(tmp / "figures")],
    "resume": lambda run, tmp: ["sweep", "--resume", str(run)],
    "compare": lambda run, tmp: ["compare", str(run), str(RUN)],
    "compare-reference": lambda run, tmp: ["compare", str(RUN), str(run)],
    "recommend": lambda run, tmp: ["recommend", str(run), "--max-gflops", "1"],
    "status": lambda run, tmp: ["status", str(run)],
}


def test_every_column_has_a_kind() -> None:
    assert set(schema.ROW_TYPES) == set(results.COLUMNS)
    assert set(WRONG) - {"extra_column"} == set(results.COLUMNS)


def copy_run(tmp_path: Path) -> Path:
    run = tmp_path / RUN.name
    shutil.copytree(RUN, run, ignore=shutil.ignore_patterns("figures"))
    return run


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("column", WRONG)
def test_a_wrong_type_is_one_line_naming_file_line_and_column(
    tmp_path: Path, column: str, reader: str
) -> None:
    run = copy_run(tmp_path)
    lines = (run / results.ROWS).read_text().splitlines()
    row = json.loads(lines[LINE - 1])
    lines[LINE - 1] = json.dumps({**row, column: WRONG[column]})
    (run / results.ROWS).write_text("\n".join(lines) + "\n")
    before = (run / results.ROWS).read_bytes(), (run / results.UNITS).read_bytes()
    result = runner.invoke(app, READERS[reader](run, tmp_path))
    assert result.exit_code == 2, result.output
    out = result.output.strip()
    assert len(out.splitlines()) == 1 and "Traceback" not in out, out
    assert f"rows.jsonl:{LINE}: {column} must be" in out, out
    assert (
        (run / results.ROWS).read_bytes(),
        (run / results.UNITS).read_bytes(),
    ) == before  # nothing written


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        (0.0, True),
        (1, True),
        (None, True),
        (1.5, False),
        (-0.1, False),
        (float("nan"), False),
        (True, False),
    ],
)
def test_position_is_a_number_in_0_1(value: object, ok: bool) -> None:
    assert schema.fits(schema.POSITION, value) is ok


def test_missing_measurements_are_not_wrong_types() -> None:
    for value in (float("nan"), float("inf"), None, 3, 0.5):
        assert schema.fits(schema.NUMBER, value)


@pytest.mark.parametrize(
    ("key", "value"), [("model", ["a"]), ("stage", 1), ("variant", ""), ("rows", 2.5), ("rows", -1)]
)
def test_a_wrong_type_in_the_ledger_names_its_line(tmp_path: Path, key: str, value: object) -> None:
    run = copy_run(tmp_path)
    lines = (run / results.UNITS).read_text().splitlines()
    lines[1] = json.dumps({**json.loads(lines[1]), key: value})
    (run / results.UNITS).write_text("\n".join(lines) + "\n")
    with pytest.raises(ResultsError, match=rf"units.jsonl:2: {key} must be"):
        results.read_units(run)
    result = runner.invoke(app, ["status", str(run)])
    assert result.exit_code == 2 and "units.jsonl:2" in result.output


@pytest.mark.parametrize(
    ("key", "value"),
    [("model", 7), ("name", ["p0.5-s8"]), ("position", "0.5"), ("num_tokens", 8.5), ("fuser", "no"),
     ("params", [["r", 1.5]])],
)  # fmt: skip
def test_a_wrong_type_in_the_manifests_variants_is_one_line_for_maps(
    tmp_path: Path, key: str, value: object
) -> None:
    run = copy_run(tmp_path)
    doc = json.loads((run / results.MANIFEST).read_text())
    doc["variants"][2][key] = value
    (run / results.MANIFEST).write_text(json.dumps(doc))
    for args in (
        ["maps", str(run), "--variant", "p0.25-s8", "--out", str(tmp_path / "m")],
        ["maps", str(run), "--all"],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, result.output
        out = result.output.strip()
        assert len(out.splitlines()) == 1 and f"variants[2]: {key} must be" in out, out


def test_every_committed_run_passes_the_schema() -> None:
    runs = sorted(p.parent for p in ROOT.glob("**/manifest.json"))
    assert len(runs) >= 8
    for run in runs:
        assert results.read_rows(run), run
        results.read_units(run)


def test_a_wrong_type_in_a_jobs_shard_is_refused_before_it_is_folded(tmp_path: Path) -> None:
    from tlbench.study import shards

    run = copy_run(tmp_path)
    row = {
        **json.loads((run / results.ROWS).read_text().splitlines()[0]),
        "variant": "p9-s9",
        "shots": "5",
    }
    shards.write_shard(run, "vit_cpu6", "p9-s9", "compute", "done", [row], rows=1)
    before = (run / results.ROWS).read_bytes()
    with pytest.raises(
        ResultsError, match=r"compute--vit_cpu6--p9-s9.json: rows\[0\]: shots must be"
    ):
        shards.fold(run)
    result = runner.invoke(app, ["status", str(run)])
    assert result.exit_code == 2 and "shots must be" in result.output
    assert (run / results.ROWS).read_bytes() == before
