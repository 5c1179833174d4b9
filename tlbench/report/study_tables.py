"""Markdown tables and the agreement figure of a reducers study (docs/dinov2.md), from results.csv.

    python -m tlbench.report.study_tables RUN_DIR [RUN_DIR ...] [--shots 10] [--figure OUT]

One row per variant: method, p, S (tokens kept), GFLOPs, and few-shot accuracy per probe set (mean
and spread over the support draws) for each quality stage present ("quality_init": a distill run's
variants before distillation, "quality": the final probe), with teacher agreement and cosine and
the measured speedup (95% interval) where the run has them. Reads
what a sweep wrote; computes nothing new but means, so the docs' tables are the runs' numbers.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from tlbench.errors import ResultsError
from tlbench.report.rows import TEACHER

STAGE_LABEL = {"quality_init": "off the shelf", "quality": "distilled"}  # the figure: distill runs


def _read(run: Path) -> pd.DataFrame:
    path = run / "results.csv"
    if not path.is_file():
        raise ResultsError(f"no results.csv in {run}")
    return pd.read_csv(path)


def variant_table(df: pd.DataFrame, shots: int = 10) -> pd.DataFrame:
    """Tidy rows -> one row per (variant, stage): GFLOPs, accuracy per probe set at `shots`."""
    keys = ["variant", "method", "position", "num_tokens"]
    flops = df[df.metric == "gflops"].set_index("variant")["value"]
    acc = df[(df.metric == "fewshot_acc") & (df.shots == shots)]
    stats = acc.groupby([*keys, "stage", "dataset"], dropna=False)["value"].agg(["mean", "std"])
    table = stats.unstack("dataset")
    table.columns = [f"{d} {s}" for s, d in table.columns]
    table = table.reset_index()
    table.insert(4, "gflops", table["variant"].map(flops))
    for metric in TEACHER:
        m = df[df.metric == metric].set_index(["variant", "stage"])["value"]
        table[metric] = [m.get((v, s)) for v, s in zip(table.variant, table.stage, strict=True)]
    speed = df[df.metric == "speedup"].drop_duplicates("variant").set_index("variant")
    for col, src in (("speedup", "value"), ("speedup_low", "ci_low"), ("speedup_high", "ci_high"),
                     ("speedup_reliable", "reliable")):  # fmt: skip
        table[col] = table["variant"].map(speed[src]) if src in speed else None
    table["method"] = table["method"].fillna("baseline")
    return table.sort_values(["stage", "method", "position", "num_tokens"], na_position="first")


def markdown(table: pd.DataFrame) -> str:
    """The table as GitHub markdown: accuracy as mean ± std over draws."""
    datasets = sorted({c.split(" ")[0] for c in table.columns if c.endswith(" mean")})
    head = ["variant", "method", "p", "S", "GFLOPs", "stage", *datasets]
    agreement = table["teacher_cosine"].notna().any()
    if agreement:
        head += ["agreement", "cosine"]
    speed = table["speedup"].notna().any()
    if speed:
        head += ["speedup [95% CI]"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in table.iterrows():
        cells = [r.variant, r.method, _num(r.position, "{:g}"), _num(r.num_tokens, "{:.0f}"),
                 f"{r.gflops:.3f}", r.stage]  # fmt: skip
        cells += [f"{r[f'{d} mean']:.3f} ± {r[f'{d} std']:.3f}" for d in datasets]
        if agreement:
            cells += [_num(r.teacher_agreement, "{:.3f}"), _num(r.teacher_cosine, "{:.3f}")]
        if speed:
            cells.append(_speedup(r))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _num(value: object, spec: str) -> str:
    return "–" if value is None or pd.isna(value) else spec.format(value)


def _speedup(r: pd.Series) -> str:
    """'1.27× [1.24–1.29]'; an interval the timer called unreliable (wider than its target when
    time ran out) is marked '*'."""
    if r.speedup is None or pd.isna(r.speedup):
        return "–"
    text = f"{r.speedup:.2f}×"
    if r.speedup_low is not None and not pd.isna(r.speedup_low):
        text += f" [{r.speedup_low:.2f}–{r.speedup_high:.2f}]"
    return text if r.speedup_reliable in (True, "True", 1, None) or pd.isna(r.speedup_reliable) else text + "*"


def agreement_figure(df: pd.DataFrame, out: Path) -> list[Path]:
    """Teacher cosine and agreement per variant, off the shelf vs adapted: how much of the
    unreduced model each reducer keeps. Writes OUT.png and OUT.pdf."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = df[df.metric.isin(list(TEACHER))]
    if rows.empty:
        raise ResultsError("no teacher_agreement rows: the run has no distilled variants")
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, metric in zip(axes, ["teacher_cosine", "teacher_agreement"], strict=True):
        m = rows[rows.metric == metric].pivot_table(
            index="variant", columns="stage", values="value"
        )
        m = m[[s for s in ("quality_init", "quality") if s in m.columns]]
        m.columns = [STAGE_LABEL[s] for s in m.columns]
        m.plot.bar(ax=ax, rot=30, width=0.75)
        ax.set_ylabel(metric.replace("_", " "))
        ax.set_ylim(0, 1.02)
        ax.grid(axis="y", alpha=0.3)
        ax.set_xlabel("")
    fig.suptitle(
        f"{df.model.iloc[0]}: the reduced model against the unreduced one (held-out MNIST)"
    )
    fig.tight_layout()
    written = []
    for suffix in (".png", ".pdf"):
        path = out.with_suffix(suffix)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=130)
        written.append(path)
    plt.close(fig)
    return written


def main(argv: list[str]) -> None:
    shots, figure, runs = 10, None, []
    it = iter(argv)
    for arg in it:
        if arg == "--shots":
            shots = int(next(it))
        elif arg == "--figure":
            figure = Path(next(it))
        else:
            runs.append(Path(arg))
    for run in runs:
        df = _read(run)
        print(f"### {run} ({shots}-shot)\n")
        print(markdown(variant_table(df, shots)) + "\n")
        distilled = df.metric.eq("teacher_cosine") & df.stage.eq("quality_init")
        if figure is not None and distilled.any():  # before and after: a distill run
            print("figure: " + ", ".join(map(str, agreement_figure(df, figure))))


if __name__ == "__main__":
    main(sys.argv[1:])
