"""The reducer contract, run over every registered method (timm's one-test-per-registry style)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
from timm.models.vision_transformer import Block
from torch import nn

from tlbench.backbones.vit import model_info
from tlbench.core import TokenSchedule, Variant
from tlbench.errors import ConfigError
from tlbench.measure.flops import analytic_flops, count_flops, count_flops_composed
from tlbench.reducers import REDUCERS, get_reducer, token_schedule
from tlbench.reducers.base import NEEDS, WHERE
from tlbench.variants import build_model, build_sharing, make_variant, make_variants

ROOT = Path(__file__).resolve().parents[1]
MODELS = ["tiny", "vit_cpu6"]  # with a class token, and without any prefix token
METHODS = sorted(REDUCERS)
PARAMS: dict[str, dict[str, int]] = {"tome_r": {"r": 2}}  # methods with a required parameter


def _variants(model: str, method: str) -> list[Variant]:
    """Every placement class of a method: first block, middle, last block, after the last."""
    depth = model_info(model).depth
    last = 1 if REDUCERS[method].where == "before_block" else (depth - 1) / depth
    out = make_variants(model, [0, 0.5, last], [4], baseline=False, method=method, params=PARAMS.get(method))
    if method == "tokenlearner":
        out += make_variants(model, [0.25], [4], baseline=False, version="1.0", method=method)
        out += make_variants(model, [0.5], [4], baseline=False, fuser=True, method=method)
    return out


def _seen_tokens(model: nn.Module, x: torch.Tensor) -> tuple[list[int], list[int], int]:
    """Tokens that actually enter each block's attention and MLP, and reach the final norm."""
    attn: list[int] = []
    mlp: list[int] = []
    out: list[int] = []
    hooks = []
    for m in model.modules():
        if isinstance(m, Block):
            # the norms in front of attention and MLP: in-block reducers call attn's parts directly
            hooks.append(m.norm1.register_forward_pre_hook(lambda _, a: attn.append(a[0].shape[1])))
            hooks.append(m.norm2.register_forward_pre_hook(lambda _, a: mlp.append(a[0].shape[1])))
    hooks.append(model.norm.register_forward_pre_hook(lambda _, a: out.append(a[0].shape[1])))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return attn, mlp, out[0]


def test_every_method_declares_where_and_what_it_needs() -> None:
    for name, r in REDUCERS.items():
        assert r.method == name and r.where in WHERE and r.needs <= set(NEEDS)
        assert isinstance(r.trains, bool) and all(isinstance(v, str) for v in r.zero_cost_ops.values())


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("model", MODELS)
def test_schedule_is_what_the_model_does(model: str, method: str) -> None:
    """Shapes, token counts per block and FLOPs all follow the one schedule, prefix tokens or not."""
    info = model_info(model)
    x = torch.randn(2, info.in_chans, *info.img_size)
    for v in _variants(model, method):
        torch.manual_seed(0)
        net = build_model(v, num_classes=info.num_classes)
        sched = token_schedule(info, v)
        assert isinstance(sched, TokenSchedule) and len(sched.attn_tokens) == info.depth
        attn, mlp, out = _seen_tokens(net, x)
        assert (tuple(attn), tuple(mlp), out) == (sched.attn_tokens, sched.mlp_tokens, sched.tokens_out), v.name
        with torch.no_grad():
            assert net(x).shape == (2, info.num_classes)
        assert count_flops(net, variant=v).flops == analytic_flops(info, v), v.name


@pytest.mark.parametrize("method", METHODS)
def test_building_variants_leaves_the_shared_baseline_untouched(method: str) -> None:
    variants = [make_variant("tiny")] + _variants("tiny", method)
    x = torch.randn(2, 3, 32, 32)
    torch.manual_seed(0)
    alone = build_model(variants[0])
    models = build_sharing(variants)
    base = models["baseline"]
    base.load_state_dict(alone.state_dict())
    with torch.no_grad():
        assert torch.equal(base(x), alone(x))
    assert [type(m) for m in base.modules()] == [type(m) for m in alone.modules()]
    later = [v for v in variants[1:] if v.block_index > 0]
    assert later and all(models[v.name].blocks[0] is base.blocks[0] for v in later)  # shared


class _ClassSwap:
    """A reducer written in ToMe's upstream style: it swaps the class of a block in place."""

    method: ClassVar[str] = "classswap"
    where: ClassVar[str] = "in_block"
    needs: ClassVar[frozenset[str]] = frozenset()
    trains: ClassVar[bool] = False
    zero_cost_ops: ClassVar[dict[str, str]] = {}

    def check(self, info: Any, variant: Variant) -> None:
        pass

    def label(self, variant: Variant) -> str:
        return f"p{variant.position:.4g}-s{variant.num_tokens}"

    def schedule(self, info: Any, variant: Variant, *, norms: bool = True) -> TokenSchedule:
        return get_reducer("tokenlearner").schedule(info, variant, norms=norms)

    def apply(self, model: nn.Module, info: Any, variant: Variant) -> nn.Module:
        block = model.blocks[variant.block_index]
        block.__class__ = type("SwappedBlock", (type(block),), {})
        return model


def test_a_reducer_that_mutates_shared_blocks_is_refused(monkeypatch) -> None:
    monkeypatch.setitem(REDUCERS, "classswap", _ClassSwap())
    variants = [make_variant("tiny"), make_variant("tiny", 0.5, 4, method="classswap")]
    assert variants[1].name == "classswap-p0.5-s4"
    with pytest.raises(RuntimeError, match="mutated the baseline"):
        build_sharing(variants)


def test_variant_names_are_those_of_committed_results() -> None:
    """Committed runs and the CI baseline are keyed by these names: they never change."""
    assert make_variant("vit_b16", 0.25, 8).name == "p0.25-s8"
    assert make_variant("vit_b16", 0.5, 8, version="1.0", fuser=True).name == "p0.5-s8-v1.0-fuser"
    doc = json.loads((ROOT / "results" / "baselines" / "compute.json").read_text())
    for entry in doc["models"]:
        grid = entry["grid"]
        names = {v.name for v in make_variants(
            entry["model"], grid.get("positions"), grid.get("tokens", [8, 16]), version=grid.get("version", "1.1"),
            fuser=grid.get("fuser", False), img_size=grid.get("img_size"), method=grid.get("method", "tokenlearner"),
            frames=grid.get("frames"))}  # fmt: skip
        assert set(entry["variants"]) <= names, entry["model"]


def test_an_unknown_method_is_one_line_with_the_close_names() -> None:
    with pytest.raises(ConfigError, match="did you mean tokenlearner") as e:
        make_variant("tiny", 0.5, 4, method="tokenlerner")
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("method", METHODS)
def test_a_method_is_deterministic_under_a_seed(method: str) -> None:
    x = torch.randn(2, 3, 32, 32)
    outs = []
    for _ in range(2):
        torch.manual_seed(0)
        with torch.no_grad():
            outs.append(build_model(make_variant("tiny", 0.5, 4, method=method, params=PARAMS.get(method)))(x))
    assert torch.equal(*outs)


def test_a_sweep_over_methods_rows_and_figures(tmp_path: Path) -> None:
    """grid.methods: one baseline, every method's grid, a method column, one colour per method."""
    from tlbench import load_results
    from tlbench.config import load_sweep
    from tlbench.study.sweep import run_sweep

    config = load_sweep(ROOT / "sweeps" / "smoke.toml", overrides=[
        f"grid.methods={json.dumps(METHODS)}", "grid.positions=[0, 0.5]",
        "speed.enabled=false", "quality.enabled=false"])  # fmt: skip
    res = run_sweep(config, tmp_path)
    df = load_results(res.run_dir)
    names = set(df["variant"])
    assert "baseline" in names and {"p0-s4", "p0.5-s4", "topk-p0.5-s4", "random-p0-s4"} <= names
    assert len(names) == 1 + 2 * len(METHODS)
    assert df.groupby("variant")["method"].first().drop("baseline").str.len().gt(0).all()
    assert df[df["variant"] == "baseline"]["method"].isna().all()
    assert (res.run_dir / "figures" / "gflops_vs_position.png").is_file()


def test_rows_from_before_methods_are_tokenlearners(tmp_path: Path) -> None:
    from tlbench.results import to_frame

    old = [{"model": "m", "variant": "p0.5-s8", "position": 0.5, "stage": "compute", "metric": "gflops",
            "value": 1.0, "unit": "GFLOPs"},
           {"model": "m", "variant": "baseline", "position": None, "stage": "compute",
            "metric": "gflops", "value": 2.0, "unit": "GFLOPs"}]  # fmt: skip
    df = to_frame(old)
    assert list(df["method"].fillna("-")) == ["tokenlearner", "-"]


def test_a_sweep_file_naming_an_unknown_method_is_one_line(tmp_path: Path) -> None:
    from tlbench.config import load_sweep

    with pytest.raises(ConfigError, match="grid.methods must name distinct methods") as e:
        load_sweep(ROOT / "sweeps" / "smoke.toml", overrides=["grid.methods=['tome2']"])
    assert "\n" not in str(e.value)


def test_every_method_and_token_count_gets_its_own_line_style() -> None:
    import pandas as pd

    from tlbench.report.style import series_palette

    keys = pd.Series([(m, s) for m in METHODS for s in (8, 16)])
    styles = series_palette(keys)
    assert len({(st["color"], st["marker"]) for st in styles.values()}) == len(keys)
    one = series_palette(pd.Series([("tokenlearner", 8), ("tokenlearner", 16)]))
    assert one[("tokenlearner", 8)]["color"] != one[("tokenlearner", 16)]["color"]  # as before


def test_off_the_shelf_inserts_each_reducer_into_the_trained_baseline(tmp_path: Path) -> None:
    """quality.adapt = none: only the baseline trains. Random drop that keeps all N = 16 tokens
    (in order) is the baseline itself: the same accuracy to the bit, which only holds if the
    trained baseline's weights were loaded; keeping 4 is not."""
    from tlbench import load_results
    from tlbench.config import load_sweep
    from tlbench.study.sweep import run_sweep

    config = load_sweep(ROOT / "sweeps" / "smoke.toml", overrides=[
        "grid.methods=['random', 'pool']", "grid.positions=[0.5, 1]", "grid.tokens=[4, 16]",
        "quality.adapt='none'", "speed.enabled=false", "quality.init_reference=false"])  # fmt: skip
    df = load_results(run_sweep(config, tmp_path).run_dir)
    acc = df[df["metric"] == "fewshot_acc"].set_index(["variant", "dataset", "shots", "seed"])["value"]
    for same in ("random-p1-s16", "random-p0.5-s16", "pool-p0.5-s16"):
        assert acc.loc[same].equals(acc.loc["baseline"]), same
    assert not acc.loc["random-p0.5-s4"].equals(acc.loc["baseline"])
    trained = set(df[df["metric"] == "adapt_seconds"]["variant"])
    assert trained == {"baseline"}


def test_off_the_shelf_without_a_baseline_is_refused(tmp_path: Path) -> None:
    from tlbench.config import load_sweep
    from tlbench.study.sweep import run_sweep

    config = load_sweep(ROOT / "sweeps" / "smoke.toml",
                        overrides=["quality.adapt='none'", "grid.baseline=false"])  # fmt: skip
    with pytest.raises(ConfigError, match="trained baseline"):
        run_sweep(config, tmp_path)
    assert not any(tmp_path.rglob("rows.jsonl"))


@pytest.mark.parametrize("command", [
    ["flops", "--model", "tiny", "--positions", "0.5", "--tokens", "4", "--format", "csv"],
    ["bench", "--model", "tiny", "--positions", "0.5", "--tokens", "4", "--rounds", "2", "--format", "csv"],
    ["probe", "--model", "tiny", "--position", "0.5", "--tokens", "4", "--steps", "0",
     "--probe-data", "digits", "--shots", "1", "--seeds", "1"],
])  # fmt: skip
def test_method_option_reaches_every_command(command: list[str]) -> None:
    from typer.testing import CliRunner

    from tlbench.cli import app

    result = CliRunner().invoke(app, [*command, "--method", "evit"])
    assert result.exit_code == 0, result.output
    bad = CliRunner().invoke(app, [*command, "--method", "tomee"])
    assert bad.exit_code == 2 and "unknown token reduction method 'tomee'" in bad.output


@pytest.mark.parametrize("model", MODELS)
def test_counting_part_by_part_equals_counting_the_whole_model(model: str) -> None:
    """The fast path (each distinct module and token count traced once, shared by the variants)
    gives fvcore's whole-model count, operator by operator, for every method and placement."""
    variants = [make_variant(model)] + [v for m in METHODS for v in _variants(model, m)]
    models = build_sharing(variants)
    cache: dict = {}
    for v in variants:
        whole, parts = count_flops(models[v.name], variant=v), count_flops_composed(models[v.name], cache=cache, variant=v)
        assert (parts.by_operator, parts.zero_ops) == (whole.by_operator, whole.zero_ops), v.name
        assert parts.params_m == whole.params_m
    assert len(cache) < sum(len(m.blocks) + 2 for m in models.values()) / 2  # parts are reused
    trained = build_model(variants[1]).train()
    count_flops_composed(trained, variant=variants[1])
    assert all(m.training for m in trained.modules())  # counting leaves the mode as it was


def test_off_the_shelf_with_zero_steps_probes_the_models_own_weights(tmp_path: Path) -> None:
    """adapt = none with 0 steps (a pretrained model's case): nothing trains, nothing is missing."""
    from tlbench import load_results
    from tlbench.config import load_sweep
    from tlbench.study.sweep import run_sweep

    config = load_sweep(ROOT / "sweeps" / "smoke.toml", overrides=[
        "grid.methods=['random']", "grid.positions=[0.5]", "grid.tokens=[16]", "quality.steps=0",
        "quality.adapt='none'", "speed.enabled=false"])  # fmt: skip
    res = run_sweep(config, tmp_path)
    assert not res.failed
    acc = load_results(res.run_dir).query("metric == 'fewshot_acc'")
    acc = acc.set_index(["variant", "dataset", "shots", "seed"])["value"]
    assert acc.loc["random-p0.5-s16"].equals(acc.loc["baseline"])  # all 16 kept: the same model


@pytest.mark.parametrize("method", ["topk", "evit"])
def test_register_tokens_are_not_a_class_token(method: str) -> None:
    """A model with 4 registers and no class token (timm's *_reg4_gap): the score is the mean
    attention received, not register 0's row, and FLOPs still equal the analytic count."""
    name, img = "vit_medium_patch16_reg4_gap_256", 64
    info = model_info(name, img)
    assert (info.num_prefix_tokens, info.class_token) == (4, False)
    v = make_variant(name, 0.5, 4, img_size=img, method=method)
    net = build_model(v, img_size=img, num_classes=info.num_classes)
    assert net.blocks[v.block_index].use_cls is False
    attn, mlp, out = _seen_tokens(net, torch.randn(1, 3, img, img))
    sched = token_schedule(info, v)
    assert (tuple(attn), tuple(mlp), out) == (sched.attn_tokens, sched.mlp_tokens, sched.tokens_out)
    assert count_flops(net, variant=v).flops == analytic_flops(info, v)
