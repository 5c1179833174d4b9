"""The reducer protocol and registry: what a token-reduction method says about itself.

A variant is backbone x reducer x placement. A reducer says where it acts (before block k, or
between the attention and the MLP of a block), what it needs from the model (the token grid, the
keys, the class token's attention row, token sizes), whether it has parameters, and, in numbers,
what it does to the sequence: its TokenSchedule. That one schedule drives the analytic FLOPs
(flops.analytic_flops), hence the cost estimate and the compute checks; nothing else re-derives
token counts.

Applying a reducer must not mutate modules shared with the baseline: sweeps time and count every
variant of a model on one set of blocks (models.build_sharing), so an in-place class swap of a
block (ToMe's upstream patch) would silently change the baseline too. `apply` returns the model
with a new `blocks` container and may wrap blocks, never edit them; build_sharing enforces it.

Register a method with `@register_reducer`; `get_reducer(name)` finds it. A new method is one
module in this folder plus its import line in `__init__.py`.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from typing import ClassVar, Protocol, TypeVar

import torch
from torch import nn

from tlbench.core import ModelInfo, TokenSchedule, Variant
from tlbench.errors import ConfigError

# What a reducer may need from the model to act, and the places it may act at.
NEEDS = ("grid", "keys", "cls_attention", "sizes")
WHERE = ("before_block", "in_block")


class Reducer(Protocol):
    """A token-reduction method; one instance serves every variant of that method."""

    method: ClassVar[str]  # registry key, and the prefix of its variant names
    where: ClassVar[str]  # one of WHERE
    needs: ClassVar[frozenset[str]]  # a subset of NEEDS
    trains: ClassVar[bool]  # has parameters of its own
    zero_cost_ops: ClassVar[Mapping[str, str]]  # fvcore ops it adds that count as zero, with why
    # Optional: integer parameters the method accepts (Variant.params), name -> help. Absent: none.
    # Optional: `derived_tokens(info, variant) -> int`, for a method whose S follows from its
    # parameters (tome_r): make_variant stores it as the variant's num_tokens.
    # Optional: `sweep_defaults: dict[str, tuple[int, ...]]`, parameter values a sweep uses when
    # its [grid.options.<method>] table leaves them out.

    def check(self, info: ModelInfo, variant: Variant) -> None:
        """Raise ConfigError (one line) if the method cannot act on this model as asked."""

    def label(self, variant: Variant) -> str:
        """The variant's name without the method prefix, e.g. 'p0.25-s8'."""

    def schedule(self, info: ModelInfo, variant: Variant, *, norms: bool = True) -> TokenSchedule:
        """Tokens per block; `norms=False` leaves the LayerNorm terms out of module_macs."""

    def apply(self, model: nn.Module, info: ModelInfo, variant: Variant) -> nn.Module:
        """Put the method into `model`: a new `blocks` container, shared blocks left untouched."""


REDUCERS: dict[str, Reducer] = {}
R = TypeVar("R")


def register_reducer(cls: Callable[[], R]) -> Callable[[], R]:
    """Class decorator: add one instance of the method to REDUCERS under its `method` name."""
    reducer = cls()
    name = reducer.method
    if name in REDUCERS:
        raise ValueError(f"reducer {name!r} registered twice")
    if reducer.where not in WHERE or not reducer.needs <= set(NEEDS):
        raise ValueError(f"reducer {name!r}: where must be one of {WHERE}, needs a subset of {NEEDS}")
    REDUCERS[name] = reducer
    return cls


def get_reducer(method: str) -> Reducer:
    """The registered reducer called `method`; a ConfigError naming the close ones otherwise."""
    if method in REDUCERS:
        return REDUCERS[method]
    close = difflib.get_close_matches(str(method), list(REDUCERS), n=3)
    hint = f"did you mean {', '.join(close)}?" if close else f"known: {', '.join(sorted(REDUCERS))}"
    raise ConfigError(f"unknown token reduction method {method!r}; {hint}")


def check_params(method: str, params: tuple[tuple[str, int], ...]) -> None:
    """Refuse (one line) parameters the method does not declare, or values that are not integers."""
    options: Mapping[str, str] = getattr(get_reducer(method), "options", {})
    for name, value in params:
        if name not in options:
            known = f"it takes {', '.join(sorted(options))}" if options else "it takes none"
            raise ConfigError(f"{method} has no parameter {name!r}; {known}")
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{method} parameter {name} must be an integer, got {value!r}")


def baseline_schedule(info: ModelInfo) -> TokenSchedule:
    """The unmodified model: every block sees all prefix and patch tokens."""
    n = info.num_prefix_tokens + info.num_patches
    return TokenSchedule((n,) * info.depth, (n,) * info.depth, n)


def token_schedule(info: ModelInfo, variant: Variant, *, norms: bool = True) -> TokenSchedule:
    """The schedule of any variant, the baseline included."""
    if variant.is_baseline:
        return baseline_schedule(info)
    return get_reducer(variant.method).schedule(info, variant, norms=norms)


class PerTimeStep(nn.Module):
    """Run a token reducer on each time step: [B, T*N, C] -> [B*T, N, C] -> [B*T, S, C] -> [B, T*S, C]."""

    def __init__(self, reduce: nn.Module, time_steps: int) -> None:
        super().__init__()
        self.reduce = reduce
        self.time_steps = time_steps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, tn, c = x.shape
        t = self.time_steps
        out = self.reduce(x.reshape(b * t, tn // t, c))  # [B*T, S, C]
        return out.reshape(b, -1, c)  # [B, T*S, C]
