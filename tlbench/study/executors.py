"""Run a sweep's units as submitit jobs: on this machine (local), on a SLURM cluster (slurm), or
in this process through submitit's own machinery (debug, for tests).

A job is one unit (model, variant, stage), except speed: a model's variants are timed together,
interleaved, in ONE job, so every speedup is measured within one job (on an exclusive node under
SLURM). Jobs run the same stage functions as the inline path (stages.run_stage)
with a ShardBook, which writes each finished unit to its shard instead of rows.jsonl
(tlbench/shards.py); this process waits, folds the shards and is the run's one writer. Jobs are
Checkpointable: on SLURM's preemption or time-limit signal a unit requeues itself and its training
resumes from the run's partial checkpoint (quality.save_every_s).

Jobs are submitted phase by phase: with quality.adapt = none or distill, the baseline's quality
unit first (every reducer is inserted into its trained weights), then the others. Each submission
is recorded in RUN_DIR/jobs.jsonl (unit, job id), which `tlbench status` reads.
"""

from __future__ import annotations

import itertools
import json
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import submitit

from tlbench import files, results
from tlbench.config import ExecutorConfig, SweepConfig
from tlbench.core import Variant
from tlbench.errors import SubmissionError
from tlbench.study import job_guard, shards
from tlbench.study.slurm import check_submission, job_known, job_states
from tlbench.study.stages import Book, run_stage
from tlbench.study.workers import Failure, _sigint_ignored


class ShardBook(Book):
    """A Book that writes each unit's outcome to its shard: jobs never touch rows.jsonl. Its log
    files name the model (several=True): jobs of several models share the run's logs/."""

    def __init__(self, run_dir: Path) -> None:
        super().__init__(run_dir, _print_status, several=True)

    def record(self, v: Variant, stage: str, status: str, table: list[dict[str, Any]] | None = None,
               /, **info: Any) -> None:  # fmt: skip
        shards.write_shard(self.run_dir, v.model, v.name, stage, status, table, **info)


def _print_status(event: str, **info: Any) -> None:
    if event == "status":  # into the job's log; training steps would drown it
        print(info["text"], flush=True)


class UnitJob(submitit.helpers.Checkpointable):
    """The submitted callable: run `todo` of one stage and write their shards.

    Checkpointable: when SLURM preempts the job or its time runs out, submitit calls
    `checkpoint()`, which resubmits this same object; training picks up from its partial
    checkpoint in RUN_DIR/checkpoints, so the unit continues where it stopped.
    """

    def __init__(self, config: SweepConfig, run_dir: str, stage: str, variants: Sequence[Variant],
                 todo: Sequence[Variant]) -> None:  # fmt: skip
        self.config, self.run_dir, self.stage = config, run_dir, stage
        self.variants, self.todo = tuple(variants), tuple(todo)  # speed: all timed; todo: recorded
        self.owner: job_guard.Owner | None = None  # local jobs: the submitter they end with

    def __call__(self) -> int:
        """Returns the number of units it finished; an error becomes their failed shards."""
        if self.owner is not None:
            job_guard.watch_owner(self.owner)
        book = ShardBook(Path(self.run_dir))
        try:
            run_stage(self.stage, self.config, list(self.variants), list(self.todo), book)
        except Exception as e:  # a job never raises (DebugExecutor would open a debugger)
            written = shards.shard_units(book.run_dir)
            book.fail([v for v in self.todo if (v.model, v.name, self.stage) not in written],
                      self.stage, Failure.of(e))  # fmt: skip
        return len(self.todo)

    def label(self) -> str:
        return f"{self.stage} {self.todo[0].model} " + ",".join(v.name for v in self.todo)


@dataclass(frozen=True)
class Submitted:
    job: UnitJob
    handle: Any  # submitit.Job


def run_jobs(config: SweepConfig, groups: list[tuple[SweepConfig, list[Variant]]],
             todo: dict[str, list[Variant]], book: Book) -> None:  # fmt: skip
    """Run the units in `todo` (stage -> variants) as jobs under config.executor, phase by phase;
    each finished job's shards are folded into the run as it ends."""
    ex = config.executor
    recorded: set[tuple[str, str, str]] = set()  # units folded by this call
    running = running_jobs(ex, book.run_dir)
    live: list[Submitted] = []  # local jobs, killed if this process is interrupted
    try:
        _run_phases(config, groups, todo, book, running, recorded, live)
    except BaseException:
        for s in live if backend(ex).on_this_machine else []:
            if not s.handle.done():
                job_guard.kill_job_tree(int(s.handle.job_id))
        raise


def _run_phases(config: SweepConfig, groups: list[tuple[SweepConfig, list[Variant]]],
                todo: dict[str, list[Variant]], book: Book, running: dict[tuple[str, str, str], str],
                recorded: set[tuple[str, str, str]], live: list[Submitted]) -> None:  # fmt: skip
    ex = config.executor
    for phase in phases(config, groups, todo, str(book.run_dir)):
        for wave in waves(ex, phase):
            ids = [{running.get((v.model, v.name, j.stage)) for v in j.todo} for j in wave]
            adopted = [Submitted(j, submitit.SlurmJob(book.run_dir / "submitit", i.pop()))
                       for j, i in zip(wave, ids, strict=True) if len(i) == 1 and None not in i]  # fmt: skip
            if adopted:
                book.status(f"waiting for {len(adopted)} job(s) still queued or running: "
                            + ", ".join(str(s.handle.job_id) for s in adopted))  # fmt: skip
            fresh = [j for j in wave if all(j is not s.job for s in adopted)]
            submitted = submit(ex, fresh, book.run_dir) if fresh else []
            live += submitted
            if submitted:
                first_ids = sorted({str(s.handle.job_id).split("_")[0] for s in submitted})
                book.status(f"{len(fresh)} {ex.kind} job(s) submitted: {', '.join(first_ids)}")
            for s in adopted + submitted:
                wait(s, book, recorded)


ACTIVE = {"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "SUSPENDED", "RESIZING",
          "REQUEUE_HOLD", "REQUEUE_FED"}  # SLURM job states of a job that may still write its shard


def running_jobs(ex: ExecutorConfig, run_dir: Path) -> dict[tuple[str, str, str], str]:
    """(model, variant, stage) -> job id, for units whose SLURM job from an earlier submission
    is still queued or running (asked of squeue, then sacct: a job submitted a moment ago may not
    have reached accounting yet): a --resume waits for them instead of submitting them twice.
    Local and debug jobs end with the process that submitted them."""
    if not backend(ex).scheduler:
        return {}
    ledger = results.read_units(run_dir)
    out = {}
    for key, job in results.read_jobs(run_dir).items():
        outcome = ledger.get(key)
        if job.get("executor") != ex.kind or (outcome and outcome.get("finished", "") >= job["submitted"]):
            continue
        out[key] = job["job_id"]
    states = job_states(out.values())  # one question for all, not submitit's sacct alone
    return {key: i for key, i in out.items() if states.get(i, "UNKNOWN") in ACTIVE}


def waves(ex: ExecutorConfig, phase: list[UnitJob]) -> list[list[UnitJob]]:
    """Jobs submitted together. SLURM queues them all; on one machine (local) at most `workers`
    run at once (LocalExecutor starts every job it is given), and a speed job runs alone: a
    timing shared with another job means nothing."""
    if not backend(ex).on_this_machine:
        return [phase]
    others = [j for j in phase if j.stage != "speed"]
    alone = [[j] for j in phase if j.stage == "speed"]
    return alone + [others[i : i + ex.workers] for i in range(0, len(others), ex.workers)]


def phases(config: SweepConfig, groups: list[tuple[SweepConfig, list[Variant]]],
           todo: dict[str, list[Variant]], run_dir: str) -> list[list[UnitJob]]:  # fmt: skip
    """The jobs, in the order they may run: every unit is one job, a model's speed units one."""
    first: list[UnitJob] = []
    later: list[UnitJob] = []
    for sub, mine in groups:
        for stage in ("compute", "speed", "quality"):
            left = [v for v in todo.get(stage, []) if v in mine]
            if not left:
                continue
            if stage == "speed":
                timed = [v for v in mine if v.is_baseline or v in left]
                first.append(UnitJob(sub, run_dir, stage, timed, left))
                continue
            for v in left:
                after_base = stage == "quality" and sub.quality.adapt != "scratch" and not v.is_baseline
                (later if after_base else first).append(UnitJob(sub, run_dir, stage, [v], [v]))
    return [p for p in (first, later) if p]


def _debug(ex: ExecutorConfig, folder: Path, exclusive: bool) -> submitit.Executor:
    return submitit.DebugExecutor(folder)


def _local(ex: ExecutorConfig, folder: Path, exclusive: bool) -> submitit.Executor:
    local = submitit.LocalExecutor(folder)
    local.update_parameters(timeout_min=ex.timeout_min)  # submitit's own default is 2 minutes
    return local


def _slurm(ex: ExecutorConfig, folder: Path, exclusive: bool) -> submitit.Executor:
    executor = submitit.SlurmExecutor(folder, max_num_timeout=ex.max_requeues)
    params: dict[str, Any] = dict(time=ex.timeout_min, gpus_per_node=ex.gpus_per_node, job_name="tlbench")
    for key in ("partition", "account", "cpus_per_task"):
        if getattr(ex, key) is not None:
            params[key] = getattr(ex, key)
    if ex.setup:
        params["setup"] = list(ex.setup)
    if exclusive:
        params["exclusive"] = True
    executor.update_parameters(**params)
    return executor


def _check_slurm(ex: ExecutorConfig) -> None:
    if shutil.which("sbatch") is None or shutil.which("srun") is None:
        raise SubmissionError("executor.kind = slurm, but sbatch/srun are not on PATH (not a SLURM "
                              "login node?); use --executor local or inline here")  # fmt: skip
    check_submission(ex)  # the cluster's own verdict on partition, account, GPUs: nothing submitted


@dataclass(frozen=True)
class Backend:
    """What tells the executor kinds apart: how their submitit executor is made, how they are
    checked before any work, and two facts the submission follows."""

    make: Callable[[ExecutorConfig, Path, bool], submitit.Executor]  # (config, folder, exclusive)
    on_this_machine: bool  # jobs are processes here: waves of `workers`, ended with the sweep
    scheduler: bool  # a queue that outlives the submitter: job arrays; a resume asks it what lives
    check: Callable[[ExecutorConfig], None] = lambda ex: None


# executor.kind -> its backend; "inline" (this process, no jobs) is the sweep's own path
EXECUTORS: dict[str, Backend] = {
    "debug": Backend(_debug, on_this_machine=False, scheduler=False),  # submitit in this process
    "local": Backend(_local, on_this_machine=True, scheduler=False),
    "slurm": Backend(_slurm, on_this_machine=False, scheduler=True, check=_check_slurm),
}


def backend(ex: ExecutorConfig) -> Backend:
    return EXECUTORS[ex.kind]


def check_executor(ex: ExecutorConfig) -> None:
    """Refuse, before any work, an executor this machine cannot submit to."""
    if ex.kind in EXECUTORS:
        backend(ex).check(ex)


def executor_for(ex: ExecutorConfig, folder: Path, *, exclusive: bool = False) -> submitit.Executor:
    """A submitit executor writing its pickles and logs under `folder` (RUN_DIR/submitit)."""
    return backend(ex).make(ex, folder, exclusive)


def submit(ex: ExecutorConfig, jobs: list[UnitJob], run_dir: Path) -> list[Submitted]:
    """Submit `jobs` (under SLURM: one job array, and one more for the exclusive speed jobs) and
    record each job id in jobs.jsonl before waiting on any."""
    folder = run_dir / "submitit"
    out: list[Submitted] = []
    b = backend(ex)
    speed = [j for j in jobs if j.stage == "speed" and b.scheduler and ex.exclusive]
    for group, exclusive in (([j for j in jobs if j not in speed], False), (speed, True)):
        if not group:
            continue
        executor = executor_for(ex, folder, exclusive=exclusive)
        for j in group if b.on_this_machine else []:
            j.owner = job_guard.this_process()
        try:
            if b.scheduler:
                with executor.batch():  # one sbatch: a job array of len(group) tasks
                    handles = [executor.submit(j) for j in group]
            else:  # a Ctrl-C at the terminal is this process's, not the jobs' (they inherit SIG_IGN)
                with _sigint_ignored():
                    handles = [executor.submit(j) for j in group]
        except (submitit.core.utils.FailedJobError, submitit.core.utils.FailedSubmissionError, OSError) as e:
            lines = str(e).strip().splitlines()
            raise SubmissionError(f"{ex.kind}: the jobs were not submitted ({lines[-1] if lines else type(e).__name__}); "
                                  f"finished units are kept: tlbench sweep --resume {run_dir}") from None  # fmt: skip
        out += [Submitted(j, h) for j, h in zip(group, handles, strict=True)]
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    files.append_text(run_dir / results.JOBS, "".join(
        json.dumps({"job_id": str(s.handle.job_id), "executor": ex.kind, "stage": s.job.stage,
                    "model": v.model, "variant": v.name, "submitted": stamp}) + "\n"
        for s in out for v in s.job.todo))  # fmt: skip
    return out


def wait(s: Submitted, book: Book, recorded: set[tuple[str, str, str]]) -> None:
    """Wait for one job, fold the shards it wrote, and fail (one line each) the units it left
    without an outcome: a job killed, out of memory, or cancelled writes no shard."""
    try:
        lost = _until_done(s.handle) if isinstance(s.handle, submitit.SlurmJob) else None
        if lost:
            raise RuntimeError(lost)
        s.handle.result()
        why = "it wrote no result"
    except Exception as e:
        first = str(e).strip().splitlines()
        why = f"it ended without a result: {first[0] if first else type(e).__name__}"
    recorded |= fold(book)
    done = results.done_units(book.run_dir)
    missing = [v for v in s.job.todo if (v.model, v.name, s.job.stage) not in recorded | done]
    if missing:
        book.fail(missing, s.job.stage, Failure("JobDied", f"job {s.handle.job_id}: {why}", ""))
        recorded |= {(v.model, v.name, s.job.stage) for v in missing}


def _until_done(job: submitit.SlurmJob, grace_s: float = 10.0) -> str | None:
    """Wait for a SLURM job as submitit's result() does, but return a reason instead of waiting
    forever when SLURM lost the job: neither sacct nor slurmctld lists it (a task of a pending
    job array that is cancelled gets no accounting record, and submitit keeps its last state)."""
    missing_since: float | None = None
    for tick in itertools.count():
        if job.done():
            return None
        if tick % 5 == 4:  # submitit's cached state may be stale: ask both, now
            if not job_known(job.job_id) and job.job_id not in job_states([job.job_id]):
                missing_since = missing_since or time.time()
                if time.time() - missing_since >= grace_s:
                    return "SLURM has no record of it (cancelled before it started?)"
            else:
                missing_since = None
        time.sleep(1.0)
    return None


def fold(book: Book) -> set[tuple[str, str, str]]:
    """Fold the run's shards, reporting each unit to the book (progress, skip and fail lines);
    returns the units recorded."""
    keys: set[tuple[str, str, str]] = set()

    def on_unit(u: dict[str, Any]) -> None:
        name = f"{u['model']} {u['variant']}" if book.several else u["variant"]
        if u["status"] == "skipped":
            book.skipped.append(f"{u['stage']} {name}: {u.get('reason')}")
            book.emit("skip", stage=u["stage"], variant=u["variant"], reason=u.get("reason"))
        elif u["status"] == "failed":
            book.failed.append(f"{u['stage']} {name}: {u.get('reason')} (traceback: {book.run_dir / u['log']})")
            book.emit("fail", stage=u["stage"], variant=u["variant"], reason=u.get("reason"))
        book.emit("unit", advance=1, stage=u["stage"], variant=u["variant"])
        keys.add((u["model"], u["variant"], u["stage"]))

    shards.fold(book.run_dir, on_unit)
    return keys
