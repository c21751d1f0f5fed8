"""Text in the recurrent and convolutional families (nnlab.models.rnn, nnlab.models.cnn): token ids
embedded, a classifier's output unchanged by right padding, a per-step readout that never sees
the future (a character language model), and the text configs built as the builder builds them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from helpers import CONFIG_DIR
from nnlab.errors import ConfigValueError, DataMismatchError
from nnlab.models.cnn import CNN
from nnlab.models.rnn import RNN

VOCAB = 17


def ids(batch: int = 3, length: int = 9, seed: int = 0) -> torch.Tensor:
    """Token ids 1..VOCAB-1, no padding."""
    return torch.randint(1, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


def assert_all_weights_learn(model: nn.Module, out: torch.Tensor) -> None:
    out.square().mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"{name} gets no gradient"


# ---- the RNN on tokens ---------------------------------------------------------------------------


@pytest.mark.parametrize("readout, shape", [("last", (3, 4)), ("mean", (3, 4)), ("steps", (3, 9, 4))])
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_rnn_embeds_tokens_and_reads_out(cell: str, readout: str, shape: tuple) -> None:
    torch.manual_seed(0)
    model = RNN((9,), 4, cell=cell, hidden_size=8, readout=readout, vocab_size=VOCAB, embed_dim=6).train()
    assert model.embedding.num_embeddings == VOCAB and model.embedding.padding_idx == 0
    assert model.rnn.input_size == 6
    out = model(ids())
    assert out.shape == shape
    assert_all_weights_learn(model, out)


@pytest.mark.parametrize("readout", ["last", "mean"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_rnn_output_is_unchanged_by_right_padding(readout: str, bidirectional: bool) -> None:
    """Each row's output is the one of its real tokens alone, however much padding follows."""
    torch.manual_seed(0)
    model = RNN((16,), 3, cell="lstm", hidden_size=8, num_layers=2, bidirectional=bidirectional, readout=readout,
                vocab_size=VOCAB).eval()  # fmt: skip
    x = ids()
    x[1, 4:] = 0  # row 1: 4 real tokens
    x[2, 7:] = 0  # row 2: 7
    padded = torch.cat([x, torch.zeros(3, 5, dtype=torch.long)], dim=1)
    out = model(x)
    assert torch.allclose(out, model(padded), atol=1e-6)
    for row, length in ((0, 9), (1, 4), (2, 7)):  # alone and unpadded
        assert torch.allclose(out[row], model(x[row : row + 1, :length])[0], atol=1e-6)


def test_rnn_last_readout_is_the_state_at_the_last_real_token() -> None:
    torch.manual_seed(0)
    model = RNN((9,), 3, cell="gru", hidden_size=5, vocab_size=VOCAB).eval()
    x = ids(batch=1)
    x[0, 6:] = 0
    out, _ = model.rnn(model.embedding(x))  # (1, 9, 5)
    assert torch.allclose(model(x), model.head(out[:, 5]), atol=1e-6)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_steps_readout_does_not_see_the_future(cell: str) -> None:
    """A language model's logits at t depend on tokens 0..t only."""
    torch.manual_seed(0)
    model = RNN((9,), VOCAB, cell=cell, hidden_size=8, num_layers=2, readout="steps", vocab_size=VOCAB).eval()
    x = ids()
    t = 4
    changed = x.clone()
    changed[:, t + 1 :] = changed[:, t + 1 :] % (VOCAB - 1) + 1
    before, after = model(x), model(changed)
    assert torch.allclose(before[:, : t + 1], after[:, : t + 1], atol=1e-6)
    assert not torch.allclose(before[:, t + 1 :], after[:, t + 1 :], atol=1e-6)


def test_steps_readout_on_a_signal_is_one_output_per_step() -> None:
    model = RNN((2, 20), 3, hidden_size=8, readout="steps")
    assert model(torch.randn(4, 2, 20)).shape == (4, 20, 3)


def test_steps_readout_refuses_a_bidirectional_network() -> None:
    with pytest.raises(ConfigValueError) as info:
        RNN((9,), VOCAB, bidirectional=True, readout="steps", vocab_size=VOCAB)
    message = str(info.value)
    assert "model.readout=steps" in message and "model.bidirectional=false" in message


@pytest.mark.parametrize("family", [RNN, CNN])
def test_a_vocabulary_with_numeric_samples_is_refused(family: type) -> None:
    with pytest.raises(DataMismatchError, match=r"\(1, 8, 8\)"):
        family((1, 8, 8), 10, vocab_size=VOCAB)
    with pytest.raises(ConfigValueError, match="model.embed_dim"):
        family((9,), 3, vocab_size=VOCAB, embed_dim=0)


# ---- the CNN on tokens ---------------------------------------------------------------------------


def test_cnn_reads_embedded_tokens_as_a_signal_of_embed_dim_channels() -> None:
    torch.manual_seed(0)
    model = CNN((20,), 3, channels=[8, 8], kernel_size=3, vocab_size=VOCAB, embed_dim=5, head_pool="max")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv1d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(5, 8), (8, 8)]
    assert model.feature_shape == (8, 5)  # 20 -> 10 -> 5
    seen = []
    convs[0].register_forward_hook(lambda module, args, output: seen.append(args[0]))
    x = ids(length=20)
    out = model.train()(x)
    assert out.shape == (3, 3)
    assert torch.equal(seen[0], model.embedding(x).transpose(1, 2))  # (B, E, L)
    assert_all_weights_learn(model, out)


def test_cnn_pads_embed_to_zero() -> None:
    model = CNN((10,), 2, channels=[4], vocab_size=VOCAB)
    assert model.embedding.padding_idx == 0 and torch.all(model.embedding.weight[0] == 0)


# ---- the configs, as the builder builds them ------------------------------------------------------


def build(name: str, input_shape: tuple, num_outputs: int, vocab_size: int | None) -> nn.Module:
    path: Path = CONFIG_DIR / "model" / f"{name}.yaml"
    return instantiate(OmegaConf.load(path), input_shape=input_shape, num_outputs=num_outputs, vocab_size=vocab_size)


@pytest.mark.parametrize(
    "name, num_outputs, shape",
    [
        ("text_lstm", 4, (2, 4)),
        ("text_cnn", 4, (2, 4)),
        ("char_lstm", VOCAB, (2, 9, VOCAB)),
        ("transformer", 4, (2, 4)),
    ],
)
def test_text_configs_build_for_token_data(name: str, num_outputs: int, shape: tuple) -> None:
    torch.manual_seed(0)
    model = build(name, (9,), num_outputs, VOCAB).eval()
    x = ids(batch=2)
    x[0, 6:] = 0
    assert model(x).shape == shape


def test_char_lstm_config_is_a_one_way_language_model() -> None:
    model = build("char_lstm", (9,), VOCAB, VOCAB)
    assert isinstance(model, RNN) and model.readout == "steps" and model.directions == 1


def test_text_configs_stay_numeric_models_without_a_vocabulary() -> None:
    """Without vocab_size (numeric data) text_lstm is an LSTM and text_cnn a CNN, as before."""
    assert build("text_lstm", (1, 40), 10, None)(torch.randn(2, 1, 40)).shape == (2, 10)
    assert build("text_cnn", (1, 8, 8), 10, None)(torch.randn(2, 1, 8, 8)).shape == (2, 10)
