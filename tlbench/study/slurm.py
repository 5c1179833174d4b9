"""What a SLURM cluster says about our jobs, asked before and while they run.

- `check_submission`: `sbatch --test-only` with the settings the jobs will get (partition,
  account, GPUs, CPUs, time): the cluster's own verdict on an unknown partition, GPUs on nodes
  without them or an account it refuses, one line, before the run directory exists.
- `job_states`: each job's state (PENDING, RUNNING, REQUEUED, ...), for `tlbench status` and
  for --resume, which waits for the live ones.
- `job_known`: whether slurmctld knows a job at all. A task of a job array cancelled while the
  array was still pending never gets an accounting record, so sacct never lists it and submitit
  would wait for it forever; a job neither sacct nor slurmctld knows is gone.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterable

from tlbench.config import ExecutorConfig
from tlbench.errors import SubmissionError


def sbatch_options(ex: ExecutorConfig) -> list[str]:
    """The resource options every job of `ex` is submitted with (executors.executor_for gives
    the same to submitit)."""
    opts = [f"--time={ex.timeout_min}"]
    if ex.gpus_per_node:
        opts.append(f"--gpus-per-node={ex.gpus_per_node}")
    for key in ("partition", "account", "cpus_per_task"):
        if getattr(ex, key) is not None:
            opts.append(f"--{key.replace('_', '-')}={getattr(ex, key)}")
    return opts


def check_submission(ex: ExecutorConfig) -> None:
    """Refuse, in one line, settings the cluster would refuse (nothing is submitted)."""
    opts = sbatch_options(ex)
    try:
        done = subprocess.run(["sbatch", "--test-only", "--job-name=tlbench-check", *opts, "--wrap=true"],
                              capture_output=True, text=True, timeout=60)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as e:
        raise SubmissionError(
            f"slurm: sbatch --test-only did not answer ({type(e).__name__}); is the cluster up?"
        ) from None
    if done.returncode == 0:
        return
    lines = [x.strip() for x in (done.stderr + done.stdout).splitlines() if x.strip()]
    why = next(
        (x for x in reversed(lines) if "failure:" in x or "error:" in x), lines[-1] if lines else ""
    )
    why = re.sub(r"^(sbatch: error: |allocation failure: )", "", why)
    raise SubmissionError(f"slurm: the cluster refuses these jobs: {why} (sbatch {' '.join(opts)}; "
                          "see executor.partition, account, gpus_per_node, cpus_per_task, timeout_min)")  # fmt: skip


def _expand(job_id: str) -> list[str]:
    """sacct's '12_[0-3,5%2]' (array tasks not started yet) -> 12_0 .. 12_3, 12_5."""
    m = re.fullmatch(r"(\d+)_\[([^\]]+)\]", job_id)
    if not m:
        return [job_id]
    out = []
    for part in m.group(2).split("%")[0].split(","):
        lo, _, hi = part.partition("-")
        out += [f"{m.group(1)}_{i}" for i in range(int(lo), int(hi or lo) + 1)]
    return out


def _ask(cmd: list[str]) -> dict[str, str]:
    """job id -> state from squeue's or sacct's 'ID|STATE' lines; {} where the tool fails."""
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    out: dict[str, str] = {}
    for line in done.stdout.splitlines() if done.returncode == 0 else []:
        job, _, state = line.partition("|")
        for one in _expand(job.strip()):
            out[one] = (state.split() or ["UNKNOWN"])[0]
    return out


def job_states(job_ids: Iterable[str]) -> dict[str, str]:
    """job id -> SLURM state ('CANCELLED by 0' -> CANCELLED), from slurmctld (squeue) while it
    holds the job, else from accounting (sacct): a job just submitted reaches slurmdbd a moment
    later, and one ended a while ago is gone from squeue. {} where neither answers."""
    ids = sorted(set(job_ids))
    if not ids:
        return {}
    out = _ask(["squeue", "-h", "-t", "all", "-o", "%i|%T", "-j", ",".join(ids)])
    if rest := [i for i in ids if i not in out]:
        out.update(_ask(["sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", ",".join(rest)]))
    return {i: out[i] for i in ids if i in out}


def job_known(job_id: str) -> bool:
    """True while slurmctld lists the job (queued, running, or recently ended); True too where
    squeue cannot answer, so that a flaky controller never fails a live job."""
    try:
        done = subprocess.run(["squeue", "-h", "-t", "all", "-o", "%i", "-j", job_id],
                              capture_output=True, text=True, timeout=30)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return True
    if done.returncode != 0:
        return "Invalid job id" not in done.stderr
    return bool(done.stdout.strip())
