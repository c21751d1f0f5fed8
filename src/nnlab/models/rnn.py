"""Recurrent networks (vanilla RNN, LSTM, GRU) that read a sequence (signal, image rows or text) and
give one output vector, or one per step."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from nnlab.errors import ConfigValueError, DataMismatchError, check_choice, check_range
from nnlab.models import layers as L
from nnlab.models.attention import PAD

CELLS: dict[str, type[nn.RNNBase]] = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}
READOUTS = ("last", "mean", "steps")


class RNN(nn.Module):
    """Recurrent network: read T steps, then map a summary (or every step) to `num_outputs`.

    At each step t the cell updates a hidden state from the step's features and the previous
    state, h_t = f(x_t, h_{t-1}), with the same weights at every step. The readout turns the
    states into the output: `last` takes the final state (for a bidirectional network, the
    forward direction's final state and the backward direction's, which ended at step 0),
    `mean` averages the top layer's outputs over all steps; a Linear layer maps that vector to
    `num_outputs` (B, num_outputs): classes for sequence classification, the horizon for
    forecasting. `steps` (many-to-many) maps the top layer's output at every step through the
    same Linear layer, (B, T, num_outputs): for language modelling, the next token's scores at
    each position. It needs a one-way network: a backward direction would see the future.

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
        (L,) token ids (vocab_size given, int64) -> L steps of an embed_dim vector each, looked
            up in an nn.Embedding. Id 0 (PAD) pads sequences on the right; its vector is 0. With
            `last` the readout is the state at each sequence's last real token (a one-way
            network reads the sequence in order, so the top layer's output there is that state),
            and `mean` averages the real tokens' outputs only, so the padding does not wash out
            the summary: padding a sequence leaves its output unchanged. A bidirectional network
            would read the padding first on its way back, so for it the sequences are packed
            (`pack_padded_sequence`) and each direction reads the real tokens only. With
            `steps` the outputs at padding positions are computed and left for the loss to
            ignore (they cannot affect earlier steps).
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
        readout: last, mean or steps, see above.
        vocab_size: number of token ids (from the dataset, for text only); None for numeric data.
        embed_dim: features of each token's embedding (text only); 32-128 for characters or words
            of a small vocabulary.
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
        vocab_size: int | None = None,
        embed_dim: int = 64,
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
        if readout == "steps" and bidirectional:
            raise ConfigValueError(
                "model.readout=steps with model.bidirectional=true would let each step's output see the steps "
                "after it (the backward direction reads from the end), so a next-step prediction could read "
                "its answer. Set model.bidirectional=false, or model.readout=last or mean."
            )
        self.embedding: nn.Embedding | None = None
        if vocab_size is not None:
            if len(input_shape) != 1:
                raise DataMismatchError(
                    f"The {cell.upper()} got a vocabulary (vocab_size={vocab_size}) with samples of shape "
                    f"{tuple(input_shape)}: token data is (L,) ids per sample. Check the dataset's input_shape."
                )
            check_range("model.embed_dim", embed_dim, 1)
            self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=PAD)
        elif len(input_shape) not in (2, 3):
            needs = "sequences (C, L) or images (C, H, W), read row by row"
            raise L.input_shape_error(cell, needs, "sequences, signals, images or text", input_shape)

        self.reads_rows = len(input_shape) == 3
        if self.embedding is not None:
            input_size = embed_dim
        elif self.reads_rows:
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
        if self.embedding is not None:
            return self._forward_tokens(x)
        if self.reads_rows:
            x = x.permute(0, 2, 1, 3).flatten(2)  # (B, C, H, W) -> (B, H, C, W) -> (B, T=H, C*W)
        else:
            x = x.transpose(1, 2)  # (B, C, L) -> (B, T=L, C)
        out, state = self.rnn(x)  # out: (B, T, D*hidden), the top layer's output at every step
        if self.readout == "steps":
            return self.head(out)  # (B, T, num_outputs)
        h_n = state[0] if self.cell == "lstm" else state  # (layers*D, B, hidden); the LSTM adds c_n
        if self.readout == "last":
            # The top layer's final state per direction (the backward one's "final" is step 0).
            summary = h_n[-self.directions :].transpose(0, 1).flatten(1)  # (D, B, hidden) -> (B, D*hidden)
        else:
            summary = out.mean(dim=1)  # (B, D*hidden)
        return self.head(summary)  # (B, num_outputs)

    def _forward_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Token ids (B, L), padded on the right with PAD: see the class docstring."""
        real = x != PAD  # (B, L)
        lengths = real.sum(dim=1).clamp(min=1)  # (B,); an all-padding row reads one step
        emb = self.embedding(x)  # (B, L) -> (B, T=L, E)
        if self.directions == 2:  # pack, so the backward direction starts at the last real token
            packed = nn.utils.rnn.pack_padded_sequence(emb, lengths.cpu(), batch_first=True, enforce_sorted=False)
            out, state = self.rnn(packed)
            out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])  # (B, T, 2*H)
            if self.readout == "last":
                h_n = state[0] if self.cell == "lstm" else state  # (layers*2, B, hidden), at each row's real end
                return self.head(h_n[-2:].transpose(0, 1).flatten(1))  # (B, 2*hidden) -> (B, num_outputs)
        else:
            out, _ = self.rnn(emb)  # (B, T, hidden); step t has read tokens 0..t only
        if self.readout == "steps":
            return self.head(out)  # (B, T, num_outputs)
        if self.readout == "last":
            index = (lengths - 1).view(-1, 1, 1).expand(-1, 1, out.shape[2])  # (B, 1, hidden)
            return self.head(out.gather(1, index).squeeze(1))  # the last real token's state -> (B, num_outputs)
        keep = real.unsqueeze(-1).to(out.dtype)  # (B, T, 1)
        summary = (out * keep).sum(dim=1) / keep.sum(dim=1).clamp(min=1.0)  # mean over real tokens: (B, D*hidden)
        return self.head(summary)  # (B, num_outputs)
