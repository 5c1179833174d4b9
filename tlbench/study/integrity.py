"""Is a done unit's data still there? The ledger says a unit is done after its rows were written,
and records how many rows it wrote (`rows`) and a digest of their keys (`keys`). rows.jsonl can
still lose them afterwards (a last line cut, a unit's lines deleted, the file emptied, deleted or
replaced): a unit whose rows are not all there is not done. `tlbench status` reports such units,
and `tlbench sweep --resume` reopens them (a ledger line saying why), drops what is left of their
rows and runs them again, so nothing measured is lost silently.

Ledger lines from before `rows` existed are checked for having any row; before `keys`, by count.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tlbench import results

KEY_COLUMNS = ("stage", "metric", "dataset", "shots", "seed")  # a row's identity inside its unit
LOST_ERROR = "RowsLost"  # the error class of a reopened unit's ledger line


@dataclass(frozen=True)
class Lost:
    """A unit the ledger calls done whose rows in rows.jsonl do not match what it wrote."""

    model: str
    variant: str
    stage: str
    expected: int | None  # rows the unit wrote (None: a ledger line from before the count)
    found: int

    def reason(self) -> str:
        wrote = f"its {self.expected}" if self.expected is not None else "its"
        what = "other rows" if self.expected == self.found else f"{self.found} of {wrote} rows"
        return f"rows lost after it finished: {results.ROWS} holds {what}"


def digest(rows: Iterable[dict[str, Any]]) -> str:
    """12 hex digits over the sorted key columns of a unit's rows (order and values aside)."""
    keys = sorted(json.dumps([r.get(k) for k in KEY_COLUMNS]) for r in rows)
    return hashlib.sha1("\n".join(keys).encode()).hexdigest()[:12]


def lost_units(run_dir: Path, rows: list[dict[str, Any]] | None = None) -> list[Lost]:
    """Done units (by the ledger) whose rows are missing, extra or not theirs; [] without a ledger."""
    if not results.has_ledger(run_dir):
        return []
    mine: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in results.read_rows(run_dir) if rows is None else rows:
        mine[(r["model"], r["variant"], results.unit_stage(r["stage"]))].append(r)
    out = []
    for key, u in results.read_units(run_dir).items():
        if u["status"] != "done":
            continue
        got, expected = mine.get(key, []), u.get("rows")
        if expected is None:
            bad = not got
        else:
            bad = len(got) != expected or ("keys" in u and digest(got) != u["keys"])
        if bad:
            out.append(Lost(*key, expected, len(got)))
    return out


def reopen_lost(run_dir: Path) -> list[Lost]:
    """Record every lost unit as failed (so --resume runs it again) and drop what is left of its
    rows; call it under the run's lock. Returns the units reopened."""
    lost = lost_units(run_dir)
    for x in lost:
        results.record_unit(
            run_dir, x.model, x.variant, x.stage, "failed", error=LOST_ERROR, reason=x.reason()
        )
    if lost:
        results.drop_unfinished(run_dir)
    return lost
