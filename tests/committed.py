"""The committed run of a study: the one git tracks, never a fresh sweep's run beside it.

CI runs the README's sweep before the tests, and that run lands in results/default with a later
run id, so "the newest run" is the wrong one to read (its checkpoints/ exist, its numbers are
this machine's). Without git (an unpacked archive) the oldest run stands in: a fresh run is
always newer than the committed ones."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def committed_run(study: str) -> Path:
    """The newest run that git tracks under results/<study>."""
    found = sorted(p.parent for p in (ROOT / "results" / study).glob("*/manifest.json"))
    assert found, f"no run under results/{study}"
    try:
        listed = subprocess.run(
            ["git", "ls-files", "--", f"results/{study}"],
            cwd=ROOT, capture_output=True, text=True, check=True,
        ).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return found[0]
    tracked = sorted({ROOT / Path(f).parent for f in listed if f.endswith("/manifest.json")})
    tracked = [run for run in tracked if run.parent == ROOT / "results" / study]
    assert tracked, f"git tracks no run under results/{study}"
    return tracked[-1]
