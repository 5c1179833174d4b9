"""A run's variants are keyed by (model, variant): a run of several models has a `p0.5-s4` per
model. The readers that take one variant or one model (`tlbench maps RUN --variant`, `tlbench
recommend --model`) pick it here, and refuse a name that is ambiguous without --model."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tlbench.backbones.registry import ALIASES
from tlbench.errors import ConfigError


def pick_model(run_dir: str | Path, models: Iterable[str], model: str) -> str:
    """The run's name for `model` (as given, or the name its alias resolves to); ConfigError
    listing the run's models otherwise."""
    present = list(dict.fromkeys(models))
    if model in present:
        return model
    if ALIASES.get(model) in present:
        return ALIASES[model]
    raise ConfigError(
        f"--model {model}: {run_dir} has no such model; it has {', '.join(present) or 'none'}"
    )


def pick_variant(run_dir: str | Path, records: list[dict[str, Any]], name: str, model: str | None = None
                 ) -> dict[str, Any]:  # fmt: skip
    """The one record (with 'model' and 'name') called `name`, of `model` if given; ConfigError
    when there is none, or when several models have it and no model is given."""
    if model is not None:
        model = pick_model(run_dir, (r["model"] for r in records), model)
        records = [r for r in records if r["model"] == model]
    found = [r for r in records if r["name"] == name]
    models = list(dict.fromkeys(r["model"] for r in found))
    if len(models) > 1:
        raise ConfigError(f"{name} is a variant of {len(models)} models in {run_dir} ({', '.join(models)}); "
                          "give --model/-m to pick one")  # fmt: skip
    if not found:
        names = ", ".join(dict.fromkeys(r["name"] for r in records)) or "none"
        where = f"{model} in {run_dir}" if model is not None else str(run_dir)
        raise ConfigError(f"no variant {name!r} in {where}; it has {names}")
    return found[0]
