"""One writer, many jobs: a job writes each finished unit to its own shard file, and only the
submitting process (or a later --resume) folds the shards into rows.jsonl and the unit ledger.

Appends from many clients to one file on a network filesystem are not atomic; a whole file
renamed into place is. A shard is `RUN_DIR/shards/<stage>--<model>--<variant>.json`, written
with files.write_text (temp file + os.replace) when its unit finishes, holding the unit's rows
and its outcome (done, skipped, failed). Folding appends the rows, then the ledger line, then
removes the shard, so it is idempotent: a kill anywhere in between leaves either the shard (folded
again, after results.drop_unfinished took away rows without a ledger line) or a done ledger line
(the shard is removed unread). A unit is done when the ledger or an unfolded shard says so.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tlbench import files, results, schema
from tlbench.errors import ResultsError

SHARDS = "shards"


def shard_path(run_dir: Path, model: str, variant: str, stage: str) -> Path:
    """The unit's shard; timm names hold no '/', but a model path might: it is flattened."""
    safe = model.replace("/", "_")
    return files.inside(run_dir, SHARDS, f"{stage}--{safe}--{variant}.json")


def write_shard(run_dir: Path, model: str, variant: str, stage: str, status: str,
                rows: list[dict[str, Any]] | None = None, /, **info: Any) -> Path:  # fmt: skip
    """Write one unit's outcome and rows at once (a reader sees all of it or none); `info` goes
    to its ledger line (rows: the count, reason, error, log)."""
    if status not in results.STATUSES:
        raise ValueError(f"unknown unit status {status!r}")
    path = shard_path(Path(run_dir), model, variant, stage)
    unit = {"model": model, "variant": variant, "stage": stage, "status": status, **info}
    files.write_text(path, json.dumps({"unit": unit, "rows": rows or []}, allow_nan=True) + "\n")
    return path


def read_shards(run_dir: Path) -> list[tuple[Path, dict[str, Any]]]:
    """(path, {'unit': ..., 'rows': [...]}) of every shard not folded yet, in name order."""
    folder = Path(run_dir) / SHARDS
    out = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            unit = doc["unit"]
            key = (unit["model"], unit["variant"], unit["stage"])
            if unit["status"] not in results.STATUSES or not isinstance(doc["rows"], list) or not all(key):
                raise KeyError("status")
        except (json.JSONDecodeError, KeyError, TypeError):  # shards are renamed whole: this is damage
            raise ResultsError(f"{path}: corrupt shard (delete it to run its unit again)") from None
        for i, row in enumerate(doc["rows"]):  # checked before they are folded into rows.jsonl
            schema.check_row(row, f"{path}: rows[{i}]")
        out.append((path, doc))
    return out


def shard_units(run_dir: Path) -> dict[tuple[str, str, str], dict[str, Any]]:
    """(model, variant, stage) -> the unit record of each unfolded shard (`tlbench status`)."""
    return {(d["unit"]["model"], d["unit"]["variant"], d["unit"]["stage"]): d["unit"]
            for _, d in read_shards(run_dir)}  # fmt: skip


def fold(run_dir: Path, on_unit: Callable[[dict[str, Any]], None] | None = None) -> int:
    """Fold every shard into rows.jsonl and units.jsonl, then remove it; returns how many units
    were recorded. Call it only under the run's RunLock (one writer). Running it twice changes
    nothing: a unit the ledger already has as done is never written again."""
    run_dir = Path(run_dir)
    shards = read_shards(run_dir)
    if not shards:
        return 0
    results.repair_tail(run_dir)
    results.drop_unfinished(run_dir)  # rows of a fold cut short before its ledger line
    done = results.done_units(run_dir)
    folded = 0
    for path, doc in shards:
        unit = dict(doc["unit"])
        key = (unit.pop("model"), unit.pop("variant"), unit.pop("stage"))
        if key not in done:
            status = unit.pop("status")
            if status == "done":
                results.append_rows(run_dir, doc["rows"])
            results.record_unit(run_dir, *key, status, **unit)
            folded += 1
            if on_unit is not None:
                on_unit(doc["unit"])
        path.unlink(missing_ok=True)
    return folded
