"""Building blocks shared by the model families: activations by name and weight initialization."""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import nn

from nnlab.errors import DataMismatchError, check_choice

# What a sample shape means, by its number of dimensions (samples are channels-first).
SHAPE_KINDS = {1: "tabular", 2: "a signal or sequence (C, L)", 3: "an image (C, H, W)"}

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "gelu": nn.GELU,
}

INITS = ("default", "xavier", "xavier_normal", "kaiming", "kaiming_uniform", "he", "orthogonal")


def activation(name: str, key: str = "model.activation") -> nn.Module:
    """A fresh activation module for `name`, one of ACTIVATIONS."""
    check_choice(key, name, ACTIVATIONS)
    return ACTIVATIONS[name]()


def init_weights(module: nn.Module, scheme: str, nonlinearity: str = "relu") -> None:
    """Initialize every Linear/Conv weight in `module` by `scheme`; biases start at zero.

    - default: PyTorch's own (kaiming-uniform with a=sqrt(5), i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in))).
    - xavier / xavier_normal (Glorot): Var(w) = gain^2 * 2 / (fan_in + fan_out), keeps activation
      variance constant through tanh/sigmoid layers.
    - kaiming / he (normal) and kaiming_uniform: Var(w) = 2 / fan_in for ReLU, compensating for
      ReLU zeroing half its inputs.
    - orthogonal: a (scaled) orthogonal matrix; preserves norms exactly in linear nets.
    The gain follows the activation (`nn.init.calculate_gain`).
    """
    check_choice("model.init", scheme, INITS)
    if scheme == "default":
        return
    relu_like = nonlinearity in ("relu", "leaky_relu", "gelu")
    gain_name = {"gelu": "relu"}.get(nonlinearity, nonlinearity)
    gain = nn.init.calculate_gain(gain_name) if gain_name in ACTIVATIONS else 1.0
    for m in module.modules():
        if not isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.ConvTranspose2d)):
            continue
        w = m.weight
        if scheme == "xavier":
            nn.init.xavier_uniform_(w, gain=gain)
        elif scheme == "xavier_normal":
            nn.init.xavier_normal_(w, gain=gain)
        elif scheme in ("kaiming", "he"):
            nn.init.kaiming_normal_(w, nonlinearity="relu" if relu_like else "linear")
        elif scheme == "kaiming_uniform":
            nn.init.kaiming_uniform_(w, nonlinearity="relu" if relu_like else "linear")
        elif scheme == "orthogonal":
            nn.init.orthogonal_(w, gain=gain)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


def flat_size(shape: tuple[int, ...]) -> int:
    return math.prod(shape)


def input_shape_error(model: str, needs: str, data_kinds: str, input_shape: Sequence[int]) -> DataMismatchError:
    """The error of a model built for data of the wrong kind, e.g. a CNN on tabular features.

    The model knows the sample shape but not the dataset's name, so the message says "the
    dataset", gives the shape, and points at both ways out: another model or another `data=`.
    """
    shape = tuple(int(s) for s in input_shape)
    kind = SHAPE_KINDS.get(len(shape), f"{len(shape)}-D")
    fix = "Use model=mlp or model=linear for tabular data, or choose" if len(shape) == 1 else "Choose"
    return DataMismatchError(
        f"The {model.upper()} needs {needs}, but the dataset gives samples of shape {shape} ({kind}). "
        f"{fix} a dataset of {data_kinds} with data=<name>."
    )
