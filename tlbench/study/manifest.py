"""What a run was made with: its id (time + device) and its manifest (resolved config, versions,
git SHA, device, command line), written before any row so every number can be traced."""

from __future__ import annotations

import dataclasses
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import tlbench
from tlbench.config import SweepConfig, to_dict
from tlbench.core import Variant


def run_id(config: SweepConfig) -> str:
    """YYYYmmdd-HHMMSS-<device>: the environment is part of the name (as timm's result files)."""
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{_slug(device_label(config.speed.device))}"


def device_label(device: str) -> str:
    import torch

    if device != "cpu" and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return "cpu"


def manifest_for(config: SweepConfig, variants: list[Variant], rid: str) -> dict[str, Any]:
    """Everything needed to reproduce the run: resolved config, versions, git SHA, device."""
    import fvcore
    import timm
    import torch


    return {
        "run_id": rid,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config": to_dict(config),
        "variants": [_variant_record(v) for v in variants],
        "versions": {
            "tlbench": tlbench.__version__, "torch": torch.__version__, "timm": timm.__version__,
            "fvcore": getattr(fvcore, "__version__", "unknown"), "python": platform.python_version(),
        },  # fmt: skip
        "git_sha": git_sha(),
        "device": {"name": device_label(config.speed.device), "cpu": platform.processor() or platform.machine(),
                   "cores": os.cpu_count(), "cuda": torch.cuda.is_available()},  # fmt: skip
        "argv": sys.argv,
    }


def git_sha() -> str | None:
    """The checkout's commit, if tlbench runs from one (+ '-dirty' with uncommitted changes)."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5, check=True).stdout.strip()  # fmt: skip
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return sha + ("-dirty" if dirty else "")


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:24] or "device"



def _variant_record(v: Variant) -> dict[str, Any]:
    """A variant as the manifest lists it; `params` only when set, so manifests of methods
    without parameters read as before parameters existed."""
    record = dict(dataclasses.asdict(v), name=v.name)
    del record["label"]  # the name holds it
    if not v.params:
        del record["params"]
    return record
