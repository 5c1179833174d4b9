"""The HTML report without a browser: what the page embeds (read back from its JSON), offline
self-containment, several runs with compare's verdict, empty and compute-only runs, failed units
with their log tails, a damaged rows file (one line, exit 2, nothing written) and the sweep hook.
The page's behaviour in a real browser is tests/test_report_browser.py."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
from committed import committed_run
from typer.testing import CliRunner

from tlbench import results
from tlbench.cli import app
from tlbench.report.charts import marks
from tlbench.report.html import write_report
from tlbench.report.recommend import Budget, recommend

DEFAULT = committed_run("default")
GPU = committed_run("gpu_h200/default")
runner = CliRunner()


def embedded(path: Path) -> dict:
    """The page's data, as its script parses it."""
    text = path.read_text(encoding="utf-8")
    m = re.search(r'<script id="tlbench-data" type="application/json">(.*?)</script>', text, re.S)
    assert m, "no embedded data"
    return json.loads(m.group(1).replace("<\\/", "</"))


def variant(
    name: str, position: float | None = None, block: int | None = None, tokens: int | None = None
):
    return SimpleNamespace(model="vit_cpu6", name=name, position=position, block_index=block,
                           num_tokens=tokens, method="tokenlearner")  # fmt: skip


def make_run(tmp_path: Path, rows: bool = True) -> Path:
    """A run of two variants with compute rows only, via the results writers."""
    run = tmp_path / "toy" / "20260101-000000-cpu"
    manifest = json.loads((DEFAULT / results.MANIFEST).read_text())
    manifest["config"]["speed"]["enabled"] = manifest["config"]["quality"]["enabled"] = False
    manifest["variants"] = manifest["variants"][:2]
    results.write_manifest(run, manifest)
    if rows:
        for v, g in ((variant("baseline"), 0.0098), (variant("p0.5-s8", 0.5, 3, 8), 0.0057)):
            results.append_rows(run, [results.make_row(v, "compute", "gflops", g)])
            results.record_unit(run, v.model, v.name, "compute", "done", rows=1)
    return run


def test_the_page_embeds_the_run_and_fetches_nothing(tmp_path: Path) -> None:
    out = write_report([DEFAULT], tmp_path / "r.html")
    text = out.read_text(encoding="utf-8")
    # offline: no script, style, image or link loaded from elsewhere
    assert not re.search(r'(src|href)="(https?:)?//', text)
    assert "window.Chart" in text and "TLBENCH" in text  # Chart.js and the page's code, inline
    run = embedded(out)["runs"][0]
    assert run["run_id"] == DEFAULT.name and run["manifest"]["git_sha"]
    names = {v["variant"] for v in run["variants"]}
    assert names == set(results.load_results(DEFAULT)["variant"])
    # the headline chart: every variant with GFLOPs and accuracy is one mark, per probe set
    head = run["charts"][0]
    assert head["figure"] == "accuracy_vs_gflops" and marks(head) == len(names)
    figures = {c["figure"] for c in run["charts"]}
    assert figures == {
        "accuracy_vs_gflops",
        "accuracy_vs_position",
        "gflops_vs_position",
        "speedup_vs_flops",
    }
    speed = next(c for c in run["charts"] if c["figure"] == "speedup_vs_flops")
    assert speed["x"]["log"] and speed["y"]["log"]  # log axes, as the PNG
    assert len(run["maps"]) == 4 and all(
        m["src"].startswith("data:image/png;base64,") for m in run["maps"]
    )
    assert len(run["rows"]["rows"]) == len(results.read_rows(DEFAULT))


def test_the_pareto_front_in_words_is_recommends(tmp_path: Path) -> None:
    run = embedded(write_report([DEFAULT], tmp_path / "r.html"))["runs"][0]
    ranked = recommend(DEFAULT, Budget(max_gflops=1e9))  # every variant fits: the front of all
    front = set(ranked.loc[ranked["pareto"] == True, "variant"])  # noqa: E712
    assert {run["variants"][i]["variant"] for i in run["front"]} == front


def test_several_runs_carry_compares_verdict(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["report", str(DEFAULT), str(GPU), "--out", str(tmp_path / "c.html")]
    )
    assert result.exit_code == 0, result.output
    data = embedded(tmp_path / "c.html")
    assert [r["run_id"] for r in data["runs"]] == [DEFAULT.name, GPU.name]
    (c,) = data["compare"]
    assert c["reference"] == str(DEFAULT) and c["passed"] is True and c["checks"] > 0


def test_an_empty_run_renders_and_says_what_is_missing(tmp_path: Path) -> None:
    run = make_run(tmp_path, rows=False)
    result = runner.invoke(app, ["report", str(run)])
    assert result.exit_code == 0, result.output
    data = embedded(run / "report.html")["runs"][0]
    assert data["variants"] == [] and data["charts"] == []
    assert any("no result rows yet" in m for m in data["missing"])
    # a unit that failed before any row: the variant is listed, with the ledger's reason
    results.record_unit(run, "vit_cpu6", "baseline", "compute", "failed", reason="X: boom")
    (v,) = embedded(write_report([run]))["runs"][0]["variants"]
    assert v["every_acc"] == [] and v["why"]["gflops"] == "no gflops (compute failed: X: boom)"


def test_a_compute_only_run_says_what_is_missing(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    data = embedded(write_report([run]))["runs"][0]
    assert [c["figure"] for c in data["charts"]] == ["gflops_vs_position"]
    assert data["front"] == [] and data["has"] == {
        "accuracy": False,
        "gflops": True,
        "speedup": False,
    }
    assert any("No quality rows" in m for m in data["missing"])
    assert any("No speed rows" in m for m in data["missing"])


def test_failed_units_show_their_reason_and_log_tail(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    log = run / "logs" / "speed-p0.5-s8.log"
    log.parent.mkdir()
    log.write_text("".join(f"frame {i}\n" for i in range(40)) + "RuntimeError: out of memory\n")
    results.record_unit(run, "vit_cpu6", "p0.5-s8", "speed", "failed", error="RuntimeError",
                        reason="RuntimeError: out of memory", log="logs/speed-p0.5-s8.log")  # fmt: skip
    results.record_unit(run, "vit_cpu6", "baseline", "quality", "skipped", reason="no data")
    data = embedded(write_report([run]))["runs"][0]
    failed, skipped = data["not_done"]
    assert failed["status"] == "failed" and failed["reason"] == "RuntimeError: out of memory"
    assert failed["tail"].splitlines()[-1] == "RuntimeError: out of memory"
    assert len(failed["tail"].splitlines()) == 20 and "frame 39" in failed["tail"]
    assert skipped == {**skipped, "status": "skipped", "reason": "no data", "tail": ""}
    assert data["variants"][1]["why"]["speedup"].startswith("no speedup (speed failed")


def test_a_damaged_rows_file_is_one_line_and_exit_2(tmp_path: Path) -> None:
    run = tmp_path / DEFAULT.name
    shutil.copytree(DEFAULT, run, ignore=shutil.ignore_patterns("figures", "report.html"))
    lines = (run / results.ROWS).read_text().splitlines(keepends=True)
    lines[3] = '{"model": "vit_cpu6", "value": \n'
    (run / results.ROWS).write_text("".join(lines))
    result = runner.invoke(app, ["report", str(run)])
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and "rows.jsonl:4: corrupt row" in result.output
    assert not (run / "report.html").exists()


def test_not_a_run_is_one_line(tmp_path: Path) -> None:
    result = runner.invoke(app, ["report", str(tmp_path / "nowhere")])
    assert result.exit_code == 2 and "no such run directory" in result.output


def test_a_report_error_in_a_sweep_is_its_own_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """sweep.draw writes report.html; when the report fails the run goes on, and says so."""
    from tlbench.study import sweep

    run = make_run(tmp_path)
    book = sweep.Book(run, lambda *a, **k: None)
    sweep.draw(run, book)
    assert (run / "report.html").is_file() and not book.failed

    def broken(*args, **kwargs):
        raise ValueError("no page today")

    monkeypatch.setattr(sweep, "write_report", broken)
    figures = sweep.draw(run, book)
    assert figures and book.failed == [
        f"report: ValueError: no page today (traceback: {run / 'logs' / 'report.log'})"
    ]
    assert "no page today" in (run / "logs" / "report.log").read_text()
