"""Token reducers: the methods that cut a ViT's token count, as plug-ins (base.py: the protocol and
the registry; one module per method, each registering itself on import)."""

from tlbench.core import DEFAULT_METHOD  # noqa: F401
from tlbench.reducers import evit, patchmerger, pool, random_drop, tokenlearner, tome, topk  # noqa: F401
from tlbench.reducers.base import (  # noqa: F401
    REDUCERS,
    Reducer,
    baseline_schedule,
    check_params,
    get_reducer,
    register_reducer,
    token_schedule,
)
