"""recommend on the committed methods run: each budget kind, the Pareto marks, 'not measured',
JSON output and one-line errors. Expectations are computed here from rows.jsonl directly."""

from __future__ import annotations

import json
import shutil
from collections import defaultdict
from pathlib import Path
from statistics import mean

import pytest
from committed import committed_run
from typer.testing import CliRunner

from tlbench.cli import app
from tlbench.report.recommend import Budget, recommend

ROOT = Path(__file__).resolve().parents[1] / "results"
runner = CliRunner()


def only_run(name: str) -> Path:
    return committed_run(name)


RUN = only_run("methods_cpu")


def raw(run: Path) -> dict[str, dict]:
    """variant -> gflops, speedup, ci_low, acc[dataset] (5-shot mean over seeds, %), from the rows."""
    out: dict[str, dict] = defaultdict(dict)
    accs: dict[tuple[str, str], list[float]] = defaultdict(list)
    for line in (run / "rows.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r["metric"] == "gflops":
            out[r["variant"]]["gflops"] = r["value"]
        elif r["metric"] == "speedup":
            out[r["variant"]]["speedup"], out[r["variant"]]["ci_low"] = r["value"], r["ci_low"]
        elif r["metric"] == "fewshot_acc" and r["stage"] == "quality" and r["shots"] == 5:
            accs[r["variant"], r["dataset"]].append(r["value"] * 100)
    for (v, ds), values in accs.items():
        out[v].setdefault("acc", {})[ds] = mean(values)
    return dict(out)


RAW = raw(RUN)


def drop(v: str) -> float:
    return max(RAW["baseline"]["acc"][ds] - a for ds, a in RAW[v]["acc"].items())


def fitting(frame) -> set[str]:
    return set(frame.loc[frame["verdict"] == "fits", "variant"])


def test_max_gflops() -> None:
    limit = sorted(r["gflops"] for r in RAW.values())[8]  # nine variants at or below
    assert fitting(recommend(RUN, Budget(max_gflops=limit))) == {v for v, r in RAW.items() if r["gflops"] <= limit}


def test_min_speedup_is_met_by_the_lower_bound() -> None:
    widest = max(RAW.values(), key=lambda r: r["speedup"] - r["ci_low"])
    limit = (widest["speedup"] + widest["ci_low"]) / 2  # inside that variant's interval
    frame = recommend(RUN, Budget(min_speedup=limit))
    expected = {v for v, r in RAW.items() if r["ci_low"] >= limit}
    assert fitting(frame) == expected
    # a variant whose point estimate passes but whose interval does not is over budget
    between = {v for v, r in RAW.items() if r["speedup"] >= limit > r["ci_low"]}
    assert between and not between & expected
    assert set(frame.loc[frame["variant"].isin(between), "verdict"]) == {"over budget"}


def test_max_accuracy_drop_on_the_worst_probe_set() -> None:
    frame = recommend(RUN, Budget(max_accuracy_drop=2.2))
    assert fitting(frame) == {v for v in RAW if drop(v) <= 2.2}
    assert "baseline" in fitting(frame)
    one = recommend(RUN, Budget(max_accuracy_drop=2.2), datasets=["mnist"])
    assert fitting(one) == {v for v in RAW if RAW["baseline"]["acc"]["mnist"] - RAW[v]["acc"]["mnist"] <= 2.2}


def test_combined_budget_ranked_with_pareto_front() -> None:
    frame = recommend(RUN, Budget(max_gflops=0.005, min_speedup=1.3))
    fit = {v for v, r in RAW.items() if r["gflops"] <= 0.005 and r["ci_low"] >= 1.3}
    assert fitting(frame) == fit
    acc = {v: mean(RAW[v]["acc"].values()) for v in fit}
    front = {v for v in fit if not any(RAW[w]["gflops"] <= RAW[v]["gflops"] and acc[w] >= acc[v]
                                       and (RAW[w]["gflops"] < RAW[v]["gflops"] or acc[w] > acc[v])
                                       for w in fit if w != v)}  # fmt: skip
    assert set(frame.loc[frame["pareto"] == True, "variant"]) == front  # noqa: E712
    assert frame.loc[frame["verdict"] != "fits", "pareto"].isna().all()
    ranked = frame[frame["verdict"] == "fits"]
    assert list(ranked["rank"]) == list(range(1, len(fit) + 1))
    assert set(ranked["variant"][: len(front)]) == front  # the front first, best accuracy first
    assert list(ranked["variant"][: len(front)]) == sorted(front, key=lambda v: -acc[v])


def test_not_measured_is_listed_with_the_ledger_reason(tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(RUN, run)
    rows = [json.loads(x) for x in (run / "rows.jsonl").read_text().splitlines()]
    gone = "pool-p0.25-s8"
    keep = [r for r in rows if not (r["variant"] == gone and r["stage"] == "speed")]
    (run / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in keep))
    with (run / "units.jsonl").open("a") as f:
        f.write(json.dumps({"model": rows[0]["model"], "variant": gone, "stage": "speed", "status": "failed",
                            "error": "RuntimeError", "reason": "RuntimeError: out of memory",
                            "log": f"logs/speed-{gone}.log"}) + "\n")  # fmt: skip
    frame = recommend(run, Budget(min_speedup=1.0)).set_index("variant")
    assert frame.at[gone, "verdict"] == "not measured"
    assert "speed failed" in frame.at[gone, "reason"] and "out of memory" in frame.at[gone, "reason"]
    assert frame.at[gone, "pareto"] is None
    # a budget that does not need speed still judges it
    assert recommend(run, Budget(max_gflops=1.0)).set_index("variant").at[gone, "verdict"] == "fits"
    table = runner.invoke(app, ["recommend", str(run), "--min-speedup", "1.0"])
    assert table.exit_code == 0 and gone in table.output and "not measured" in table.output


def test_json_output() -> None:
    result = runner.invoke(app, ["recommend", str(RUN), "--max-gflops", "0.005", "--format", "json"])
    assert result.exit_code == 0, result.output
    records = json.loads(result.output)
    assert len(records) == len(RAW)
    fits = [r for r in records if r["verdict"] == "fits"]
    assert {r["variant"] for r in fits} == {v for v, r in RAW.items() if r["gflops"] <= 0.005}
    assert [r["rank"] for r in fits] == list(range(1, len(fits) + 1))
    keys = {"variant", "method", "position", "num_tokens", "gflops", "speedup", "speedup_low", "speedup_high",
            "acc_digits", "acc_mnist", "acc_mean", "acc_drop", "pareto", "verdict", "reason"}  # fmt: skip
    assert keys <= set(records[0])
    assert any(r["pareto"] is True for r in fits) and all(r["pareto"] is None for r in records if r not in fits)
    csv = runner.invoke(app, ["recommend", str(RUN), "--max-gflops", "0.005", "--format", "csv"])
    assert csv.exit_code == 0 and csv.output.startswith("rank,variant,")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["/nonexistent/run", "--max-gflops", "1"], "no such run directory"),
        ([str(ROOT), "--max-gflops", "1"], "not a tlbench run"),
        ([str(RUN)], "at least one budget"),
        ([str(only_run("vit_b16_methods_compute")), "--min-speedup", "1.2"], "needs speedup rows"),
        ([str(only_run("vit_b16_methods_compute")), "--max-accuracy-drop", "1"], "needs fewshot_acc rows"),
        ([str(RUN), "--max-accuracy-drop", "1", "--dataset", "cifar10"], "the run probed digits, mnist"),
        ([str(RUN), "--max-accuracy-drop", "1", "--shots", "3"], "the run measured 1, 5, 10, 25 shots"),
        ([str(RUN), "--max-gflops", "-1"], "--max-gflops must be a number in [0, 1,000,000,000], got -1"),
    ],
)
def test_bad_input_is_one_line_exit_2(args: list[str], message: str) -> None:
    result = runner.invoke(app, ["recommend", *args])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and message in result.output
