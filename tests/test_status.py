"""status: every unit of a committed run done; a removed unit 'not started'; a failed one with
its error and log; the lock holder while a process works on the run; exit codes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from committed import committed_run
from typer.testing import CliRunner

from tlbench.cli import app
from tlbench.files import RunLock, lock_holder
from tlbench.study.status import run_status

RUN = committed_run("default")
runner = CliRunner()


def ledger(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "units.jsonl").read_text().splitlines() if x.strip()]


def test_committed_run_is_all_done() -> None:
    lines = ledger(RUN)
    st = run_status(RUN)
    assert len(st.units) == len(lines) and {u.status for u in st.units} == {"done"}
    assert st.complete and st.lock_holder is None
    result = runner.invoke(app, ["status", str(RUN), "--format", "json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["complete"] and not doc["running"] and doc["counts"]["done"] == len(lines)
    rows = {(u["variant"], u["stage"]): u["rows"] for u in doc["units"]}
    assert rows == {(x["variant"], x["stage"]): x["rows"] for x in lines}


def test_removed_unit_is_not_started_and_failed_unit_shows_its_error(tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(RUN, run)
    lines = ledger(run)
    gone, broken = lines[-1], lines[-2]
    kept = [x for x in lines if x not in (gone, broken)]
    failed = {**broken, "status": "failed", "error": "RuntimeError", "reason": "RuntimeError: boom",
              "log": f"logs/{broken['stage']}-{broken['variant']}.log"}  # fmt: skip
    failed.pop("rows")
    (run / "units.jsonl").write_text("".join(json.dumps(x) + "\n" for x in [*kept, failed]))
    rows = [json.loads(x) for x in (run / "rows.jsonl").read_text().splitlines()]
    rows = [r for r in rows if (r["variant"], r["stage"]) != (gone["variant"], gone["stage"])]
    (run / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    st = run_status(run)
    by = {(u.variant, u.stage): u for u in st.units}
    assert by[gone["variant"], gone["stage"]].status == "not started"
    bad = by[broken["variant"], broken["stage"]]
    assert (bad.status, bad.reason, bad.log) == ("failed", "RuntimeError: boom", failed["log"])
    assert st.counts == {"done": len(kept), "skipped": 0, "failed": 1, "running": 0, "not started": 1,
                         "rows lost": 0}
    assert not st.complete
    result = runner.invoke(app, ["status", str(run)])
    assert result.exit_code == 1
    assert "not started" in result.output and "RuntimeError: boom" in result.output
    assert f"{len(kept)} done, 0 skipped, 1 failed, 1 not started" in result.output


def test_lock_holder_while_a_process_works(tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(RUN, run)
    assert lock_holder(run) is None
    with RunLock(run):
        # flock locks belong to the open file: another open of .lock sees it held, as another process would
        assert lock_holder(run) is not None and "pid" in lock_holder(run)
        assert run_status(run).lock_holder is not None
        result = runner.invoke(app, ["status", str(run), "--format", "json"])
        assert json.loads(result.output)["running"] is True
    assert lock_holder(run) is None  # released; the .lock file stays
    assert (run / ".lock").exists()


def test_bad_input_is_one_line_exit_2(tmp_path: Path) -> None:
    for path, message in ((tmp_path / "nope", "no such run directory"), (tmp_path, "not a tlbench run")):
        result = runner.invoke(app, ["status", str(path)])
        assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output
    result = runner.invoke(app, ["status", str(RUN), "--format", "csv"])
    assert result.exit_code == 2 and "--format" in result.output
