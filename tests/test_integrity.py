"""A damaged run that the ledger calls complete: rows.jsonl lost its last line, a unit's rows, all
of its lines, the whole file, or became a folder. `tlbench status` reports every unit whose rows
are missing (exit 1), and `tlbench sweep --resume` redoes each one, says so, and ends with exactly
the rows of the undamaged run; a folder in the file's place is one line, exit 2, nothing touched."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tlbench import results
from tlbench.cli import app
from tlbench.study import integrity
from tlbench.study.status import run_status

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "sweeps" / "smoke.toml"
runner = CliRunner()
FAST = ["--set", "speed.enabled=false", "--set", "quality.enabled=false"]  # compute only: seconds


@pytest.fixture(scope="module")
def compute_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("out")
    result = runner.invoke(app, ["sweep", str(SMOKE), "--out", str(out), *FAST])
    assert result.exit_code == 0, result.output
    (run,) = (out / "smoke").iterdir()
    return run


def rows_of(run: Path) -> list[str]:
    return (run / results.ROWS).read_text().splitlines(keepends=True)


def unit_of(line: str) -> tuple[str, str, str]:
    r = json.loads(line)
    return r["model"], r["variant"], results.unit_stage(r["stage"])


def damage(run: Path, kind: str) -> set[tuple[str, str, str]]:
    """Damage rows.jsonl; returns the units whose rows it lost."""
    path, lines = run / results.ROWS, rows_of(run)
    units = [unit_of(x) for x in lines]
    if kind == "last-line":  # lost at a line boundary
        path.write_text("".join(lines[:-1]))
        return {units[-1]}
    if kind == "torn-last-line":  # a byte cut inside the last line
        path.write_text("".join(lines[:-1]) + lines[-1][:15])
        return {units[-1]}
    if kind == "one-unit":  # a middle unit's lines, at line boundaries
        gone = units[len(units) // 2]
        path.write_text("".join(x for x, u in zip(lines, units, strict=True) if u != gone))
        return {gone}
    if kind == "swapped-row":  # the count holds, a row is another's: only the key digest sees it
        path.write_text("".join([*lines[:-1], lines[-2]]))
        return {units[-1]}
    if kind == "emptied":
        path.write_text("")
    elif kind == "deleted":
        path.unlink()
    return set(units)


KINDS = ["last-line", "torn-last-line", "one-unit", "swapped-row", "emptied", "deleted"]


def test_a_whole_run_has_nothing_lost(compute_run: Path) -> None:
    assert integrity.lost_units(compute_run) == []
    assert {u.status for u in run_status(compute_run).units} == {"done"}
    ledger = [json.loads(x) for x in (compute_run / results.UNITS).read_text().splitlines()]
    assert all(u["rows"] == 3 and len(u["keys"]) == 12 for u in ledger)


@pytest.mark.parametrize("kind", KINDS)
def test_status_reports_every_unit_whose_rows_are_missing(
    compute_run: Path, tmp_path: Path, kind: str
) -> None:
    run = tmp_path / compute_run.name
    shutil.copytree(compute_run, run)
    lost = damage(run, kind)
    st = run_status(run)
    assert {(u.model, u.variant, u.stage) for u in st.units if u.status == "rows lost"} == lost
    assert st.counts["rows lost"] == len(lost) and not st.complete
    result = runner.invoke(app, ["status", str(run)])
    assert result.exit_code == 1 and "rows lost" in result.output and "--resume" in result.output


@pytest.mark.parametrize("kind", KINDS)
def test_resume_redoes_every_unit_whose_rows_are_missing(
    compute_run: Path, tmp_path: Path, kind: str
) -> None:
    run = tmp_path / compute_run.name
    shutil.copytree(compute_run, run)
    lost = damage(run, kind)
    result = runner.invoke(app, ["sweep", "--resume", str(run)])
    assert result.exit_code == 0, result.output
    said = [x for x in result.output.splitlines() if x.startswith("redone:")]
    assert len(said) == len(lost) and all("rows lost after it finished" in x for x in said), (
        result.output
    )
    assert sorted(rows_of(run)) == sorted(rows_of(compute_run))  # every row back, none twice
    assert integrity.lost_units(run) == [] and run_status(run).complete
    again = runner.invoke(app, ["sweep", "--resume", str(run)])  # and nothing more to do
    assert again.exit_code == 0 and "redone:" not in again.output


@pytest.mark.parametrize(
    "command", [["status"], ["sweep", "--resume"], ["plot"], ["recommend", "--max-gflops", "1"]]
)
def test_a_folder_in_place_of_the_rows_is_one_line(
    compute_run: Path, tmp_path: Path, command: list[str]
) -> None:
    run = tmp_path / compute_run.name
    shutil.copytree(compute_run, run)
    (run / results.ROWS).unlink()
    (run / results.ROWS).mkdir()
    (run / results.ROWS / "kept.txt").write_text("whatever the user put here")
    ledger = (run / results.UNITS).read_text()
    result = runner.invoke(app, [command[0], *command[1:], str(run)] if command[0] != "recommend"
                           else [command[0], str(run), *command[1:]])  # fmt: skip
    assert result.exit_code == 2, result.output
    out = result.output.strip()
    assert len(out.splitlines()) == 1 and "rows.jsonl: not a file" in out and "Traceback" not in out
    assert (run / results.ROWS / "kept.txt").is_file() and (
        run / results.UNITS
    ).read_text() == ledger


def test_a_ledger_from_before_the_row_count_is_checked_for_any_row(
    compute_run: Path, tmp_path: Path
) -> None:
    run = tmp_path / compute_run.name
    shutil.copytree(compute_run, run)
    old = [{k: v for k, v in json.loads(x).items() if k not in ("rows", "keys")}
           for x in (run / results.UNITS).read_text().splitlines()]  # fmt: skip
    (run / results.UNITS).write_text("".join(json.dumps(u) + "\n" for u in old))
    assert integrity.lost_units(run) == [] and run_status(run).complete
    lines = rows_of(run)
    first = unit_of(lines[0])
    (run / results.ROWS).write_text("".join(x for x in lines if unit_of(x) != first))
    assert [
        (x.model, x.variant, x.stage, x.expected, x.found) for x in integrity.lost_units(run)
    ] == [(*first, None, 0)]


def test_the_committed_runs_have_all_their_rows() -> None:
    runs = sorted(p.parent for p in (ROOT / "results").glob("**/manifest.json"))
    for run in runs:
        assert integrity.lost_units(run) == [], run
