"""ToMe's merging maths, proportional attention, its two methods' plans and names, and the
method-parameter plumbing (Variant.params, --param, grid.options). The reducer contract
(schedule == model, fvcore == analytic, sharing) runs in test_reducers.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from tlbench.backbones.vit import model_info
from tlbench.cli import app
from tlbench.errors import ConfigError
from tlbench.measure.flops import analytic_flops, count_flops
from tlbench.reducers import token_schedule
from tlbench.reducers.tome import (
    attention_with_keys,
    merge_tokens,
    once_plan,
    per_block_plan,
    proportional_bias,
)
from tlbench.variants import build_model, build_sharing, make_variant, make_variants

ROOT = Path(__file__).resolve().parents[1]


def _seen_tokens(model: torch.nn.Module, x: torch.Tensor) -> tuple[list[int], list[int], int]:
    """Tokens entering each block's attention and MLP (their norms), and the final norm."""
    from timm.models.vision_transformer import Block

    seen: dict[str, list[int]] = {"attn": [], "mlp": [], "out": []}
    hooks = [model.norm.register_forward_pre_hook(lambda _, a: seen["out"].append(a[0].shape[1]))]
    for m in model.modules():
        if isinstance(m, Block):
            hooks.append(m.norm1.register_forward_pre_hook(lambda _, a: seen["attn"].append(a[0].shape[1])))
            hooks.append(m.norm2.register_forward_pre_hook(lambda _, a: seen["mlp"].append(a[0].shape[1])))
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return seen["attn"], seen["mlp"], seen["out"][0]


@pytest.mark.parametrize("rounds", [(1,), (8,), (8, 4), (8, 4, 2, 1)])
def test_merging_identical_tokens_is_exact(rounds: tuple[int, ...]) -> None:
    v = torch.randn(1, 1, 8)
    x = v.expand(2, 16, 8)
    out, sizes = merge_tokens(x, torch.randn(2, 16, 4), torch.ones(2, 16, 1), rounds)
    assert out.shape == (2, 16 - sum(rounds), 8)
    torch.testing.assert_close(out, v.expand_as(out))
    assert torch.equal(sizes.sum(dim=1), torch.full((2, 1), 16.0))


@pytest.mark.parametrize("rounds", [(3,), (5, 5), (8, 4, 2)])
def test_a_merge_conserves_sizes_and_the_size_weighted_sum(rounds: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    x, sizes = torch.randn(2, 16, 8), torch.rand(2, 16, 1) + 0.5
    out, new = merge_tokens(x, torch.randn(2, 16, 4), sizes, rounds)
    torch.testing.assert_close(new.sum(dim=1), sizes.sum(dim=1))
    torch.testing.assert_close((out * new).sum(dim=1), (x * sizes).sum(dim=1))


def test_the_most_similar_pair_merges_first_and_order_is_kept() -> None:
    """Tokens 0..5 (A = 0, 2, 4; B = 1, 3, 5); token 4 duplicates token 1: they merge, the
    others stay, kept A tokens by position, then B by position."""
    metric = torch.eye(6).unsqueeze(0)
    metric[0, 4] = metric[0, 1]
    x = torch.arange(6.0).view(1, 6, 1)
    out, sizes = merge_tokens(x, metric, torch.ones(1, 6, 1), (1,))
    assert out.flatten().tolist() == [0.0, 2.0, 2.5, 3.0, 5.0]
    assert sizes.flatten().tolist() == [1.0, 1.0, 2.0, 1.0, 1.0]


def test_proportional_attention_with_unit_sizes_is_plain_attention() -> None:
    torch.manual_seed(0)
    net = build_model(make_variant("tiny"))
    attn, x = net.blocks[0].attn, torch.randn(2, 17, 64)
    bias = proportional_bias(torch.ones(2, 16, 1), 1)
    assert bias.shape == (2, 1, 1, 17) and not bias.any()
    with torch.no_grad():
        plain, _ = attention_with_keys(attn, x, None)
        masked, _ = attention_with_keys(attn, x, bias)
        torch.testing.assert_close(masked, plain)
        torch.testing.assert_close(plain, attn(x))


def test_prefix_tokens_never_merge() -> None:
    """Merging in the last block happens after its attention and the MLP is per token: the class
    token leaves exactly as in the baseline."""
    variants = [make_variant("tiny"), make_variant("tiny", 0.75, 1, method="tome")]
    models = build_sharing(variants)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        base = models["baseline"].forward_features(x)
        merged = models["tome-p0.75-s1"].forward_features(x)
    assert merged.shape == (2, 2, 64)
    torch.testing.assert_close(merged[:, 0], base[:, 0])


def test_tome_r_with_r_zero_is_the_baseline() -> None:
    variants = [make_variant("tiny"), make_variant("tiny", 0, method="tome_r", params={"r": 0})]
    models = build_sharing(variants)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(models["tome_r-p0-r0"](x), models["baseline"](x))
    assert variants[1].num_tokens == 16


def test_plans_merge_at_most_half_per_round() -> None:
    assert once_plan(16, 4) == (8, 4) and once_plan(16, 1) == (8, 4, 2, 1) and once_plan(16, 16) == ()
    assert per_block_plan(16, 100, 4) == ((8,), (4,), (2,), (1,))
    assert per_block_plan(16, 3, 4) == ((3,), (3,), (3,), (3,))
    assert per_block_plan(4, 2, 4) == ((2,), (1,), (), ())
    info = model_info("tiny")
    huge = make_variant("tiny", 0, method="tome_r", params={"r": 100})
    assert huge.num_tokens == 1
    assert token_schedule(info, huge).mlp_tokens == (9, 5, 3, 2)


def test_names_and_derived_token_counts_are_stable() -> None:
    once = make_variant("vit_b16", 0.5, 8, method="tome")
    assert once.name == "tome-p0.5-s8" and once.params == ()
    paper = make_variant("vit_b16", 0, method="tome_r", params={"r": 13})
    assert paper.name == "tome_r-p0-r13" and paper.params == (("r", 13),)
    assert paper.num_tokens == 196 - 12 * 13 and paper.param("r") == 13
    assert len({paper, make_variant("vit_b16", 0, 99, method="tome_r", params={"r": 13})}) == 1
    with pytest.raises(AttributeError):
        paper.params = ()  # frozen
    assert make_variant("vit_b16", 0.25, 8).name == "p0.25-s8"  # methods without parameters


def test_make_variants_takes_a_parameter_grid() -> None:
    vs = make_variants("tiny", [0, 0.5], [4, 8], baseline=False, method="tome_r", params={"r": [2, 3]})
    assert [v.name for v in vs] == ["tome_r-p0-r3", "tome_r-p0-r2", "tome_r-p0.5-r3", "tome_r-p0.5-r2"]


@pytest.mark.parametrize(("method", "params", "match"), [
    ("tome", {"r": 2}, "tome has no parameter 'r'; it takes none"),
    ("tome_r", {"s": 2}, "tome_r has no parameter 's'; it takes r"),
    ("tome_r", {}, "tome_r needs its parameter r"),
    ("tome_r", {"r": -1}, "tome_r needs its parameter r"),
    ("topk", {"r": 2}, "topk has no parameter 'r'"),
])  # fmt: skip
def test_bad_parameters_are_one_line(method: str, params: dict[str, int], match: str) -> None:
    with pytest.raises(ConfigError, match=match) as e:
        make_variant("tiny", 0.5, 4, method=method, params=params)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("method", ["tome", "tome_r"])
def test_register_tokens_are_never_merged(method: str) -> None:
    """4 registers, no class token: token counts follow the schedule and FLOPs are exact."""
    name, img = "vit_medium_patch16_reg4_gap_256", 64
    info = model_info(name, img)
    v = make_variant(name, 0.5, 4, img_size=img, method=method, params={"r": 3} if method == "tome_r" else None)
    net = build_model(v, img_size=img, num_classes=info.num_classes)
    attn, mlp, out = _seen_tokens(net, torch.randn(1, 3, img, img))
    sched = token_schedule(info, v)
    assert (tuple(attn), tuple(mlp), out) == (sched.attn_tokens, sched.mlp_tokens, sched.tokens_out)
    assert count_flops(net, variant=v).flops == analytic_flops(info, v)


@pytest.mark.parametrize("args", [
    ["--method", "tome", "--positions", "0.5", "--tokens", "4"],
    ["--method", "tome_r", "--param", "r=13", "--positions", "0"],
    ["--method", "tome_r", "--param", "r=2", "--param", "r=13", "--positions", "0,0.5"],
])  # fmt: skip
def test_flops_command_counts_tome(args: list[str]) -> None:
    result = CliRunner().invoke(app, ["flops", "--model", "tiny", *args, "--format", "csv"])
    assert result.exit_code == 0, result.output
    assert "tome" in result.output


@pytest.mark.parametrize(("param", "match"), [
    ("r=x", "--param expects NAME=INTEGER"),
    ("q=3", "tome_r has no parameter 'q'"),
])  # fmt: skip
def test_a_bad_param_on_the_command_line_is_one_line(param: str, match: str) -> None:
    result = CliRunner().invoke(app, ["flops", "--model", "tiny", "--method", "tome_r", "--param", param])
    assert result.exit_code == 2 and match in result.output and "Traceback" not in result.output


def test_sweep_option_tables_give_a_grid_and_are_checked() -> None:
    from tlbench.config import load_sweep
    from tlbench.study.sweep import expand

    smoke = ROOT / "sweeps" / "smoke.toml"
    config = load_sweep(smoke, ["grid.methods=['tome_r']", "grid.positions=[0]", "grid.options.tome_r.r=[2, 4]"])
    assert [v.name for v in expand(config)] == ["baseline", "tome_r-p0-r4", "tome_r-p0-r2"]
    default = load_sweep(smoke, ["grid.methods=['tome_r']", "grid.positions=[0]"])
    assert [v.name for v in expand(default)] == ["baseline", "tome_r-p0-r13"]  # sweep_defaults
    with pytest.raises(ConfigError, match="options.tome_r.k is not a parameter of tome_r"):
        load_sweep(smoke, ["grid.options.tome_r.k=[2]"])
    with pytest.raises(ConfigError, match="unknown method 'tomr'"):
        load_sweep(smoke, ["grid.options.tomr.r=[2]"])
    with pytest.raises(ConfigError, match="must be an integer or a list of integers"):
        load_sweep(smoke, ["grid.options.tome_r.r=['a']"])


def test_manifests_list_params_only_when_set() -> None:
    from tlbench.config import load_sweep
    from tlbench.study.manifest import _variant_record

    assert "params" not in _variant_record(make_variant("tiny", 0.5, 4))
    record = _variant_record(make_variant("tiny", 0, method="tome_r", params={"r": 2}))
    assert record["params"] == (("r", 2),) and record["name"] == "tome_r-p0-r2"
    assert "options" in load_sweep(None).grid.__dataclass_fields__


@pytest.mark.parametrize("command", [
    ["bench", "--model", "tiny", "--positions", "0", "--rounds", "2", "--format", "csv"],
    ["probe", "--model", "tiny", "--position", "0", "--steps", "0", "--probe-data", "digits",
     "--shots", "1", "--seeds", "1"],
])  # fmt: skip
def test_param_reaches_bench_and_probe(command: list[str]) -> None:
    result = CliRunner().invoke(app, [*command, "--method", "tome_r", "--param", "r=2"])
    assert result.exit_code == 0, result.output
    assert "tome_r-p0-r2" in result.output


def test_probe_takes_each_param_once() -> None:
    args = ["probe", "--model", "tiny", "--method", "tome_r", "--param", "r=2", "--param", "r=3"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "give --param r once" in result.output


def test_a_resume_sees_changed_option_tables() -> None:
    from tlbench.config import config_diff, load_sweep

    smoke = ROOT / "sweeps" / "smoke.toml"
    plain, with_r = load_sweep(smoke), load_sweep(smoke, ["grid.options.tome_r.r=[2, 4]"])
    assert config_diff(plain, with_r) == ["grid.options.tome_r.r: None -> [2, 4]"]
    assert config_diff(with_r, plain) == ["grid.options.tome_r.r: [2, 4] -> None"]
