"""Rosenblatt's perceptron: linear threshold units, trained by the perceptron rule (no gradients)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from nnlab.errors import DataMismatchError, check_choice
from nnlab.models import layers as L


class Perceptron(nn.Module):
    """Threshold units s = w.x + b; the prediction is the unit's sign (binary) or, one-vs-rest,
    the class whose unit scores highest (multiclass).

    A binary problem uses a single unit (class 1 when s >= 0); K > 2 classes use K units, each
    separating its class from the rest. The weights are updated by
    `nnlab.tasks.perceptron.PerceptronRule`, not by backpropagation, so they carry no gradient.

    Args:
        input_shape: shape of one sample (flattened).
        num_outputs: number of classes.
        init: "zeros" (the textbook start; the rule's result is then independent of scale) or
            "normal" (small random weights, std 0.01).
    """

    def __init__(self, input_shape: Sequence[int], num_outputs: int, init: str = "zeros") -> None:
        super().__init__()
        if num_outputs < 2:
            raise DataMismatchError(
                f"the perceptron is a classifier, but the dataset asks for {num_outputs} output(s): a "
                "regression target. Choose a classification dataset (e.g. data=blobs, data=iris, "
                "data=circles), or model=mlp for regression."
            )
        check_choice("model.init", init, ["zeros", "normal"])
        units = 1 if num_outputs == 2 else num_outputs
        self.num_classes = num_outputs
        self.weight = nn.Parameter(torch.zeros(units, L.flat_size(tuple(input_shape))), requires_grad=False)
        self.bias = nn.Parameter(torch.zeros(units), requires_grad=False)
        if init == "normal":
            nn.init.normal_(self.weight, std=0.01)

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.weight.T + self.bias  # (B, units)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores (B, K) whose argmax is the prediction: [0, s] for a single binary unit."""
        s = self.scores(x)
        return torch.cat([torch.zeros_like(s), s], 1) if s.shape[1] == 1 else s
