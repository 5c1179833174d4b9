"""Executors: jobs give the inline rows, write shards that fold exactly once, survive a killed job,
end with the sweep that started them (local), and under SLURM go out as job arrays (a fake
`sbatch` on PATH records what was submitted; tests/test_slurm.py runs them on a real cluster)."""

from __future__ import annotations

import json
import os
import pickle
import signal
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
from tlbench.config import EXECUTORS as CONFIG_EXECUTORS
from tlbench.config import load_sweep
from tlbench.study import shards
from tlbench.study.executors import EXECUTORS, UnitJob, phases, submit, waves
from tlbench.study.status import run_status
from tlbench.study.sweep import by_model, expand, run_sweep

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "sweeps" / "smoke.toml"
runner = CliRunner()
NOISY = {"adapt_seconds", "estimate_seconds"}  # wall times: never equal between two runs
# compute only: the fast comparisons; quality: the slow ones (speed values are timings)
COMPUTE = ["speed.enabled=false", "quality.enabled=false", "grid.positions=[0.5]"]
QUALITY = ["speed.enabled=false", "grid.positions=[0.5]", "quality.steps=2", "quality.seeds=1",
           "quality.init_reference=false"]  # fmt: skip


def _rows(run_dir: Path) -> list[tuple]:
    """The run's rows without run_id and wall times, sorted: what two executors must agree on."""
    return sorted(tuple(sorted((k, str(v)) for k, v in r.items() if k != "run_id"))
                  for r in results.read_rows(run_dir) if r["metric"] not in NOISY)  # fmt: skip


def _run(tmp_path: Path, overrides: list[str], kind: str) -> Path:
    res = run_sweep(load_sweep(SMOKE, overrides), tmp_path / kind, executor=kind)
    assert not res.failed, res.failed
    return res.run_dir


def _keys(run_dir: Path) -> list[tuple]:
    return [(r["model"], r["variant"], r["stage"], r["metric"], r.get("dataset"), r.get("shots"), r.get("seed"))
            for r in results.read_rows(run_dir)]  # fmt: skip


def test_debug_executor_gives_the_inline_rows(tmp_path: Path) -> None:
    inline, debug = _run(tmp_path, COMPUTE, "inline"), _run(tmp_path, COMPUTE, "debug")
    assert len(_rows(inline)) == 6 and _rows(debug) == _rows(inline)
    assert not list((debug / shards.SHARDS).glob("*.json"))  # every shard folded
    assert {u["status"] for u in results.read_units(debug).values()} == {"done"}
    jobs = [json.loads(line) for line in (debug / results.JOBS).read_text().splitlines()]
    assert len(jobs) == 2 and {j["stage"] for j in jobs} == {"compute"}


ON_THIS_MACHINE = sorted(k for k, b in EXECUTORS.items() if not b.scheduler)  # slurm: tests/test_slurm.py


def test_every_executor_kind_has_a_backend() -> None:
    """config.EXECUTORS (what a sweep file may say) = inline + the table's kinds."""
    assert set(CONFIG_EXECUTORS) == {"inline", *EXECUTORS}


@pytest.mark.slow
@pytest.mark.parametrize("kind", ON_THIS_MACHINE)
def test_quality_under_an_executor_gives_the_inline_rows(tmp_path: Path, kind: str) -> None:
    inline, other = _run(tmp_path, QUALITY, "inline"), _run(tmp_path, QUALITY, kind)
    assert any(r[0] == ("dataset", "digits") or ("metric", "fewshot_acc") in r for r in _rows(inline))
    assert _rows(other) == _rows(inline)  # training and probing are bit-identical in a job


def test_speed_units_of_a_model_are_one_job() -> None:
    cfg = load_sweep(SMOKE)
    variants = expand(cfg)
    todo = {"compute": variants, "speed": variants[2:], "quality": variants}
    (phase,) = phases(cfg, by_model(cfg), todo, "run")
    speed = [j for j in phase if j.stage == "speed"]
    assert len(speed) == 1 and speed[0].todo == tuple(variants[2:])
    assert speed[0].variants[0].is_baseline  # the baseline is timed with them, for the speedup
    assert len(phase) == 1 + 2 * len(variants)  # every other unit is a job of its own


def test_adapted_reducers_wait_for_the_trained_baseline() -> None:
    cfg = load_sweep(SMOKE, ['quality.adapt="none"'])
    variants = expand(cfg)
    first, later = phases(cfg, by_model(cfg), {"quality": variants}, "run")
    assert [j.todo[0].name for j in first] == ["baseline"]
    assert [j.todo[0].name for j in later] == [v.name for v in variants[1:]]


def _fake_run(tmp_path: Path) -> Path:
    run_dir = tmp_path / "run"
    results.write_manifest(run_dir, {"config": {}})
    return run_dir


def _row(variant: str, metric: str, value: float) -> dict:
    return {"model": "tiny", "variant": variant, "stage": "compute", "metric": metric, "value": value,
            "unit": results.METRICS[metric]}  # fmt: skip


def test_folding_is_idempotent_and_never_duplicates_a_row(tmp_path: Path) -> None:
    run_dir = _fake_run(tmp_path)
    shards.write_shard(run_dir, "tiny", "baseline", "compute", "done", [_row("baseline", "gflops", 1.5)], rows=1)
    shards.write_shard(run_dir, "tiny", "p0-s4", "compute", "failed", error="RuntimeError",
                       reason="RuntimeError: boom", log="logs/x.log")  # fmt: skip
    assert shards.fold(run_dir) == 2
    state = {name: (run_dir / name).read_bytes() for name in (results.ROWS, results.UNITS, results.CSV)}
    assert shards.fold(run_dir) == 0  # twice: no change
    assert {name: (run_dir / name).read_bytes() for name in state} == state
    # a second job for a unit already done (a resubmission raced the first): nothing is added
    shards.write_shard(run_dir, "tiny", "baseline", "compute", "done", [_row("baseline", "gflops", 1.5)], rows=1)
    assert shards.fold(run_dir) == 0 and not list((run_dir / shards.SHARDS).iterdir())
    assert {name: (run_dir / name).read_bytes() for name in state} == state
    units = results.read_units(run_dir)
    assert units["tiny", "baseline", "compute"]["status"] == "done"
    assert units["tiny", "p0-s4", "compute"]["reason"] == "RuntimeError: boom"
    assert [r["variant"] for r in results.read_rows(run_dir)] == ["baseline"]


def test_a_fold_cut_short_is_redone_without_duplicates(tmp_path: Path) -> None:
    """Killed after the rows, before the ledger line: the shard is still there; the rows go."""
    run_dir = _fake_run(tmp_path)
    rows = [_row("p0-s4", "gflops", 0.7), _row("p0-s4", "params_m", 0.1)]
    shards.write_shard(run_dir, "tiny", "p0-s4", "compute", "done", rows, rows=2)
    results.append_rows(run_dir, rows)  # what the killed fold had written
    assert shards.fold(run_dir) == 1
    assert [r["metric"] for r in results.read_rows(run_dir)] == ["gflops", "params_m"]


def test_status_shows_unfolded_shards_as_done_and_submitted_units_as_running(tmp_path: Path) -> None:
    run_dir = _run(tmp_path, COMPUTE, "inline")
    ledger = run_dir / results.UNITS
    third, fourth = (json.loads(line) for line in ledger.read_text().splitlines())
    ledger.write_text("")  # neither unit recorded
    shards.write_shard(run_dir, third["model"], third["variant"], "compute", "done", [], rows=3)
    (run_dir / results.JOBS).write_text(json.dumps({
        "job_id": "4242_3", "executor": "slurm", "stage": "compute", "model": fourth["model"],
        "variant": fourth["variant"], "submitted": "2999-01-01T00:00:00+0000"}) + "\n")  # fmt: skip
    by = {u.variant: u for u in run_status(run_dir).units}
    assert by[third["variant"]].status == "done" and by[third["variant"]].rows == 3
    assert (by[fourth["variant"]].status, by[fourth["variant"]].job) == ("running", "4242_3")
    result = runner.invoke(app, ["status", str(run_dir)])
    assert result.exit_code == 1 and "job 4242_3" in result.output and "1 running" in result.output


FAKE_SBATCH = """#!/bin/sh
# records each submission (arguments, then the script) and answers like sbatch
n=$(ls "{log}" 2>/dev/null | wc -l)
mkdir -p "{log}"
cp "$1" "{log}/$n.sh"
echo "Submitted batch job $((4242 + n))"
"""


SRUN = """#!/bin/sh
# runs the command after srun's options, as srun does on one node
while [ $# -gt 0 ]; do case "$1" in --unbuffered) shift;; --output|--error) shift 2;; *) break;; esac; done
exec "$@"
"""


@pytest.fixture
def fake_slurm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """`sbatch` and `srun` on PATH; returns the folder where each submitted script lands."""
    bin_dir, log = tmp_path / "bin", tmp_path / "sbatch"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(FAKE_SBATCH.format(log=log))
    (bin_dir / "srun").write_text(SRUN)
    for tool in ("sbatch", "srun"):
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    yield log
    submitit.SlurmJob.watcher.clear()  # submitit caches job states across tests


def test_slurm_submits_job_arrays_and_the_job_command_runs_the_unit(
    tmp_path: Path, fake_slurm: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = load_sweep(SMOKE, ['executor.kind="slurm"', 'executor.partition="gpu"', "executor.gpus_per_node=2",
                             "executor.cpus_per_task=8", "executor.timeout_min=90", 'executor.account="vision"',
                             "quality.enabled=false"])  # fmt: skip
    run_dir = tmp_path / "run"
    results.write_manifest(run_dir, {"config": {}})
    variants = expand(cfg)
    (phase,) = phases(cfg, by_model(cfg), {"compute": variants, "speed": variants}, str(run_dir))
    submitted = submit(cfg.executor, phase, run_dir)

    arrays = [fake_slurm / "0.sh", fake_slurm / "1.sh"]
    units, speed = (p.read_text() for p in arrays)  # the compute array, then the exclusive speed job
    for script in (units, speed):
        assert "#SBATCH --partition=gpu" in script and "#SBATCH --gpus-per-node=2" in script
        assert "#SBATCH --cpus-per-task=8" in script and "#SBATCH --time=90" in script
        assert "#SBATCH --account=vision" in script and "-m submitit.core._submit" in script
    assert "#SBATCH --array=0-3%4" in units and "--exclusive" not in units  # one task per unit
    assert "#SBATCH --exclusive" in speed and "--array" not in speed  # all speed units: one job
    jobs = [json.loads(line) for line in (run_dir / results.JOBS).read_text().splitlines()]
    assert {j["job_id"] for j in jobs if j["stage"] == "compute"} == {f"4242_{i}" for i in range(4)}
    assert {j["job_id"] for j in jobs if j["stage"] == "speed"} == {"4243"}

    # what SLURM would run for array task 1: the pickled UnitJob of the second variant
    from submitit.core.submission import process_job

    for key, value in {"SUBMITIT_EXECUTOR": "slurm", "SLURM_JOB_ID": "4250", "SLURM_ARRAY_JOB_ID": "4242",
                       "SLURM_ARRAY_TASK_ID": "1", "SLURM_PROCID": "0", "SLURM_LOCALID": "0",
                       "SLURM_NTASKS": "1", "SLURM_NODEID": "0", "SLURM_JOB_NUM_NODES": "1",
                       "SLURM_JOB_NODELIST": "node1"}.items():  # fmt: skip
        monkeypatch.setenv(key, value)
    job = submitted[1].job
    assert isinstance(job, UnitJob) and (job.stage, job.todo) == ("compute", (variants[1],))
    process_job(run_dir / "submitit")
    (shard,) = shards.read_shards(run_dir)
    assert shard[1]["unit"]["variant"] == variants[1].name and len(shard[1]["rows"]) == 3


def test_a_preempted_unit_requeues_itself() -> None:
    cfg = load_sweep(SMOKE)
    v = expand(cfg)[1]
    job = UnitJob(cfg, "run", "quality", [v], [v])
    again = job.checkpoint()  # what submitit calls on SLURM's preemption or time-limit signal
    assert again.function is job and not again.args
    copy = pickle.loads(pickle.dumps(again.function))
    assert (copy.stage, copy.todo, copy.config) == ("quality", (v,), cfg)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--executor", "cloud"], "executor.kind must be one of inline, local, slurm, debug"),
        (["--set", 'executor.gpus_per_node="two"'], "executor.gpus_per_node must be an integer"),
        (["--set", "executor.partition=3"], "executor.partition must be a string"),
        (["--set", "executor.workers=0"], "executor.workers must be an integer in [1, 1024], got 0"),
    ],
)
def test_bad_executor_settings_are_one_line(args: list[str], message: str, tmp_path: Path) -> None:
    result = runner.invoke(app, ["sweep", str(SMOKE), "--out", str(tmp_path), *args])
    assert result.exit_code == 2 and message in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


def test_the_slurm_example_parses() -> None:
    cfg = load_sweep(ROOT / "sweeps" / "slurm_example.toml")
    ex = cfg.executor
    assert ex.kind == "slurm" and ex.partition and ex.gpus_per_node == 1 and ex.exclusive


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_killed_local_job_fails_alone_and_resume_completes_every_row_once(tmp_path: Path) -> None:
    """SIGKILL one unit's process mid-training: the other unit's rows are kept, the sweep says
    which failed, and --resume runs only that one; every row is there exactly once."""
    sets = [*QUALITY, "quality.steps=200", "executor.workers=2"]
    cmd = [sys.executable, "-m", "tlbench", "sweep", str(SMOKE), "--out", str(tmp_path), "--executor", "local"]
    cmd += [a for s in sets for a in ("--set", s)]
    sweep = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline, victim = time.time() + 120, None
    while victim is None and time.time() < deadline and sweep.poll() is None:
        time.sleep(0.2)
        for jobs in tmp_path.glob("smoke/*/jobs.jsonl"):
            for line in jobs.read_text().splitlines():
                job = json.loads(line)
                log = jobs.parent / "submitit" / f"{job['job_id']}_0_log.out"
                if job["variant"] == "p0.5-s4" and log.is_file() and "quality p0.5-s4" in log.read_text():
                    victim = _children(int(job["job_id"]))  # the controller's task: the unit itself
    assert victim, "the unit never started training"
    for pid in victim:
        os.kill(pid, signal.SIGKILL)
    output = sweep.communicate(timeout=300)[0]
    assert sweep.returncode == 1, output
    (run_dir,) = (tmp_path / "smoke").iterdir()
    units = results.read_units(run_dir)
    assert units["tiny", "baseline", "quality"]["status"] == "done"  # the other unit's rows are kept
    assert units["tiny", "p0.5-s4", "quality"]["error"] == "JobDied"
    kept = [r for r in _keys(run_dir) if r[1] == "baseline"]

    result = runner.invoke(app, ["sweep", "--resume", str(run_dir)])
    assert result.exit_code == 0, result.output
    keys = _keys(run_dir)
    assert len(keys) == len(set(keys)) and [r for r in keys if r[1] == "baseline"] == kept
    assert {r[1] for r in keys} == {"baseline", "p0.5-s4"}
    assert run_status(run_dir).complete


def test_the_cluster_docs_show_the_committed_slurm_example() -> None:
    text = (ROOT / "docs" / "cluster.md").read_text()
    section = text[text.index("# Run a study on a cluster"):]
    block = section[section.index("```toml\n") + 8 : section.index("```", section.index("```toml\n") + 8)]
    assert block == (ROOT / "sweeps" / "slurm_example.toml").read_text()


def test_local_waves_are_bounded_and_a_speed_job_runs_alone() -> None:
    cfg = load_sweep(SMOKE, ['executor.kind="local"', "executor.workers=3"])
    variants = expand(cfg)
    (phase,) = phases(cfg, by_model(cfg), dict.fromkeys(("compute", "speed", "quality"), variants), "run")
    got = waves(cfg.executor, phase)
    assert [[j.stage for j in w] for w in got][0] == ["speed"]
    assert [len(w) for w in got] == [1, 3, 3, 2] and sum(got, []).count(phase[0]) == 1
    assert waves(load_sweep(SMOKE, ['executor.kind="slurm"']).executor, phase) == [phase]


def test_slurm_without_slurm_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch here
    result = runner.invoke(app, ["sweep", str(SMOKE), "--out", str(tmp_path), "--executor", "slurm"])
    assert result.exit_code == 2 and "sbatch/srun are not on PATH" in result.output
    assert not (tmp_path / "smoke").exists()  # refused before any work


def _tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += _children(p)
    return out


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
def test_local_jobs_end_with_the_sweep_that_started_them(tmp_path: Path, sig: signal.Signals) -> None:
    """Killed while its jobs train (SIGINT as a terminal's Ctrl-C sends it: to the whole process
    group), the sweep leaves no job process behind, and prints no traceback."""
    sets = [*QUALITY, "quality.steps=100000", "quality.budget_s=100000", "executor.workers=2"]
    cmd = [sys.executable, "-m", "tlbench", "sweep", str(SMOKE), "--out", str(tmp_path), "--executor", "local"]
    cmd += [a for s in sets for a in ("--set", s)]
    sweep = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline, pids = time.time() + 300, []
        while time.time() < deadline and sweep.poll() is None and len(pids) < 4:
            time.sleep(0.2)
            for jobs in tmp_path.glob("smoke/*/jobs.jsonl"):
                lines = [json.loads(line) for line in jobs.read_text().splitlines()]
                ids = {j["job_id"] for j in lines if j["stage"] == "quality"}
                logs = [jobs.parent / "submitit" / f"{i}_0_log.out" for i in ids]
                if len(ids) == 2 and all(log.is_file() and "quality " in log.read_text() for log in logs):
                    pids = [p for i in ids for p in _tree(int(i))]  # 2 controllers, 2 units training
        assert len(pids) >= 4, "the jobs never started training"
        if sig == signal.SIGINT:
            os.killpg(sweep.pid, sig)
        else:
            sweep.send_signal(sig)
        output = sweep.communicate(timeout=60)[0]
    finally:
        if sweep.poll() is None:  # the test failed: take the whole group down
            os.killpg(sweep.pid, signal.SIGKILL)
    deadline = time.time() + 15
    while not all(_gone(p) for p in pids) and time.time() < deadline:
        time.sleep(0.2)
    assert [p for p in pids if not _gone(p)] == [], "job processes outlived the sweep"
    if sig != signal.SIGKILL:
        assert sweep.returncode == 130 and "Traceback" not in output, output
        assert "interrupted: finished units are kept" in output
