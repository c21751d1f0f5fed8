"""Building blocks shared by the model families: activations by name, sizes and shape errors.

Weight initialization, for every family at once, is `nnlab.models.init` (the `init` config group)."""

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


def activation(name: str, key: str = "model.activation") -> nn.Module:
    """A fresh activation module for `name`, one of ACTIVATIONS."""
    check_choice(key, name, ACTIVATIONS)
    return ACTIVATIONS[name]()


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
