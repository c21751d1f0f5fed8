"""Recurrent networks (vanilla RNN, LSTM, GRU) that read a sequence and give one output vector."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from nnlab.errors import ConfigValueError, check_choice, check_range
from nnlab.models import layers as L

CELLS: dict[str, type[nn.RNNBase]] = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}
READOUTS = ("last", "mean")


class RNN(nn.Module):
    """Recurrent network, many-to-one: read T steps, then map a summary to `num_outputs`.

    At each step t the cell updates a hidden state from the step's features and the previous
    state, h_t = f(x_t, h_{t-1}), with the same weights at every step. The readout turns the
    states into one vector: `last` takes the final state (for a bidirectional network, the
    forward direction's final state and the backward direction's, which ended at step 0),
    `mean` averages the top layer's outputs over all steps. A Linear layer maps it to
    `num_outputs`: classes for sequence classification, the horizon for forecasting.

    Cells:
        rnn: h_t = tanh(W x_t + U h_{t-1} + b). Its gradient is multiplied by U at every step,
            so it vanishes (or explodes) over long sequences: fine for ~10 steps, a baseline.
        lstm: a cell state updated additively through input, forget and output gates, so
            gradients survive hundreds of steps. The usual choice.
        gru: two gates instead of three, 3/4 of the LSTM's weights; often as good and faster.

    How samples become sequences (channels-first data):
        (C, L) signal or sequence -> L steps of C features.
        (C, H, W) image -> H steps (its rows, top to bottom) of C*W features: the classic
            "row-by-row MNIST" (28 steps of 28 pixels).
        (F,) tabular -> refused: there is no order to recur over; use the MLP.

    Rules of thumb: hidden_size 64-256, one or two layers; bidirectional helps classification
    (the whole sequence is known) but not forecasting, where "last" should be the newest step.

    Args:
        input_shape: (C, L) or (C, H, W), given by the dataset.
        num_outputs: classes for classification, targets (or the horizon) for regression.
        cell: rnn, lstm or gru.
        hidden_size: width of the hidden state (per direction).
        num_layers: stacked recurrent layers; each reads the outputs of the one below.
        bidirectional: add a second network reading the sequence backwards; the readout then
            has 2 * hidden_size features.
        dropout: probability of zeroing the outputs of every layer but the last, in [0, 1).
            It acts only between stacked layers, so it must be 0 when num_layers is 1 (torch
            would warn and ignore it; here it is an error, so a setting never silently does
            nothing).
        readout: last or mean, see above.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_outputs: int,
        cell: str = "lstm",
        hidden_size: int = 128,
        num_layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
        readout: str = "last",
    ) -> None:
        super().__init__()
        check_choice("model.cell", cell, CELLS)
        check_range("model.hidden_size", hidden_size, 1)
        check_range("model.num_layers", num_layers, 1)
        check_range("model.dropout", dropout, 0.0, 1.0, high_inclusive=False)
        check_choice("model.readout", readout, READOUTS)
        if dropout > 0 and num_layers == 1:
            raise ConfigValueError(
                f"model.dropout={dropout} has no effect with model.num_layers=1: an RNN's dropout acts "
                "between stacked layers. Set model.num_layers=2 or more, or model.dropout=0."
            )
        if len(input_shape) not in (2, 3):
            needs = "sequences (C, L) or images (C, H, W), read row by row"
            raise L.input_shape_error(cell, needs, "sequences, signals or images", input_shape)

        self.reads_rows = len(input_shape) == 3
        if self.reads_rows:
            channels, _, width = input_shape
            input_size = int(channels) * int(width)  # one row of every channel per step
        else:
            input_size = int(input_shape[0])
        self.cell, self.readout = cell, readout
        self.directions = 2 if bidirectional else 1
        self.rnn = CELLS[cell](
            input_size, hidden_size, num_layers, batch_first=True, dropout=dropout, bidirectional=bidirectional
        )
        self.head = nn.Linear(self.directions * hidden_size, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.reads_rows:
            x = x.permute(0, 2, 1, 3).flatten(2)  # (B, C, H, W) -> (B, H, C, W) -> (B, T=H, C*W)
        else:
            x = x.transpose(1, 2)  # (B, C, L) -> (B, T=L, C)
        out, state = self.rnn(x)  # out: (B, T, D*hidden), the top layer's output at every step
        h_n = state[0] if self.cell == "lstm" else state  # (layers*D, B, hidden); the LSTM adds c_n
        if self.readout == "last":
            # The top layer's final state per direction (the backward one's "final" is step 0).
            summary = h_n[-self.directions :].transpose(0, 1).flatten(1)  # (D, B, hidden) -> (B, D*hidden)
        else:
            summary = out.mean(dim=1)  # (B, D*hidden)
        return self.head(summary)  # (B, num_outputs)
