"""Where a trained TokenLearner looks: its per-token maps over the patch grid, and the trained
variants they come from (a run's checkpoints, or one checkpoint file). maps.py draws images,
tracking.py clips; both read the maps through here."""


from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tlbench import files, results, schema
from tlbench.core import Variant
from tlbench.data.sources import fit_images, normalize
from tlbench.errors import ConfigError, ResultsError
from tlbench.quality.train import batch_args
from tlbench.reducers.modules import TokenLearner
from tlbench.report import picks
from tlbench.variants import build_model, make_variant


def find_tokenlearner(model: nn.Module) -> TokenLearner:
    """The model's first TokenLearner (with the fuser, the one in block k); ConfigError if none."""
    for m in model.modules():
        if isinstance(m, TokenLearner):
            return m
    raise ConfigError(f"{type(model).__name__} has no TokenLearner: maps need a TokenLearner variant (a position and "
                      "method tokenlearner), not the baseline or another reducer")  # fmt: skip


@torch.no_grad()
def token_maps(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Images [B, C, H, W] in [0, 1] -> each learned token's weights over the patch grid [B, S, h, w];
    clips [B, C, F, H, W] on a video model -> [B, T, S, h, w], the maps of each time step.

    The images are fitted to the model's input (size, channels, frames) and normalised as in training.
    """

    tl = find_tokenlearner(model)
    captured: list[torch.Tensor] = []

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        captured.append(module.attention(inputs[0]).detach())  # [B, S, N]; pure, so recomputed

    x = normalize(fit_images(images.float(), **batch_args(model)))
    handle = tl.register_forward_hook(hook)
    try:
        model.eval()(x.to(next(model.parameters()).device))
    finally:
        handle.remove()
    h, w = model.patch_embed.grid_size
    weights = captured[0].cpu()  # [B, S, N]; per time step on video: [B*T, S, N]
    if x.ndim == 5:
        return weights.reshape(len(x), -1, weights.shape[1], h, w)  # [B, T, S, h, w]
    return weights.reshape(weights.shape[0], weights.shape[1], h, w)  # [B, S, h, w]


@dataclass(frozen=True)
class MapsSource:
    """A checkpoint and the variant whose weights it holds."""

    checkpoint: Path
    variant: Variant
    img_size: int | None = None


def from_run(run_dir: str | Path, variant_name: str, model: str | None = None) -> MapsSource:
    """The checkpoint of `variant_name` in a sweep's run directory (RUN_DIR/checkpoints/*.pt);
    `model` picks among a several-model run's variants of the same name; without it such a name
    is refused (report/picks.py)."""
    run = Path(run_dir)
    meta = results.read_manifest(run)
    return _source(run, meta, picks.pick_variant(run, variant_records(run, meta), variant_name, model))


def variant_records(run: Path, meta: dict) -> list[dict]:
    """The manifest's variant records, each checked against the schema (one line naming the key)."""
    records = meta.get("variants", [])
    if not isinstance(records, list):
        raise ResultsError(f"{run / 'manifest.json'}: variants must be a list, got {type(records).__name__}")
    for i, r in enumerate(records):
        schema.check_variant(r, f"{run / 'manifest.json'}: variants[{i}]")
    return records


def _source(run: Path, meta: dict, r: dict) -> MapsSource:
    """The checkpoint of the manifest's variant record `r` (ConfigError if it has none)."""
    params = tuple(tuple(p) for p in r.get("params", ()))
    method = r.get("method", "tokenlearner")
    label = r["name"].removeprefix(f"{method}-") if method != "tokenlearner" else r["name"]
    variant = Variant(r["model"], r["position"], r["block_index"], r["num_tokens"], r.get("version", "1.1"),
                      r.get("fuser", False), method, params, label)  # fmt: skip
    name = variant.name
    if variant.is_baseline or variant.method != "tokenlearner":
        raise ConfigError(f"{name} has no TokenLearner: maps need a TokenLearner variant")
    found = sorted((run / "checkpoints").glob(f"{variant.model}-{name}-*.pt"))
    found = [p for p in found if not p.name.endswith(".partial.pt")]
    if not found:
        raise ConfigError(f"no training checkpoint for {name} under {run / 'checkpoints'} "
                          "(the quality stage writes them; a compute-only run has none)")  # fmt: skip
    return MapsSource(found[0], variant, meta.get("config", {}).get("model", {}).get("img_size"))


def trained_sources(run: Path, meta: dict) -> Iterator[MapsSource]:
    """Each TokenLearner variant of a run's manifest that has a finished training checkpoint."""
    for r in variant_records(run, meta):
        if r.get("position") is None or r.get("method", "tokenlearner") != "tokenlearner":
            continue
        try:
            yield _source(run, meta, r)
        except ConfigError:  # no finished checkpoint
            continue


def from_checkpoint(path: str | Path, model: str, position: float | None, num_tokens: int,
                    version: str = "1.1", fuser: bool = False, img_size: int | None = None) -> MapsSource:  # fmt: skip
    """A checkpoint file and the variant options it was trained with."""
    if position is None:
        raise ConfigError("maps need a TokenLearner variant: give --position (the baseline has none)")
    variant = make_variant(model, position, num_tokens, version=version, fuser=fuser, img_size=img_size)
    return MapsSource(Path(path), variant, img_size)


def load_model(source: MapsSource) -> nn.Module:
    """Build the variant and load the checkpoint's weights into it (every key must fit)."""
    if source.variant.is_baseline or source.variant.method != "tokenlearner":
        raise ConfigError(f"{source.variant.name} has no TokenLearner: maps need a TokenLearner variant")
    path = source.checkpoint
    if not path.is_file():
        raise ConfigError(f"checkpoint file not found: {path}")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a foreign or damaged file
        raise ConfigError(f"could not read checkpoint {path}: {type(e).__name__}") from None
    state = blob.get("state_dict", blob) if isinstance(blob, dict) else None
    if not isinstance(state, dict) or "head.weight" not in state:
        raise ConfigError(f"{path} is not a tlbench training checkpoint (no state_dict with a head)")
    model = build_model(source.variant, img_size=source.img_size, num_classes=state["head.weight"].shape[0])
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise ConfigError(f"checkpoint {path} does not fit {source.variant.model} {source.variant.name}: "
                          f"{first}") from None  # fmt: skip
    return model.eval()


def save_figure(fig: Any, out_stem: str | Path) -> list[Path]:
    """OUT_STEM.png and OUT_STEM.pdf (the folder made if needed); the figure is closed."""
    import matplotlib.pyplot as plt

    paths = [Path(f"{out_stem}.png"), Path(f"{out_stem}.pdf")]
    try:  # through files: a path under a file, or a refused folder, is one line
        for p in paths:
            files.write_with(p, lambda tmp, p=p: fig.savefig(tmp, format=p.suffix[1:], bbox_inches="tight"))
    finally:
        plt.close(fig)
    return paths

