"""tlbench: where in a Vision Transformer should tokens be reduced, and what does it buy?

The public entry points are imported lazily, so that `tlbench --help` does not pay for torch.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_PUBLIC = {
    "build_variant": "tlbench.variants",
    "build_model": "tlbench.variants",
    "make_variant": "tlbench.variants",
    "make_variants": "tlbench.variants",
    "count_flops": "tlbench.measure.flops",
    "run_sweep": "tlbench.study.sweep",
    "load_sweep": "tlbench.config",
    "load_results": "tlbench.results",
    "fewshot_accuracy": "tlbench.quality.fewshot",
    "measure_throughput": "tlbench.measure.throughput",
    "recommend": "tlbench.report.recommend",
    "run_status": "tlbench.study.status",
    "compare_runs": "tlbench.report.compare",
}
__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        import importlib

        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'tlbench' has no attribute {name!r}")
