"""Multi-layer perceptron: the default model, for classification and regression alike."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from nnlab.errors import OptionError, check_range
from nnlab.models import layers as L


class MLP(nn.Module):
    """Fully connected network: flatten -> [Linear -> (BatchNorm) -> act -> (Dropout)] * H -> Linear.

    With `residual`, each hidden block after the first adds its input to its output,
    h <- h + block(h) (He et al. 2016): the identity path carries the gradient past every
    block unchanged, so a deep stack trains even where the blocks' own gradients shrink.

    Args:
        input_shape: shape of one sample; it is flattened, so images and tables both work.
        num_outputs: classes for classification, targets for regression (given by the dataset).
        hidden_sizes: width of each hidden layer; [] gives a linear model (logistic/softmax
            regression with cross-entropy).
        activation: relu, leaky_relu, tanh, sigmoid or gelu.
        dropout: probability of zeroing a hidden unit during training, in [0, 1).
        batch_norm: normalize each hidden layer's pre-activations over the batch.
        residual: identity skips around hidden blocks 2..H. The skip adds h (B, width) to the
            block's output, so every hidden layer needs the same width, e.g. [64, 64, 64]; the
            first block maps the input to that width and has no skip.

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
        residual: bool = False,
    ) -> None:
        super().__init__()
        check_range("model.dropout", dropout, 0.0, 1.0, high_inclusive=False)
        L.activation(activation)  # fails early on a misspelled name, even with no hidden layer
        for h in hidden_sizes:
            check_range("model.hidden_sizes[*]", h, 1)
        if residual and len(set(hidden_sizes)) > 1:
            equal = ",".join([str(max(hidden_sizes))] * len(hidden_sizes))
            raise OptionError(
                "model.residual=true adds each hidden block's input to its output, so every hidden layer needs "
                f"the same width, but model.hidden_sizes={list(hidden_sizes)}. Use equal widths, e.g. "
                f"model.hidden_sizes=[{equal}], or model.residual=false."
            )
        blocks: list[nn.Module] = [nn.Flatten()]
        width = L.flat_size(tuple(input_shape))
        for i, h in enumerate(hidden_sizes):
            block: list[nn.Module] = [nn.Linear(width, h, bias=not batch_norm)]
            if batch_norm:
                block.append(nn.BatchNorm1d(h))
            block.append(L.activation(activation))
            if dropout > 0:
                block.append(nn.Dropout(dropout))
            if residual and i > 0:
                blocks.append(Residual(nn.Sequential(*block)))
            else:
                blocks.extend(block)  # flat, as before: parameter names (net.1.weight, ...) unchanged
            width = h
        blocks.append(nn.Linear(width, num_outputs))
        self.net = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # (B, *input_shape) -> (B, num_outputs)


class Residual(nn.Module):
    """x + block(x), for a block that keeps the shape of its input."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.block = block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)  # (B, width) -> (B, width)
