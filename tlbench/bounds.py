"""Every number a user gives, checked in one place before any work: the ranges of the sweep keys,
of the CLI options and of the data-spec options are declared once, here.

Numbers enter tlbench three ways: sweep files and `--set` (tlbench.config checks every numeric
field of its records against SWEEP), command-line options (the CLI checks every option of every
command against OPTIONS before the command runs; an option that is a sweep key points at that
key's bound, so the range is written once) and data specs (`moving_mnist:size=32`,
tlbench.data.clips). A number without a declared bound is still refused when it is NaN or infinite,
and tests/test_bad_input.py fails for any numeric option or key that has no bound here.

A bound whose upper limit guards against a cost that explodes (image or clip size, frames,
tokens, batch) says why in `why`, and the message quotes it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from tlbench.errors import ConfigError


@dataclass(frozen=True)
class Bound:
    """An accepted closed range [low, high] (open at `low` when `above`), integers if `integer`."""

    low: float | None = None
    high: float | None = None
    above: bool = False  # low itself is refused: > low
    integer: bool = False
    why: str = ""  # why `high` is the limit: what a larger value would cost
    words: tuple[str, ...] = ()  # words a comma-list option may hold besides numbers ('auto', 'cv')

    def describe(self) -> str:
        """'an integer in [1, 4096]', 'a number > 0', ...: the range in words."""
        kind = "an integer" if self.integer else "a number"
        if self.low is not None and self.high is not None:  # (0, 10]: 0 itself refused
            return f"{kind} in {'(' if self.above else '['}{_num(self.low)}, {_num(self.high)}]"
        if self.low is not None:
            return f"{kind} {'>' if self.above else '>='} {_num(self.low)}"
        return (
            f"{kind} <= {_num(self.high)}"
            if self.high is not None
            else f"a finite {kind[2:].lstrip(' ')}"
        )

    def check(self, value: Any, what: str) -> None:
        """ConfigError('WHAT must be ..., got VALUE') unless `value` is a finite number in range."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{what} must be {self.describe()}, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{what} must be a finite number ({self.describe()}), got {value}")
        if self.integer and value != int(value):
            raise ConfigError(f"{what} must be {self.describe()}, got {value}")
        low_bad = self.low is not None and (value <= self.low if self.above else value < self.low)
        if self.high is not None and value > self.high and self.why:
            raise ConfigError(f"{what} is at most {_num(self.high)}: {self.why}; got {_num(value)}")
        if low_bad or (self.high is not None and value > self.high):
            raise ConfigError(f"{what} must be {self.describe()}, got {_num(value)}")


def _num(v: float) -> str:
    return f"{int(v):,}" if float(v).is_integer() and abs(v) >= 10_000 else f"{v:g}"


FINITE = Bound()  # what a number without a declared bound must at least be
MEMORY = "a batch is held in memory at once"
SIZE = ("tokens grow with the square of the image side and attention's memory with their square "
        "(2,048 px at 16 px patches is 16,384 tokens per image)")  # fmt: skip

# Sweep keys (section.key, as in sweeps/*.toml and --set). A list key's bound holds for each item.
SWEEP: dict[str, Bound] = {
    "seed": Bound(0, 2**32 - 1, integer=True, why="seeds are unsigned 32-bit integers (numpy)"),
    "model.img_size": Bound(8, 2048, integer=True, why=SIZE),
    "grid.positions": Bound(
        0, 1
    ),  # relative position p: 0 before the first block, 1 after the last
    "grid.tokens": Bound(
        1,
        4096,
        integer=True,
        why="each token is a map over every patch; "
        "4,096 is more tokens than a 1,024 px image has patches",
    ),
    "grid.options": Bound(0, 4096, integer=True, why="a method parameter counts tokens or blocks"),
    "speed.batch_size": Bound(1, 4096, integer=True, why=MEMORY, words=("auto",)),
    "speed.rounds": Bound(1, 10_000, integer=True, why="each round times every variant once"),
    "speed.time_cap_s": Bound(0, 86_400, above=True, why="a day of timing"),
    "speed.warmup": Bound(0, 10_000, integer=True),
    "speed.iters": Bound(1, 100_000, integer=True, why="each round runs every variant this often"),
    "speed.threads": Bound(1, 1024, integer=True),
    "speed.target_ci": Bound(0, 1, above=True),  # a relative half-width
    "speed.max_rounds": Bound(1, 100_000, integer=True, why="each round times every variant once"),
    "quality.steps": Bound(0, 10_000_000, integer=True),
    "quality.batch_size": Bound(1, 4096, integer=True, why=MEMORY),
    "quality.lr": Bound(0, 10, above=True, why="AdamW diverges far below that"),
    "quality.shots": Bound(1, 100_000, integer=True),
    "quality.seeds": Bound(1, 1000, integer=True, why="one probe fit per seed and shot count"),
    "quality.l2_reg": Bound(0, 1e12, above=True, words=("cv",)),
    "quality.budget_s": Bound(0, 1e9),  # 0: no limit
    "quality.workers": Bound(1, 1024, integer=True, words=("auto",)),
    "quality.threads": Bound(1, 1024, integer=True),
    "quality.save_every_s": Bound(0, 1e9),
    "quality.distill_steps": Bound(0, 10_000_000, integer=True),
    "executor.workers": Bound(1, 1024, integer=True),
    "executor.gpus_per_node": Bound(0, 64, integer=True),
    "executor.cpus_per_task": Bound(1, 4096, integer=True),
    "executor.timeout_min": Bound(1, 10_000_000, integer=True),
    "executor.max_requeues": Bound(0, 1000, integer=True),
}

# Command-line options: '--option' for every command, or 'command --option' for one; a string
# names the sweep key whose bound it shares. Comma-list options are checked item by item.
OPTIONS: dict[str, str | Bound] = {
    "--positions": "grid.positions",
    "--position": "grid.positions",
    "--tokens": "grid.tokens",
    "--img-size": "model.img_size",
    "--frames": Bound(1, 256, integer=True, why="a clip's tokens grow with its frames"),
    "--param": "grid.options",
    "--threads": "quality.threads",
    "bench --batch-size": "speed.batch_size",
    "--rounds": "speed.rounds",
    "--time-cap": "speed.time_cap_s",
    "probe --batch-size": "quality.batch_size",
    "--steps": "quality.steps",
    "--lr": "quality.lr",
    "probe --shots": "quality.shots",
    "--seeds": "quality.seeds",
    "--l2-reg": "quality.l2_reg",
    "--budget": "quality.budget_s",
    "maps --count": Bound(1, 64, integer=True, why="one panel per image"),
    "maps --threshold": Bound(0, 1),  # a gray value in [0, 1]
    "recommend --max-gflops": Bound(0, 1e9),
    "recommend --min-speedup": Bound(0, 1e6),
    "recommend --max-accuracy-drop": Bound(0, 100),  # percentage points
    "recommend --shots": "quality.shots",
    "compare --acc-tol": Bound(0, 1),  # a fraction
    "check --tolerance": Bound(0, 1),  # relative
}

# moving_mnist:OPTION=N (tlbench.data.clips). Generating a split holds 5,000 clips in memory.
CLIP_PIXELS = 16 * 64 * 64  # frames x size^2 at most: 4,000 training clips of it are 1 GB
MOVING_MNIST: dict[str, Bound] = {
    "frames": Bound(
        1, 64, integer=True, why="every clip is generated in memory (4,000 training clips)"
    ),
    "size": Bound(
        8, 256, integer=True, why="every clip is generated in memory (4,000 training clips)"
    ),
    "digit": Bound(0.1, 1),  # the digit's side as a fraction of the frame's
    "speed": Bound(0, 64),  # px per frame; past the frame side it only bounces
    "seed": SWEEP["seed"],
}


def option_bound(command: str, option: str) -> Bound | None:
    """The bound of `command --option` (None when none is declared)."""
    found = OPTIONS.get(f"{command} {option}", OPTIONS.get(option))
    return SWEEP[found] if isinstance(found, str) else found


def check_numbers(value: Any, bound: Bound, what: str) -> None:
    """`value` (a number, a list of numbers, or a word of the bound) against `bound`."""
    if isinstance(value, str) and value in bound.words:
        return
    if isinstance(value, (list, tuple)):
        for v in value:
            check_numbers(v, bound, what)
        return
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        bound.check(value, what)


def check_option(command: str, option: str, value: Any) -> None:
    """One command-line option's value: numbers in range (every item of a comma list), and no
    option given as an empty string or list (`--probe-data ,` names no dataset)."""
    bound = option_bound(command, option)
    values = value if isinstance(value, (list, tuple)) else [value]
    for v in values:
        if isinstance(v, str) and not v.replace(",", "").strip():
            raise ConfigError(
                f"{option} is empty (got {v!r}); give a value or leave the option out"
            )
        if isinstance(v, bool) or v is None:
            continue
        if isinstance(v, (int, float)):
            (bound or FINITE).check(v, option)
        elif isinstance(v, str) and bound is not None and "=" not in v:
            for item in (s.strip() for s in v.split(",")):
                if item and item not in bound.words:
                    try:
                        number = float(item)
                    except ValueError:
                        words = " or ".join(f"'{w}'" for w in bound.words)
                        raise ConfigError(f"{option} must be {bound.describe()}"
                                          f"{' or ' + words if words else ''}, got {item!r}") from None  # fmt: skip
                    bound.check(number, option)
        elif isinstance(v, str) and bound is not None:  # NAME=VALUE (--param)
            raw = v.partition("=")[2].strip()
            try:
                number = float(raw)
            except ValueError:
                continue  # the option's own parser names the format
            bound.check(number, f"{option} {v.partition('=')[0].strip()}")


EMPTY_OK = (
    "model.names",
    "executor.setup",
)  # list keys whose empty list means something (the default)


def check_fields(record: Any, where: str, prefix: str) -> None:
    """Every field of one config record (tlbench.config): numbers in their SWEEP range (finite at
    least), no empty string, and no empty list but the EMPTY_OK ones. A field added to a record
    is covered without anyone listing it; tests/test_bad_input.py asks that its bound be declared."""
    import dataclasses

    for f in dataclasses.fields(record):
        key, value = prefix + f.name, getattr(record, f.name)
        if dataclasses.is_dataclass(value):
            continue  # checked when it was built
        what = f"{where}: {key}"
        bound = SWEEP.get(key, FINITE)
        if isinstance(value, dict):  # grid.options: {method: {name: values}}
            for method, table in value.items():
                for name, values in table.items():
                    check_numbers(values, bound, f"{what}.{method}.{name}")
            continue
        if isinstance(value, tuple) and not value and key not in EMPTY_OK:
            raise ConfigError(
                f"{what} is an empty list; give at least one value (or leave the key out)"
            )
        for v in value if isinstance(value, tuple) else [value]:
            if isinstance(v, str) and not v.strip():
                raise ConfigError(
                    f"{what} holds an empty string; give a value (or leave the key out)"
                )
        check_numbers(value, bound, what)
