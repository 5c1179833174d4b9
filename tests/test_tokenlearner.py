"""TokenLearner / TokenFuser: shapes, attention maps, identity-at-init of the fuser."""

from __future__ import annotations

import pytest
import torch

from tlbench.reducers.modules import TokenFuser, TokenFuserBlock, TokenLearner, TokenLearnerLayer


@pytest.mark.parametrize("version", ["1.1", "1.0"])
@pytest.mark.parametrize("num_tokens", [1, 8, 16])
def test_tokenlearner_shapes(version: str, num_tokens: int) -> None:
    tl = TokenLearner(32, num_tokens, version, grid_size=(4, 6))
    x = torch.randn(3, 24, 32)  # non-square grid
    assert tl(x).shape == (3, num_tokens, 32)
    assert tl.attention(x).shape == (3, num_tokens, 24)


def test_v11_tokens_are_convex_combinations() -> None:
    tl = TokenLearner(16, 4)
    x = torch.randn(2, 9, 16)
    w = tl.attention(x)
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 4))
    assert (w >= 0).all()
    torch.testing.assert_close(tl(x), w @ x)  # the learned tokens pool the un-normalised inputs


def test_v10_sum_pooling_uses_sigmoid_maps() -> None:
    tl = TokenLearner(16, 4, "1.0", grid_size=(3, 3))
    x = torch.randn(2, 9, 16)
    w = tl.attention(x)
    assert ((w > 0) & (w < 1)).all()
    torch.testing.assert_close(tl(x), w @ x)
    tl.sum_pooling = False
    torch.testing.assert_close(tl(x), w @ x / 9)


def test_attention_maps_stored_on_request() -> None:
    tl = TokenLearner(16, 4)
    x = torch.randn(2, 9, 16)
    tl(x)
    assert tl.last_attention is None
    tl.store_attention = True
    tl(x)
    assert tl.last_attention is not None and tl.last_attention.shape == (2, 4, 9)


def test_v10_needs_a_grid_for_non_square_input() -> None:
    with pytest.raises(ValueError, match="square"):
        TokenLearner(8, 2, "1.0")(torch.randn(1, 6, 8))


def test_layer_keeps_prefix_tokens_untouched() -> None:
    layer = TokenLearnerLayer(TokenLearner(16, 4), num_prefix_tokens=1)
    x = torch.randn(2, 10, 16)
    y = layer(x)
    assert y.shape == (2, 5, 16)
    torch.testing.assert_close(y[:, :1], x[:, :1])


def test_fuser_block_is_identity_on_patches_at_init() -> None:
    block = torch.nn.Identity()  # the fuser's zero init must cancel whatever the block does
    fb = TokenFuserBlock(block, TokenLearner(16, 4), TokenFuser(16, 4), num_prefix_tokens=1)
    x = torch.randn(2, 10, 16)
    y = fb(x)
    assert y.shape == x.shape
    torch.testing.assert_close(y[:, 1:], x[:, 1:])


def _fuser_block(block: torch.nn.Module, time_steps: int, prefix: int = 0) -> TokenFuserBlock:
    torch.manual_seed(0)
    fuser = TokenFuser(16, 4)
    with torch.no_grad():  # the zero init makes the fuser output zero: give it weights
        fuser.mix.weight.normal_(0, 0.5)
        fuser.mix.bias.normal_(0, 0.5)
    return TokenFuserBlock(block, TokenLearner(16, 4), fuser, prefix, time_steps).eval()


@pytest.mark.parametrize("prefix", [0, 1])
def test_fuser_block_is_identity_at_init_on_video(prefix: int) -> None:
    fb = TokenFuserBlock(torch.nn.Identity(), TokenLearner(16, 4), TokenFuser(16, 4), prefix, 3)
    x = torch.randn(2, prefix + 3 * 9, 16)  # [B, P + T*N, C]
    torch.testing.assert_close(fb(x)[:, prefix:], x[:, prefix:])


def test_fuser_block_learns_and_fuses_each_time_step_on_its_own() -> None:
    # With a block that mixes no tokens, all that is left is the learner and the fuser: on video
    # they act per time step, so the layer on T steps equals the image layer on each step.
    fb = _fuser_block(torch.nn.Linear(16, 16), time_steps=3)
    x = torch.randn(2, 3 * 9, 16)  # [B, T*N, C], time-major
    with torch.no_grad():
        joint = fb(x)
        fb.time_steps = 1
        steps = [fb(x[:, i * 9 : (i + 1) * 9]) for i in range(3)]  # each [B, N, C]
    torch.testing.assert_close(joint, torch.cat(steps, dim=1), atol=1e-6, rtol=1e-6)
