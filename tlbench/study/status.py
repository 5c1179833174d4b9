"""Where does a run stand? Every unit its config expands to, with what the ledger says of it,
and whether a process works on the run now.

A unit is (model, variant, stage) for each variant of sweep.expand and each enabled stage:
- done (with its row count), skipped (reason), failed (one-line error and the log file);
- not started: no ledger line (never reached, or cut short by a kill: its rows, if any, are
  dropped and redone on --resume). Runs from before the ledger count a unit done by its rows;
- under an executor (tlbench/executors.py): a job's shard not folded yet counts as what it says
  (done = rows.jsonl + shards), and a unit submitted as a job (jobs.jsonl) with no outcome since
  is running, with its job id.
- skipped too: each combination of the grid that cannot exist (sweep.impossible), with why;
- rows lost: the ledger says done, but rows.jsonl no longer holds the rows it wrote (count and
  key digest, tlbench/study/integrity.py); `tlbench sweep --resume` runs it again.
`complete` is the CI question "is there anything left to run?": every unit done or skipped
(the sweep's own exit-0 rule); a failed or not-started unit makes it False.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tlbench import files, results
from tlbench.errors import ResultsError
from tlbench.study import integrity, shards
from tlbench.study.slurm import job_states
from tlbench.study.sweep import STAGES, expand, impossible, stored_config

NOT_STARTED = "not started"
RUNNING = "running"
LOST = "rows lost"


@dataclass(frozen=True)
class UnitStatus:
    model: str
    variant: str
    stage: str
    status: str  # done, skipped, failed, running, not started, rows lost
    rows: int | None  # rows written by a done unit (rows lost: the ones still there)
    reason: str | None  # skipped: why; failed: the one-line error
    log: str | None  # failed: the traceback's file, relative to the run
    job: str | None = None  # the id of the unit's latest job (executor runs)
    job_state: str | None = None  # a running unit's SLURM job: its state from sacct (PENDING, RUNNING, ...)


@dataclass(frozen=True)
class RunStatus:
    run_dir: Path
    units: list[UnitStatus]
    lock_holder: str | None  # 'tlbench pid 123' while a process holds the run's lock, else None

    @property
    def counts(self) -> dict[str, int]:
        c = Counter(u.status for u in self.units)
        return {s: c.get(s, 0) for s in (*results.STATUSES, RUNNING, NOT_STARTED, LOST)}

    @property
    def complete(self) -> bool:
        return all(u.status in ("done", "skipped") for u in self.units)

    def summary(self) -> str:
        c = self.counts
        state = f"running ({self.lock_holder})" if self.lock_holder else "not running"
        jobs = f"{c[RUNNING]} running, " if c[RUNNING] else ""
        jobs += f"{c[LOST]} with rows lost, " if c[LOST] else ""
        return (f"{len(self.units)} units: {c['done']} done, {c['skipped']} skipped, {c['failed']} failed, "
                f"{jobs}{c[NOT_STARTED]} not started; {state}")  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return {"run_dir": str(self.run_dir), "running": self.lock_holder is not None,
                "lock_holder": self.lock_holder, "complete": self.complete, "counts": self.counts,
                "units": [asdict(u) for u in self.units]}  # fmt: skip


def run_status(run_dir: str | Path) -> RunStatus:
    """Every unit of the run's stored config with its state, and the lock holder if any."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ResultsError(f"{run_dir}: no such run directory")
    config = stored_config(run_dir)  # not a run: a one-line ResultsError
    stages = [s for s in STAGES if getattr(config, s).enabled]
    ledger = results.read_units(run_dir) if results.has_ledger(run_dir) else None
    shard_done = shards.shard_units(run_dir) if ledger is not None else {}
    if ledger is not None:
        ledger.update(shard_done)  # finished by a job, not folded yet
    jobs = results.read_jobs(run_dir)
    rows = results.read_rows(run_dir)
    counted = Counter((r["model"], r["variant"], results.unit_stage(r["stage"])) for r in rows)
    lost = {(x.model, x.variant, x.stage): x for x in integrity.lost_units(run_dir, rows)}
    units = []
    live = [j["job_id"] for k, j in jobs.items() if ledger is not None and j.get("executor") == "slurm"
            and (ledger.get(k) or {}).get("finished", "") < j["submitted"]]  # fmt: skip
    states = job_states(live)  # sacct, once for all the running units' jobs
    for v in expand(config):
        for stage in stages:
            key = (v.model, v.name, stage)
            if ledger is None:  # a run from before the ledger: done by its rows
                state = "done" if counted[key] else NOT_STARTED
                units.append(UnitStatus(*key, state, counted[key] or None, None, None))
                continue
            u, job = ledger.get(key), jobs.get(key)
            if job is not None and (u is None or u.get("finished", "") < job["submitted"]):
                units.append(UnitStatus(*key, RUNNING, None, None, None, job["job_id"], states.get(job["job_id"])))
            elif u is None:
                units.append(UnitStatus(*key, NOT_STARTED, None, None, None))
            elif key in lost and key not in shard_done:
                why = f"{lost[key].reason()}; tlbench sweep --resume runs it again"
                units.append(UnitStatus(*key, LOST, counted[key], why, None))
            else:
                n = u.get("rows", counted[key]) if u["status"] == "done" else None
                units.append(UnitStatus(*key, u["status"], n, u.get("reason"), u.get("log"),
                                        job and job["job_id"]))  # fmt: skip
    for v, why in impossible(config):  # combinations the grid crosses that cannot exist
        units += [UnitStatus(v.model, v.name, stage, "skipped", None, f"cannot exist: {why}", None) for stage in stages]
    return RunStatus(run_dir, units, files.lock_holder(run_dir))
