"""Which attention kernel ran: one profiled forward pass, its attention ops named in short.

A speedup is only fair when the baseline and every variant run the same attention kernel, and
SDPA picks its kernel at run time (dtype, head size, device, what this torch build has), so the
kernel is observed, not assumed. torch.profiler sees every op level, including the math fallback
`aten::_scaled_dot_product_attention_math`, which a dispatch-level hook would only see as the bmm
and softmax it decomposes into. Explicit attention (timm's `fused_attn = False`) is recognised
inside attention modules only: TokenLearner and the reducers' scores also run softmax and matmuls.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

import torch
from torch import nn

# profiler op name -> short name; the order is the order of a combined name ("flash+math")
SDPA_OPS = {
    "aten::_scaled_dot_product_flash_attention": "flash",
    "aten::_scaled_dot_product_flash_attention_for_cpu": "flash",
    "aten::_scaled_dot_product_efficient_attention": "efficient",
    "aten::_scaled_dot_product_cudnn_attention": "cudnn",
    "aten::_scaled_dot_product_fused_attention_overrideable": "fused",  # XPU and out-of-tree backends
    "aten::_scaled_dot_product_attention_math": "math",
    "aten::_scaled_dot_product_attention_math_for_mps": "math",
}
KINDS = ("flash", "efficient", "cudnn", "fused", "math", "unfused")
SOFTMAX_OPS = {"aten::softmax", "aten::_softmax", "aten::_safe_softmax"}
MATMUL_OPS = {"aten::bmm", "aten::matmul", "aten::baddbmm", "aten::einsum"}
RANGE = "tlbench::attention"  # the profiler range around each attention module's forward


def attention_modules(model: nn.Module) -> list[nn.Module]:
    """timm's Attention and its kind: modules with a `fused_attn` switch or named *Attention."""
    return [m for m in model.modules()
            if hasattr(m, "fused_attn") or type(m).__name__.endswith("Attention")]  # fmt: skip


def attention_kernels(model: nn.Module, x: torch.Tensor) -> tuple[str, ...]:
    """Short names of the attention kernels one forward pass of `model` on `x` runs, in KINDS order.

    Runs the model once under the caller's settings (no_grad/inference mode, autocast), so call it
    outside any timed region. A model without attention modules is not run: it reports ().
    """
    modules = attention_modules(model)
    if not modules:
        return ()
    activities = [torch.profiler.ProfilerActivity.CPU]
    if x.device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    handles = []
    for m in modules:
        handles.append(m.register_forward_pre_hook(_enter))
        handles.append(m.register_forward_hook(_exit))
    try:
        with _quiet_native_stderr(), torch.profiler.profile(activities=activities) as prof:
            model(x)
            if x.device.type == "cuda":
                torch.cuda.synchronize(x.device)
        with _quiet_native_stderr():
            events = list(prof.events())
    finally:
        for h in handles:
            h.remove()
        _RANGES.clear()
    return kinds_of(events)


def kinds_of(events: list) -> tuple[str, ...]:
    """SDPA kernels anywhere (a reducer may call SDPA itself), plus 'unfused' for an attention
    range that ran softmax and a matmul but no SDPA op."""
    found = {SDPA_OPS[e.name] for e in events if e.name in SDPA_OPS}
    for e in (e for e in events if e.name == RANGE):
        names = set(_descendants(e))
        if not names & SDPA_OPS.keys() and names & SOFTMAX_OPS and names & MATMUL_OPS:
            found.add("unfused")
    return tuple(k for k in KINDS if k in found)


def kernel_label(kinds: tuple[str, ...]) -> str:
    """'flash', 'flash+math' when several ran, 'none' without attention."""
    return "+".join(kinds) or "none"


_RANGES: list[torch.profiler.record_function] = []  # open ranges, innermost last


def _enter(module: nn.Module, args: tuple) -> None:
    rf = torch.profiler.record_function(RANGE)
    rf.__enter__()
    _RANGES.append(rf)


def _exit(module: nn.Module, args: tuple, out: object) -> None:
    if _RANGES:
        _RANGES.pop().__exit__(None, None, None)


def _descendants(event: object) -> Iterator[str]:
    for child in event.cpu_children:
        yield child.name
        yield from _descendants(child)


@contextlib.contextmanager
def _quiet_native_stderr() -> Iterator[None]:
    """Silence what the profiler's C++ side (kineto) writes to fd 2 on every start and stop
    ('profiler_start', 'gpuGetDeviceCount failed'): noise in the middle of `tlbench bench`."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no fd 2: nothing to silence
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            try:
                yield
            finally:
                os.dup2(saved, 2)
    finally:
        os.close(saved)
