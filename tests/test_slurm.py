"""`--executor slurm` against a real one-node SLURM with accounting (scripts/local_slurm.py starts
it for this module and stops it after). Run with `pytest -m slurm` as root on Debian/Ubuntu;
skipped, with the reason, where the cluster cannot start. Every test checks the run's rows: each
unit exactly once, equal to an inline run of the same study."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import submitit
from typer.testing import CliRunner

from tlbench import results
from tlbench.cli import app
from tlbench.config import load_sweep
from tlbench.study.status import run_status
from tlbench.study.sweep import run_sweep

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "sweeps" / "smoke.toml"
sys.path.insert(0, str(ROOT / "scripts"))
from local_slurm import CannotStart, LocalSlurm  # noqa: E402

pytestmark = pytest.mark.slurm
runner = CliRunner()
NOISY = {"adapt_seconds", "estimate_seconds", "train_seconds", "ms_per_step"}  # wall times
JOBS = ["executor.gpus_per_node=0", "speed.enabled=false", "grid.positions=[0.5]"]  # no GPUs here
COMPUTE = [*JOBS, "quality.enabled=false"]
QUALITY = [*JOBS, "quality.steps=2", "quality.seeds=1", "quality.init_reference=false"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSlurm]:
    try:
        with LocalSlurm.started(tmp_path_factory.mktemp("slurm")) as c:
            before = os.environ.get("SLURM_CONF")
            os.environ.update(c.env)
            yield c
            os.environ.pop("SLURM_CONF") if before is None else os.environ.update(SLURM_CONF=before)
    except CannotStart as e:
        if os.environ.get("TLBENCH_SLURM_REQUIRED"):  # CI: a cluster that cannot start is a failure
            pytest.fail(f"no local SLURM: {e}")
        pytest.skip(f"no local SLURM: {e}")
    submitit.SlurmJob.watcher.clear()


def _rows(run_dir: Path) -> list[tuple]:
    return sorted(tuple(sorted((k, str(v)) for k, v in r.items() if k != "run_id"))
                  for r in results.read_rows(run_dir) if r["metric"] not in NOISY)  # fmt: skip


def _inline(tmp_path: Path, sets: list[str]) -> list[tuple]:
    res = run_sweep(load_sweep(SMOKE, sets), tmp_path / "inline", executor="inline")
    assert not res.failed, res.failed
    return _rows(res.run_dir)


def _keys_once(run_dir: Path) -> None:
    keys = [(r["model"], r["variant"], r["stage"], r["metric"], r.get("dataset"), r.get("shots"), r.get("seed"))
            for r in results.read_rows(run_dir)]  # fmt: skip
    assert len(keys) == len(set(keys)), "a row was written twice"


def _sweep(tmp_path: Path, sets: list[str]) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "tlbench",
        "sweep",
        str(SMOKE),
        "--out",
        str(tmp_path),
        "--executor",
        "slurm",
    ]
    return subprocess.Popen(cmd + [a for s in sets for a in ("--set", s)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip


def _jobs(
    tmp_path: Path, n: int, proc: subprocess.Popen, timeout_s: float = 120
) -> tuple[Path, list[dict]]:
    """Wait until the run under tmp_path recorded `n` job submissions; (run_dir, the records)."""
    deadline = time.time() + timeout_s
    while time.time() < deadline and proc.poll() is None:
        for path in tmp_path.glob("smoke/*/jobs.jsonl"):
            lines = [json.loads(x) for x in path.read_text().splitlines()]
            if len(lines) >= n:
                return path.parent, lines
        time.sleep(0.2)
    raise AssertionError(
        f"fewer than {n} jobs submitted: {proc.communicate(timeout=30)[0] if proc.poll() is not None else ''}"
    )


def _sacct_ids() -> list[str]:
    out = subprocess.run(
        ["sacct", "-n", "-X", "-P", "-a", "-o", "JobID"], capture_output=True, text=True, check=True
    )
    return out.stdout.split()


def test_jobs_a_cancelled_unit_status_and_resume(cluster: LocalSlurm, tmp_path: Path) -> None:
    """The smoke study's units as one job array; `tlbench status` shows each job's SLURM state;
    a `scancel`ed unit fails in one line while the rest complete; --resume runs only that unit."""
    sweep = _sweep(tmp_path, QUALITY)
    try:
        run_dir, jobs = _jobs(tmp_path, 4, sweep)
        victim = next(j for j in jobs if j["stage"] == "quality" and j["variant"] != "baseline")
        subprocess.run(["scancel", victim["job_id"]], check=True)
        seen: set[str] = set()
        while sweep.poll() is None:
            seen |= {u.job_state for u in run_status(run_dir).units if u.status == "running"}
            time.sleep(0.5)
        output = sweep.communicate()[0]
    finally:
        if sweep.poll() is None:
            sweep.kill()
    assert seen & {"PENDING", "RUNNING", "CANCELLED"}, seen  # sacct's state of the live jobs
    assert sweep.returncode == 1, output
    units = results.read_units(run_dir)
    failed = [k for k, u in units.items() if u["status"] == "failed"]
    assert failed == [(victim["model"], victim["variant"], "quality")]
    reason = units[failed[0]]["reason"]
    assert f"job {victim['job_id']}" in reason and "\n" not in reason, reason
    assert "no record of it (cancelled before it started?)" in reason  # scancel'd while pending
    assert "Traceback" not in output
    status = runner.invoke(app, ["status", str(run_dir)])
    assert status.exit_code == 1 and "1 failed" in status.output

    res = run_sweep(None, resume=run_dir)
    assert not res.failed, res.failed
    again = [json.loads(x) for x in (run_dir / results.JOBS).read_text().splitlines()][len(jobs) :]
    assert [(j["variant"], j["stage"]) for j in again] == [
        (victim["variant"], "quality")
    ]  # only it
    _keys_once(run_dir)
    assert _rows(run_dir) == _inline(tmp_path, QUALITY)
    assert run_status(run_dir).complete


def test_a_killed_submitter_is_resumed_by_asking_slurm(cluster: LocalSlurm, tmp_path: Path) -> None:
    """SIGKILL the sweep right after it submitted: its jobs run on; --resume asks SLURM (squeue,
    then sacct: the jobs may not have reached accounting yet), waits for them, submits nothing twice."""
    before = set(_sacct_ids())  # the earlier tests' jobs, all ended
    sweep = _sweep(tmp_path, COMPUTE)
    try:
        run_dir, jobs = _jobs(tmp_path, 2, sweep)
        sweep.kill()
        sweep.wait(timeout=30)
    finally:
        if sweep.poll() is None:
            sweep.kill()
    states = {u.job_state for u in run_status(run_dir).units}
    assert states & {"PENDING", "RUNNING"}, states  # still queued or running: nothing has come back
    events: list[str] = []
    res = run_sweep(None, resume=run_dir, progress=lambda e, **i: events.append(i.get("text", "")))
    assert not res.failed, res.failed
    assert any("waiting for 2 job(s)" in e for e in events), events
    assert len((run_dir / results.JOBS).read_text().splitlines()) == len(jobs) == 2
    assert set(_sacct_ids()) - before == {j["job_id"] for j in jobs}  # nothing submitted twice
    _keys_once(run_dir)
    assert _rows(run_dir) == _inline(tmp_path, COMPUTE)


def _restarted(job_id: str) -> bool:
    """The job was requeued and runs again (scontrol's Restarts count and state)."""
    out = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True).stdout
    return "JobState=RUNNING" in out and "Restarts=0" not in out and "Restarts=" in out


def test_preempted_and_timed_out_training_units_resume_from_their_partial_checkpoints(
    cluster: LocalSlurm, tmp_path: Path
) -> None:
    """Two training jobs. The baseline's is requeued by `scontrol requeue` (what a preemption
    does): it comes back and continues from its partial checkpoint. The other's gets USR2, the
    signal SLURM sends before a job's time limit (submitit's `--signal=USR2@90`; sent here by
    `scancel --signal`, since SLURM's own timer is minutes): it checkpoints, requeues itself and
    continues; signalled again past `max_requeues` = 1, it fails in one line. --resume finishes
    it; the rows equal the inline run's."""
    sets = [*JOBS, "compute.enabled=false", "quality.steps=300", "quality.seeds=1",
            "quality.init_reference=false", "quality.save_every_s=0", "quality.shots=[1]",
            "executor.timeout_min=10", "executor.max_requeues=1"]  # fmt: skip
    sweep = _sweep(tmp_path, sets)
    try:
        run_dir, jobs = _jobs(tmp_path, 2, sweep)
        base, other = (
            next(j for j in jobs if (j["variant"] == "baseline") == b) for b in (True, False)
        )
        import torch

        def step(variant: str) -> int:
            for partial in (run_dir / "checkpoints").glob(f"*-{variant}-*.partial"):
                try:
                    return int(torch.load(partial, weights_only=False)["step"])
                except Exception:  # replaced while read
                    return 0
            return 0

        deadline = time.time() + 240
        while min(step("baseline"), step(other["variant"])) < 20 and time.time() < deadline:
            assert sweep.poll() is None, sweep.communicate()[0]
            time.sleep(0.2)
        before = {v: step(v) for v in ("baseline", other["variant"])}
        assert min(before.values()) >= 20, f"training never got going: {before}"
        subprocess.run(["scontrol", "requeue", base["job_id"]], check=True)
        subprocess.run(["scancel", "--signal=USR2", other["job_id"]], check=True)
        after: dict[str, list[int]] = {v: [] for v in before}
        back_at, signalled_again = None, False
        while sweep.poll() is None:
            for v in before:
                if (s := step(v)) and s != before[v]:
                    after[v].append(s)
            if back_at is None and _restarted(other["job_id"]):  # requeued, running again
                back_at = step(other["variant"])
            elif back_at is not None and not signalled_again and step(other["variant"]) > back_at:
                subprocess.run(["scancel", "--signal=USR2", other["job_id"]], check=True)
                signalled_again = True  # training again: past max_requeues now
            time.sleep(0.1)
        output = sweep.communicate()[0]
    finally:
        if sweep.poll() is None:
            sweep.kill()
    assert signalled_again and sweep.returncode == 1, output
    for v in before:  # each came back and continued, not started over
        assert after[v] and min(after[v]) > before[v], (v, before, after)
    units = results.read_units(run_dir)
    assert units[base["model"], "baseline", "quality"]["status"] == "done"
    failed = units[other["model"], other["variant"], "quality"]
    assert failed["status"] == "failed" and "timed-out too many times" in failed["reason"], failed
    assert "\n" not in failed["reason"]
    for job in (base, other):
        history = subprocess.run(["sacct", "-n", "-X", "-P", "-D", "-o", "JobID,State", "-j", job["job_id"]],
                                 capture_output=True, text=True, check=True).stdout  # fmt: skip
        assert "REQUEUED" in history, history

    res = run_sweep(None, resume=run_dir)
    assert not res.failed, res.failed
    _keys_once(run_dir)
    assert _rows(run_dir) == _inline(tmp_path, sets)


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ('executor.partition="nope"', "Invalid partition name specified"),
        ("executor.gpus_per_node=1", "Invalid generic resource (gres) specification"),
        ('executor.account="nobody"', "Invalid account or account/partition combination specified"),
    ],
)
def test_settings_the_cluster_refuses_are_one_line_before_any_submission(
    cluster: LocalSlurm, tmp_path: Path, setting: str, message: str
) -> None:
    before = _sacct_ids()
    sets = (
        [*COMPUTE, setting]
        if "gpus" not in setting
        else [s for s in COMPUTE if "gpus" not in s] + [setting]
    )
    result = runner.invoke(app, ["sweep", str(SMOKE), "--out", str(tmp_path), "--executor", "slurm",
                                 *[a for s in sets for a in ("--set", s)]])  # fmt: skip
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    (line,) = result.output.strip().splitlines()
    assert line.startswith("error: slurm: the cluster refuses these jobs") and message in line, line
    assert (
        not (tmp_path / "smoke").exists() and _sacct_ids() == before
    )  # nothing made, nothing submitted
