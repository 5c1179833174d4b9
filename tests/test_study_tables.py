"""The docs' study tables (tlbench.report.study_tables) read a run's rows and compute only means:
accuracy per probe set, teacher agreement and cosine, and the measured speedup with its interval."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from tlbench.report.study_tables import main, markdown, variant_table
from tlbench.results import to_frame


def rows() -> pd.DataFrame:
    out = []
    for variant, method, p, s, gflops in (("baseline", None, None, None, 2.0),
                                          ("pool-p0.5-s8", "pool", 0.5, 8, 1.0),
                                          ("topk-p0.5-s8", "topk", 0.5, 8, 1.2)):  # fmt: skip
        key = dict(model="m", variant=variant, method=method, position=p, num_tokens=s)
        out.append(dict(key, stage="compute", metric="gflops", value=gflops, unit="GFLOPs"))
        for seed, acc in enumerate((0.6, 0.8)):
            out.append(dict(key, stage="quality", metric="fewshot_acc", value=acc, unit="acc",
                            dataset="mnist", shots=10, seed=seed))  # fmt: skip
        if method:
            out.append(dict(key, stage="quality", metric="teacher_cosine", value=0.9, unit="cos",
                            dataset="mnist"))  # fmt: skip
        speed = {"baseline": (1.0, 1.0, 1.0, True), "pool-p0.5-s8": (1.5, 1.4, 1.6, True),
                 "topk-p0.5-s8": (1.3, 1.0, 1.9, False)}[variant]  # fmt: skip
        out.append(dict(key, stage="speed", metric="speedup", value=speed[0], unit="x",
                        ci_low=speed[1], ci_high=speed[2], reliable=speed[3]))  # fmt: skip
    return to_frame(out)


def test_a_variant_row_holds_its_mean_accuracy_agreement_and_speedup_interval() -> None:
    table = variant_table(rows()).set_index("variant")
    assert table.at["pool-p0.5-s8", "mnist mean"] == pytest.approx(0.7)
    assert table.at["pool-p0.5-s8", "gflops"] == 1.0
    assert table.at["pool-p0.5-s8", "teacher_cosine"] == 0.9
    assert pd.isna(table.at["baseline", "teacher_cosine"])
    assert (table.at["pool-p0.5-s8", "speedup"], table.at["pool-p0.5-s8", "speedup_low"]) == (1.5, 1.4)
    text = markdown(variant_table(rows()))
    assert "speedup [95% CI]" in text.splitlines()[0]
    assert "| 1.50× [1.40–1.60] |" in text
    assert "| 1.30× [1.00–1.90]* |" in text  # the timer called it unreliable


def test_a_run_without_speed_or_agreement_has_no_such_columns(tmp_path: Path, capsys) -> None:
    df = rows()
    df = df[~df["metric"].isin(["speedup", "teacher_cosine"])]
    head = markdown(variant_table(df)).splitlines()[0]
    assert "speedup" not in head and "cosine" not in head
    run = tmp_path / "run"
    run.mkdir()
    rows().to_csv(run / "results.csv", index=False)
    main([str(run), "--figure", str(tmp_path / "fig")])  # off the shelf only: no before/after bars
    assert "figure:" not in capsys.readouterr().out
    assert not (tmp_path / "fig.png").exists()
