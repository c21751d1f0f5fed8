"""Multi-layer perceptron: the default model, for classification and regression alike."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from nnlab.errors import check_range
from nnlab.models import layers as L


class MLP(nn.Module):
    """Fully connected network: flatten -> [Linear -> (BatchNorm) -> act -> (Dropout)] * H -> Linear.

    Args:
        input_shape: shape of one sample; it is flattened, so images and tables both work.
        num_outputs: classes for classification, targets for regression (given by the dataset).
        hidden_sizes: width of each hidden layer; [] gives a linear model (logistic/softmax
            regression with cross-entropy).
        activation: relu, leaky_relu, tanh, sigmoid or gelu.
        dropout: probability of zeroing a hidden unit during training, in [0, 1).
        batch_norm: normalize each hidden layer's pre-activations over the batch.

    Weights start from PyTorch's defaults; the `init` config group re-draws them (e.g.
    `init=kaiming_normal`), see `nnlab.models.init`.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_outputs: int,
        hidden_sizes: Sequence[int] = (256, 128),
        activation: str = "relu",
        dropout: float = 0.0,
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        check_range("model.dropout", dropout, 0.0, 1.0, high_inclusive=False)
        L.activation(activation)  # fails early on a misspelled name, even with no hidden layer
        for h in hidden_sizes:
            check_range("model.hidden_sizes[*]", h, 1)
        blocks: list[nn.Module] = [nn.Flatten()]
        width = L.flat_size(tuple(input_shape))
        for h in hidden_sizes:
            blocks.append(nn.Linear(width, h, bias=not batch_norm))
            if batch_norm:
                blocks.append(nn.BatchNorm1d(h))
            blocks.append(L.activation(activation))
            if dropout > 0:
                blocks.append(nn.Dropout(dropout))
            width = h
        blocks.append(nn.Linear(width, num_outputs))
        self.net = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # (B, *input_shape) -> (B, num_outputs)
