"""The one schema of a results row, a ledger line and a manifest's variant record, checked where
each is read (results.read_rows, results.read_units, maps.from_run), so every reader (plot,
resume, compare, recommend, status, maps) gets values of the right type or one line naming the
file:line (or key) that is wrong. A wrong type (a list for a stage name, an integer variant, a
float token count, NaN in a key column) would otherwise surface as a TypeError far from its cause.
"""

from __future__ import annotations

import math
from typing import Any

from tlbench.errors import ResultsError

# what each kind of column holds; every one but the required text columns may also be null
TEXT = "a non-empty string"
NAME = "a string or null"
INT = "an integer or null"
NUMBER = "a number or null"
FLAG = "true, false or null"
POSITION = "a number in [0, 1] or null"

ROW_TYPES: dict[str, str] = {
    "run_id": NAME, "model": TEXT, "variant": TEXT, "method": NAME, "position": POSITION,
    "block_index": INT, "num_tokens": INT, "stage": TEXT, "metric": TEXT, "value": NUMBER,
    "unit": TEXT, "dataset": NAME, "shots": INT, "seed": INT, "batch_size": INT, "device": NAME,
    "dtype": NAME, "attn_kernel": NAME, "host": NAME, "gpu": NAME, "ci_low": NUMBER,
    "ci_high": NUMBER, "reliable": FLAG,
}  # fmt: skip
UNIT_TYPES: dict[str, str] = {
    "model": TEXT,
    "variant": TEXT,
    "stage": TEXT,
    "rows": INT,
    "keys": NAME,
}
VARIANT_TYPES: dict[str, str] = {
    "model": TEXT, "name": TEXT, "position": POSITION, "block_index": INT, "num_tokens": INT,
    "version": NAME, "method": NAME, "fuser": FLAG,
}  # fmt: skip


def fits(kind: str, value: Any) -> bool:
    """Whether `value` (as json.loads gives it) is of the column kind."""
    if kind == TEXT:
        return isinstance(value, str) and value.strip() != ""
    if value is None:
        return True
    if kind == NAME:
        return isinstance(value, str)
    if kind == FLAG:
        return isinstance(value, bool)
    if isinstance(value, bool):  # JSON true is no number here
        return False
    if kind == INT:
        return isinstance(value, int)
    if kind == NUMBER:  # NaN and +-inf are a missing measurement (results.to_frame)
        return isinstance(value, (int, float))
    return isinstance(value, (int, float)) and math.isfinite(value) and 0 <= value <= 1  # POSITION


def check(record: Any, types: dict[str, str], where: str, what: str) -> None:
    """ResultsError naming `where` (file:line) and the first column whose value is not its kind;
    a column outside `types` must hold a scalar (text, number, true/false or null)."""
    if not isinstance(record, dict):
        raise ResultsError(f"{where}: not a {what} (a JSON object), got {_short(record)}")
    for key, value in record.items():
        kind = types.get(key)
        ok = (
            fits(kind, value)
            if kind
            else value is None or isinstance(value, (str, int, float, bool))
        )
        if not ok:
            raise ResultsError(
                f"{where}: {key} must be {kind or 'a single value'}, got {_short(value)}"
            )


def check_row(row: Any, where: str) -> None:
    """One results row (rows.jsonl, a shard's rows)."""
    check(row, ROW_TYPES, where, "results row")


def check_unit(line: Any, where: str) -> None:
    """One ledger line (units.jsonl): model, variant, stage text; rows a count."""
    check({k: v for k, v in line.items() if k in UNIT_TYPES} if isinstance(line, dict) else line,
          UNIT_TYPES, where, "unit record")  # fmt: skip
    if isinstance(line.get("rows"), int) and line["rows"] < 0:
        raise ResultsError(f"{where}: rows must be a count >= 0, got {line['rows']}")


def check_variant(record: Any, where: str) -> None:
    """One variant record of a manifest's `variants` list (read by `tlbench maps`)."""
    if not isinstance(record, dict):
        raise ResultsError(f"{where}: not a variant record (a JSON object), got {_short(record)}")
    check(
        {k: v for k, v in record.items() if k in VARIANT_TYPES},
        VARIANT_TYPES,
        where,
        "variant record",
    )
    params = record.get("params", [])
    if not (isinstance(params, list) and all(isinstance(p, list) and len(p) == 2 and isinstance(p[0], str)
                                              and isinstance(p[1], int) and not isinstance(p[1], bool)
                                              for p in params)):  # fmt: skip
        raise ResultsError(
            f"{where}: params must be a list of [name, integer] pairs, got {_short(params)}"
        )


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
