"""nnlab.models.attention and nnlab.models.transformer: the attention blocks, the encoder on each
kind of input (text, signals, images as a ViT), padding that changes nothing, attention maps
that match what forward computes, and errors that name the key."""

from __future__ import annotations

import math

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from helpers import CONFIG_DIR
from nnlab.errors import ConfigValueError, DataMismatchError
from nnlab.models.attention import Block, SelfAttention, sinusoidal_positions
from nnlab.models.transformer import Transformer

TINY = {"d_model": 16, "num_heads": 2, "num_layers": 2, "mlp_ratio": 2}
VOCAB = 11


def tokens(batch: int = 3, length: int = 7, seed: int = 0) -> torch.Tensor:
    """Token ids 1..VOCAB-1 (no padding), (batch, length)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, VOCAB, (batch, length), generator=g)


def assert_trains(model: nn.Module, x: torch.Tensor, num_outputs: int) -> None:
    """Output (B, num_outputs), finite, and a non-zero gradient for every parameter."""
    out = model.train()(x)
    assert out.shape == (len(x), num_outputs)
    assert torch.isfinite(out).all()
    out.square().mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"{name} gets no gradient"


# ---- the blocks -----------------------------------------------------------------------------------


def test_sinusoidal_positions_follow_the_formula() -> None:
    pe = sinusoidal_positions(50, 8)
    assert pe.shape == (50, 8)
    p, i = 7, 2  # features 2i and 2i + 1 of position p
    angle = p / 10000 ** (2 * i / 8)
    assert pe[p, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-6)
    assert pe[p, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)
    assert torch.equal(pe[0, 0::2], torch.zeros(4)) and torch.equal(pe[0, 1::2], torch.ones(4))
    assert sinusoidal_positions(5, 7).shape == (5, 7)  # an odd width: one sine more than cosines


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("padded", [False, True])
def test_attention_weights_are_what_forward_applies(causal: bool, padded: bool) -> None:
    """forward (the fused kernel) equals proj(weights @ V): `weights` shows the real attention."""
    torch.manual_seed(0)
    attn = SelfAttention(16, 4, causal=causal).eval()
    x = torch.randn(2, 6, 16)
    pad = torch.tensor([[False] * 6, [False] * 4 + [True] * 2]) if padded else None
    w = attn.weights(x, pad)  # (B, heads, T, T)
    assert w.shape == (2, 4, 6, 6)
    assert torch.allclose(w.sum(-1), torch.ones(2, 4, 6), atol=1e-5)
    _, _, v = attn._heads(x)
    expected = attn.proj((w @ v).transpose(1, 2).reshape(2, 6, 16))
    assert torch.allclose(attn(x, pad), expected, atol=1e-5)
    if causal:
        assert torch.all(w.triu(diagonal=1) == 0)
    if padded:  # the real tokens of row 1 give padding no weight
        assert torch.all(w[1, :, :4, 4:] == 0)


def test_a_row_of_padding_only_gives_no_nan() -> None:
    attn = SelfAttention(8, 2, causal=True)
    x = torch.randn(1, 4, 8)
    pad = torch.ones(1, 4, dtype=torch.bool)
    assert torch.isfinite(attn(x, pad)).all() and torch.isfinite(attn.weights(x, pad)).all()


def test_block_is_pre_norm_residual() -> None:
    """With both branches' last layers zeroed, the block is the identity: x passes unchanged."""
    block = Block(8, 2, mlp_ratio=3)
    assert block.mlp[0].out_features == 24 and isinstance(block.mlp[1], nn.GELU)
    for layer in (block.attn.proj, block.mlp[2]):
        nn.init.zeros_(layer.weight)
        nn.init.zeros_(layer.bias)
    x = torch.randn(2, 5, 8)
    assert torch.equal(block(x), x)


# ---- the encoder on each kind of input ------------------------------------------------------------


@pytest.mark.parametrize("pool", ["cls", "mean"])
@pytest.mark.parametrize("positions", ["learned", "sinusoidal"])
def test_trains_on_tokens(pool: str, positions: str) -> None:
    torch.manual_seed(0)
    model = Transformer((9,), 4, vocab_size=VOCAB, pool=pool, positions=positions, **TINY)
    assert isinstance(model.embed, nn.Embedding) and model.embed.padding_idx == 0
    assert torch.all(model.embed.weight[0] == 0)  # PAD embeds to zeros
    x = tokens(length=9)
    x[0, 6:] = 0
    assert_trains(model, x, 4)


@pytest.mark.parametrize(
    "input_shape, patch_size, num_tokens",
    [
        ((1, 40), 1, 40),  # MNIST-1D: a token per step
        ((2, 12), 1, 12),  # the adding problem: (value, marker) per step
        ((3, 40), 4, 10),
        ((1, 8, 8), 2, 16),  # a tiny ViT on digits
        ((3, 12, 8), 4, 6),  # 3 x 2 patches
    ],
)
@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_trains_on_signals_and_images(input_shape: tuple, patch_size: int, num_tokens: int, pool: str) -> None:
    torch.manual_seed(0)
    model = Transformer(input_shape, 3, patch_size=patch_size, pool=pool, **TINY)
    conv = nn.Conv1d if len(input_shape) == 2 else nn.Conv2d
    assert type(model.embed) is conv and model.embed.stride[0] == patch_size
    x = torch.randn(2, *input_shape)
    assert_trains(model, x, 3)
    T = num_tokens + (pool == "cls")  # [CLS] comes first
    assert [m.shape for m in model.attention_maps(x)] == [(2, 2, T, T)] * 2  # one per layer


def test_image_patches_are_tokens_in_row_major_order() -> None:
    """Token r * (W / p) + c is patch (r, c): changing one patch changes that token alone."""
    model = Transformer((1, 8, 8), 3, patch_size=2, pool="mean", **TINY)
    x = torch.randn(1, 1, 8, 8)
    before = model.embed(x).flatten(2).transpose(1, 2)  # (1, 16, C), as _tokens lays them out
    x2 = x.clone()
    x2[0, 0, 4:6, 2:4] += 1.0  # patch (2, 1)
    after = model.embed(x2).flatten(2).transpose(1, 2)
    changed = (before - after).abs().sum(-1)[0].nonzero().flatten().tolist()
    assert changed == [2 * 4 + 1]


@pytest.mark.parametrize("pool", ["cls", "mean"])
@pytest.mark.parametrize("positions", ["learned", "sinusoidal"])
def test_padding_does_not_change_the_output(pool: str, positions: str) -> None:
    """Appending PAD ids (and sequences of different real lengths in one batch) leaves every
    sequence's output as it was: pads are masked from attention and from the mean."""
    torch.manual_seed(0)
    model = Transformer((16,), 5, vocab_size=VOCAB, pool=pool, positions=positions, **TINY).eval()
    x = tokens(length=8)
    x[1, 5:] = 0  # row 1 has 5 real tokens
    padded = torch.cat([x, torch.zeros(3, 6, dtype=torch.long)], dim=1)
    assert torch.allclose(model(x), model(padded), atol=1e-5)
    assert torch.allclose(model(x[1:2, :5]), model(x)[1:2], atol=1e-5)


def test_attention_maps_rows_sum_to_one_and_skip_padding() -> None:
    torch.manual_seed(0)
    model = Transformer((8,), 2, vocab_size=VOCAB, pool="cls", **TINY).train()
    x = tokens(length=8)
    x[0, 5:] = 0
    maps = model.attention_maps(x)
    assert model.training  # restored
    assert len(maps) == 2 and all(m.shape == (3, 2, 9, 9) for m in maps)  # [CLS] + 8 tokens
    for m in maps:
        assert not m.requires_grad
        assert torch.allclose(m.sum(-1), torch.ones_like(m[..., 0]), atol=1e-5)
        assert torch.all(m[0, :, :6, 6:] == 0)  # [CLS] and the 5 real tokens never read the pads


def test_sinusoidal_positions_are_a_buffer_not_a_weight() -> None:
    model = Transformer((1, 40), 3, positions="sinusoidal", **TINY)
    assert "pos" not in dict(model.named_parameters()) and "pos" not in model.state_dict()
    assert model.pos.shape == (1, 41, 16)  # [CLS] + 40 steps
    assert torch.equal(model.pos[0], sinusoidal_positions(41, 16))
    assert "pos" in dict(Transformer((1, 40), 3, **TINY).named_parameters())  # learned: trained


def test_vit_config_is_a_tiny_vit_on_digits() -> None:
    model = instantiate(OmegaConf.load(CONFIG_DIR / "model" / "vit.yaml"), input_shape=(1, 8, 8), num_outputs=10)
    assert isinstance(model, Transformer) and model.embed.kernel_size == (2, 2)
    assert model.pos.shape[1] == 16 + 1
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 10)


# ---- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"d_model": 30, "num_heads": 4}, r"model.d_model=30 is not divisible by model.num_heads=4"),
        ({"num_heads": 0}, "model.num_heads"),
        ({"num_layers": 0}, "model.num_layers"),
        ({"mlp_ratio": 0}, "model.mlp_ratio"),
        ({"dropout": 1.0}, "model.dropout"),
        ({"positions": "rope"}, "model.positions"),
        ({"pool": "max"}, "model.pool"),
        ({"patch_size": 0}, "model.patch_size"),
    ],
)
def test_bad_values_name_the_key(kwargs: dict, key: str) -> None:
    with pytest.raises(ConfigValueError, match=key):
        Transformer((1, 40), 3, **kwargs)


def test_a_patch_that_does_not_tile_the_sample_says_which_fit() -> None:
    with pytest.raises(ConfigValueError) as info:
        Transformer((1, 40), 3, patch_size=3)
    message = str(info.value)
    assert "model.patch_size=3 does not divide" in message and "length 40" in message
    assert "1, 2, 4, 5, 8, 10" in message
    with pytest.raises(ConfigValueError, match="height and width 8x6"):
        Transformer((1, 8, 6), 3, patch_size=4)


def test_tabular_data_and_patched_text_are_refused() -> None:
    with pytest.raises(DataMismatchError) as info:
        Transformer((10,), 1)
    message = str(info.value)
    assert message.startswith("The TRANSFORMER needs") and "(10,) (tabular)" in message and "model=mlp" in message
    with pytest.raises(ConfigValueError, match="model.patch_size=1"):
        Transformer((10,), 2, vocab_size=VOCAB, patch_size=2)
