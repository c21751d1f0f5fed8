"""nnlab.models: the MLP's shapes and layers, every activation and init scheme, errors that name the key."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from nnlab.errors import ConfigValueError
from nnlab.models.init import SCHEMES, init_weights
from nnlab.models.layers import ACTIVATIONS
from nnlab.models.mlp import MLP


def layers(model: nn.Module, kind: type) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, kind)]


@pytest.mark.parametrize(
    "input_shape, num_outputs",
    [((1, 8, 8), 10), ((4,), 3), ((30,), 2), ((10,), 1), ((3, 5, 5), 7)],
)
def test_output_shape(input_shape: tuple, num_outputs: int) -> None:
    model = MLP(input_shape=input_shape, num_outputs=num_outputs, hidden_sizes=[16, 8])
    out = model(torch.randn(5, *input_shape))
    assert out.shape == (5, num_outputs)
    assert layers(model, nn.Linear)[0].in_features == math.prod(input_shape)


def test_no_hidden_layers_is_a_single_linear() -> None:
    model = MLP(input_shape=(1, 8, 8), num_outputs=10, hidden_sizes=[], dropout=0.5, batch_norm=True)
    (linear,) = layers(model, nn.Linear)
    assert (linear.in_features, linear.out_features) == (64, 10)
    assert not layers(model, nn.BatchNorm1d) and not layers(model, nn.Dropout)
    assert sum(p.numel() for p in model.parameters()) == 64 * 10 + 10


def test_hidden_layers_have_the_requested_widths_and_blocks() -> None:
    model = MLP(input_shape=(4,), num_outputs=3, hidden_sizes=[32, 16], activation="tanh", dropout=0.1, batch_norm=True)
    linears = layers(model, nn.Linear)
    assert [(m.in_features, m.out_features) for m in linears] == [(4, 32), (32, 16), (16, 3)]
    assert [m.num_features for m in layers(model, nn.BatchNorm1d)] == [32, 16]
    assert len(layers(model, nn.Tanh)) == 2 and len(layers(model, nn.Dropout)) == 2
    # A bias before batch norm is cancelled by its mean subtraction: the hidden Linears have none.
    assert [m.bias is None for m in linears] == [True, True, False]


def test_dropout_is_off_in_eval_mode() -> None:
    model = MLP(input_shape=(4,), num_outputs=3, hidden_sizes=[64], dropout=0.5).eval()
    x = torch.randn(8, 4)
    assert torch.equal(model(x), model(x))
    model.train()
    assert not torch.equal(model(x), model(x))


# zeros is left out: from all-zero weights no gradient reaches the hidden layers (nnlab.models.init).
@pytest.mark.parametrize("init", [s for s in SCHEMES if s != "zeros"])
@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_every_activation_and_init_trains(activation: str, init: str) -> None:
    torch.manual_seed(0)
    model = MLP(input_shape=(1, 8, 8), num_outputs=10, hidden_sizes=[32, 16], activation=activation)
    bias = "default" if init == "default" else "zeros"
    init_weights(model, init, bias=bias, nonlinearity=activation)
    assert len(layers(model, ACTIVATIONS[activation])) == 2
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    assert torch.isfinite(loss)
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"{name} gets no gradient"
    if init != "default":  # bias=zeros starts them at zero
        assert all(torch.all(m.bias == 0) for m in layers(model, nn.Linear) if m.bias is not None)


# Weight std of a 512 -> 512 relu layer under each scheme: 2/fan_in for He (kaiming) and
# gain^2 * 2/(fan_in + fan_out) for Glorot (xavier) with the relu gain sqrt(2): both sqrt(2/512).
@pytest.mark.parametrize("init", ["xavier_uniform", "xavier_normal", "kaiming_normal", "kaiming_uniform"])
def test_init_scale(init: str) -> None:
    torch.manual_seed(0)
    model = MLP(input_shape=(512,), num_outputs=512, hidden_sizes=[512], activation="relu")
    init_weights(model, init, nonlinearity="relu")
    weight = layers(model, nn.Linear)[0].weight
    assert weight.std().item() == pytest.approx(math.sqrt(2 / 512), rel=0.03)


def test_orthogonal_init() -> None:
    model = MLP(input_shape=(64,), num_outputs=10, hidden_sizes=[32], activation="tanh")
    init_weights(model, "orthogonal", nonlinearity="tanh")
    weight = layers(model, nn.Linear)[0].weight  # (32, 64): orthogonal rows, scaled by the tanh gain
    gain = nn.init.calculate_gain("tanh")
    assert torch.allclose(weight @ weight.T, gain**2 * torch.eye(32), atol=1e-4)


def test_bad_activation_names_the_key_and_the_choices() -> None:
    with pytest.raises(ConfigValueError) as info:
        MLP(input_shape=(4,), num_outputs=3, hidden_sizes=[8], activation="rleu")
    message = str(info.value)
    assert "model.activation" in message and "'rleu'" in message
    assert "Did you mean 'relu'?" in message
    assert all(name in message for name in ACTIVATIONS)


def test_bad_activation_is_rejected_without_hidden_layers() -> None:
    with pytest.raises(ConfigValueError, match="model.activation"):
        MLP(input_shape=(4,), num_outputs=3, hidden_sizes=[], activation="rleu")


def test_bad_init_names_the_key_and_the_choices() -> None:
    with pytest.raises(ConfigValueError) as info:
        init_weights(MLP(input_shape=(4,), num_outputs=3, hidden_sizes=[8]), "xavier_unifrom")
    message = str(info.value)
    assert "init.scheme" in message and "Did you mean 'xavier_uniform'?" in message
    assert all(name in message for name in SCHEMES)


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"dropout": 1.0}, "model.dropout"),
        ({"dropout": -0.1}, "model.dropout"),
        ({"hidden_sizes": [8, 0]}, "model.hidden_sizes"),
    ],
)
def test_bad_sizes_name_the_key(kwargs: dict, key: str) -> None:
    with pytest.raises(ConfigValueError, match=key):
        MLP(input_shape=(4,), num_outputs=3, **kwargs)
