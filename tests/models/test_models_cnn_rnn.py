"""nnlab.models.cnn and nnlab.models.rnn: every model config on every kind of sample, shape errors
that name the data, how each family reads its input, and a CNN that learns digits.

The model configs are found by globbing configs/model/, so a new model YAML is run through the
shape and gradient checks the moment it exists.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import pytest
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from helpers import CONFIG_DIR, compose_config, one_in, run_cli, train_tiny
from nnlab.errors import ConfigValueError, DataMismatchError
from nnlab.models.cnn import CNN, LeNet5
from nnlab.models.init import Initializer
from nnlab.models.mlp import MLP
from nnlab.models.rnn import RNN

MODEL_CONFIGS = sorted((CONFIG_DIR / "model").rglob("*.yaml"))

# Samples of every kind the datasets give (channels-first), with a typical num_outputs:
# digits, MNIST, CIFAR (10 classes); MNIST-1D (10 classes); a sine window forecast 8 steps ahead;
# tabular regression (1 target).
SHAPES = {(1, 8, 8): 10, (1, 28, 28): 10, (3, 32, 32): 10, (1, 40): 10, (1, 32): 8, (10,): 1}

# The sample ranks each family of ours takes: 1 tabular (F,), 2 signals (C, L), 3 images (C, H, W).
RANKS = {"nnlab.models.mlp.": {1, 2, 3}, "nnlab.models.cnn.": {2, 3}, "nnlab.models.rnn.": {2, 3}}


def model_name(path: Path) -> str:
    return path.relative_to(CONFIG_DIR / "model").with_suffix("").as_posix()


def build(path: Path, input_shape: tuple[int, ...], num_outputs: int, run_dir: Path) -> nn.Module:
    """The model `nnlab-train model=<name>` builds for a dataset of `input_shape` samples (composed,
    so a model's own defaults list applies); a constructor's ConfigValueError comes out unwrapped,
    as `nnlab-train` reports it."""
    cfg = compose_config([f"model={model_name(path)}"], run_dir)
    try:
        return instantiate(cfg.model, input_shape=input_shape, num_outputs=num_outputs)
    except InstantiationException as error:
        if isinstance(error.__cause__, ConfigValueError):
            raise error.__cause__ from None
        raise


def model_node(path: Path):
    """The model's keys in a model YAML: the file itself, or its `model:` node in a `# @package
    _global_` file (model=gan and model=som also set the optimized metric)."""
    cfg = OmegaConf.load(path)
    return cfg.model if path.read_text().startswith("# @package _global_") else cfg


def expected_ranks(path: Path) -> set[int] | None:
    """The sample ranks the config's model takes, or None for a family this file does not cover."""
    target = model_node(path)._target_
    return next((ranks for prefix, ranks in RANKS.items() if target.startswith(prefix)), None)


def assert_trains_one_step(model: nn.Module, input_shape: tuple[int, ...], num_outputs: int) -> None:
    """Forward a batch, check the output, backpropagate, and check the gradient of every trainable
    parameter (a model trained by another rule, like the perceptron's, has none)."""
    torch.manual_seed(0)
    x = torch.randn(4, *input_shape)
    out = model.train()(x)
    if hasattr(out, "recon"):  # an autoencoder rebuilds its input
        out = out.recon
        assert out.shape == x.shape
    else:
        assert out.shape == (4, num_outputs)
    assert torch.isfinite(out).all()
    trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
    if not trainable:
        return
    nn.functional.mse_loss(out, torch.randn_like(out)).backward()
    for name, p in trainable.items():
        assert p.grad is not None, f"{name} gets no gradient"
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"{name} gets a zero gradient"


def layers(model: nn.Module, kind: type | tuple[type, ...]) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, kind)]


# ---- every model config, every kind of sample ---------------------------------------------------


def test_the_new_model_configs_exist() -> None:
    names = {model_name(p) for p in MODEL_CONFIGS}
    assert {"mlp", "linear", "cnn", "cnn1d", "lenet5", "rnn", "lstm", "gru"} <= names


# Language models read token ids and predict at every position (tests/models/test_gpt.py,
# test_text_models.py): none of these numeric shapes is theirs.
LANGUAGE_MODELS = {"gpt", "char_lstm"}


@pytest.mark.parametrize("input_shape", one_in(2, list(SHAPES)), ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("path", [p for p in MODEL_CONFIGS if model_name(p) not in LANGUAGE_MODELS], ids=model_name)
def test_every_model_config_fits_or_refuses_each_shape(path: Path, input_shape: tuple, tmp_path: Path) -> None:
    """A model either trains on a shape (output (B, num_outputs), a gradient for every trainable
    parameter, no warning) or refuses it when built, with a ConfigValueError; for the families
    of RANKS, exactly the ranks listed fit, and a refusal gives the shape and the way out."""
    num_outputs = SHAPES[input_shape]
    ranks = expected_ranks(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. torch's "dropout with num_layers=1" warning
        try:
            model = build(path, input_shape, num_outputs, tmp_path)
        except ConfigValueError as error:
            if ranks is not None:
                assert len(input_shape) not in ranks, f"model={model_name(path)} refused {input_shape}: {error}"
                message = str(error)
                assert str(input_shape) in message and "the dataset" in message and "data=" in message, message
            return
        assert ranks is None or len(input_shape) in ranks, f"model={model_name(path)} took {input_shape}"
        if hasattr(model, "generator"):  # a GAN: G maps noise to samples, D samples to logits
            fake = model.generator(torch.randn(4, model.latent_dim))
            assert fake.shape == (4, *input_shape) and model.discriminator(fake).shape == (4,)
            return
        assert_trains_one_step(model, input_shape, num_outputs)


@pytest.mark.parametrize("path", [p for p in MODEL_CONFIGS if 1 not in (expected_ranks(p) or {1})], ids=model_name)
def test_tabular_data_is_refused_with_a_clear_message(path: Path, tmp_path: Path) -> None:
    with pytest.raises(DataMismatchError) as info:
        build(path, (10,), 1, tmp_path)
    message = str(info.value)
    # The message names the model family ("The CNN needs ...", "The LSTM needs ..."); nnlab-train
    # puts the model and data choices in front of it.
    named = message.removeprefix("The ").split(" ")[0].lower()
    assert named in model_node(path)._target_.lower() or named == model_node(path).get("cell"), message
    assert "(10,) (tabular)" in message
    assert "model=mlp" in message and "model=linear" in message and "data=<name>" in message


def test_linear_is_a_single_linear_layer(tmp_path: Path) -> None:
    model = build(CONFIG_DIR / "model" / "linear.yaml", (1, 8, 8), 10, tmp_path)
    assert isinstance(model, MLP)
    (linear,) = layers(model, nn.Linear)
    assert (linear.in_features, linear.out_features) == (64, 10)
    assert not layers(model, (nn.BatchNorm1d, nn.Dropout))


# ---- CNN ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "input_shape, conv, pool",
    [((1, 8, 8), nn.Conv2d, nn.MaxPool2d), ((3, 32, 32), nn.Conv2d, nn.MaxPool2d), ((1, 40), nn.Conv1d, nn.MaxPool1d)],
)
def test_cnn_picks_its_layers_by_the_rank_of_the_input(input_shape: tuple, conv: type, pool: type) -> None:
    model = CNN(input_shape, 10, channels=[8, 16])
    convs = layers(model, (nn.Conv1d, nn.Conv2d))
    assert [type(m) for m in convs] == [conv, conv]
    assert [(m.in_channels, m.out_channels) for m in convs] == [(input_shape[0], 8), (8, 16)]
    assert len(layers(model, pool)) == 2
    # "same" padding keeps each map's size, and each pool halves it.
    assert model.feature_shape == (16, *(s // 4 for s in input_shape[1:]))


def test_cnn_skips_pooling_once_the_map_is_a_single_position() -> None:
    model = CNN((1, 8, 8), 10, channels=[4, 4, 4, 4, 4])  # 8 -> 4 -> 2 -> 1 -> 1 -> 1
    assert len(layers(model, nn.MaxPool2d)) == 3
    assert model.feature_shape == (4, 1, 1)
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 10)


def test_cnn_pools_only_the_axes_that_are_long_enough() -> None:
    model = CNN((1, 2, 16), 3, channels=[4, 4, 4])  # H: 2 -> 1 -> 1 -> 1, W: 16 -> 8 -> 4 -> 2
    assert model.feature_shape == (4, 1, 2)
    assert model(torch.randn(2, 1, 2, 16)).shape == (2, 3)


@pytest.mark.parametrize(
    "kwargs, feature_side",
    [
        ({"padding": "valid", "pool": "none"}, 28 - 2 * 2),  # each 3x3 conv trims 2
        ({"padding": 0, "pool": "none", "kernel_size": 5}, 28 - 2 * 4),
        ({"padding": "same", "stride": 2, "pool": "none"}, 7),  # ceil(28 / 2) = 14, then 7
        ({"padding": "same", "pool": "avg"}, 7),
    ],
)
def test_cnn_padding_stride_and_pool_set_the_map_size(kwargs: dict, feature_side: int) -> None:
    model = CNN((1, 28, 28), 10, channels=[4, 8], **kwargs)
    assert model.feature_shape == (8, feature_side, feature_side)
    features = model.features(torch.randn(2, 1, 28, 28))
    assert features.shape == (2, 8, feature_side, feature_side)


def test_cnn_head_options() -> None:
    model = CNN((1, 8, 8), 10, channels=[8, 16], fc_hidden=32, head_pool="max", dropout=0.1, batch_norm=False)
    linears = layers(model, nn.Linear)
    assert [(m.in_features, m.out_features) for m in linears] == [(16, 32), (32, 10)]
    assert len(layers(model, nn.AdaptiveMaxPool2d)) == 1
    assert len(layers(model, nn.Dropout)) == 3  # after each block and after the hidden FC layer
    assert not layers(model, nn.BatchNorm2d)
    assert all(m.bias is not None for m in layers(model, nn.Conv2d))
    # With batch norm the convs have no bias: the normalization would cancel it.
    assert all(m.bias is None for m in layers(CNN((1, 8, 8), 10), nn.Conv2d))


def test_cnn_init_reaches_the_convolutions() -> None:
    model = CNN((1, 8, 8), 10, batch_norm=False)
    assert Initializer("kaiming_normal", bias="zeros")(model) == 4  # 3 convs and the head's Linear
    assert all(torch.all(m.bias == 0) for m in layers(model, (nn.Conv2d, nn.Linear)))


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"kernel_size": 0}, "model.kernel_size"),
        ({"stride": 0}, "model.stride"),
        ({"padding": -1}, "model.padding"),
        ({"padding": "full"}, "model.padding='full' is not a valid padding"),
        ({"pool": "maxx"}, "model.pool"),
        ({"head_pool": "none"}, "model.head_pool"),
        ({"channels": [8, 0]}, "model.channels"),
        ({"channels": []}, "model.channels"),
        ({"fc_hidden": 0}, "model.fc_hidden"),
        ({"dropout": 1.0}, "model.dropout"),
        ({"activation": "rleu"}, "model.activation"),
        ({"kernel_size": 9, "padding": "valid"}, "model.kernel_size"),  # larger than the 8x8 map
    ],
)
def test_cnn_bad_values_name_the_key(kwargs: dict, key: str) -> None:
    with pytest.raises(ConfigValueError, match=key):
        CNN((1, 8, 8), 10, **kwargs)


def test_cnn_kernel_too_large_for_a_later_block_names_the_shape() -> None:
    with pytest.raises(ConfigValueError) as info:
        CNN((1, 8, 8), 10, channels=[4, 4, 4], kernel_size=3, padding=0)  # 8 -> 6 -> 3 -> 1 -> 0
    assert "conv block 2" in str(info.value) and "(1, 8, 8)" in str(info.value)


# ---- LeNet-5 --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "input_shape, paddings, feature_shape",
    [
        ((1, 32, 32), [(0, 0), (0, 0)], (16, 5, 5)),  # the paper: 32 -> 28 -> 14 -> 10 -> 5
        ((1, 28, 28), [(2, 2), (0, 0)], (16, 5, 5)),  # MNIST, padded as LeCun did: 28 -> 28 -> 14 -> 10 -> 5
        ((1, 8, 8), [(2, 2), (2, 2)], (16, 2, 2)),  # digits: 8 -> 8 -> 4 -> 4 -> 2
        ((3, 32, 32), [(0, 0), (0, 0)], (16, 5, 5)),
        ((1, 40), [(0,), (0,)], (16, 7)),  # 40 -> 36 -> 18 -> 14 -> 7
    ],
)
def test_lenet5_layers(input_shape: tuple, paddings: list, feature_shape: tuple) -> None:
    model = LeNet5(input_shape, 10)
    convs = layers(model, (nn.Conv1d, nn.Conv2d))
    assert [(m.out_channels, m.kernel_size[0], m.padding) for m in convs] == [(6, 5, paddings[0]), (16, 5, paddings[1])]
    assert model.feature_shape == feature_shape
    linears = layers(model, nn.Linear)
    assert [m.out_features for m in linears] == [120, 84, 10]
    assert linears[0].in_features == math.prod(feature_shape)
    assert len(layers(model, nn.Tanh)) == 4 and len(layers(model, (nn.AvgPool1d, nn.AvgPool2d))) == 2


def test_lenet5_modern_variant() -> None:
    model = LeNet5((1, 28, 28), 10, activation="relu", pool="max")
    assert len(layers(model, nn.ReLU)) == 4 and len(layers(model, nn.MaxPool2d)) == 2
    with pytest.raises(ConfigValueError, match="model.pool"):
        LeNet5((1, 28, 28), 10, pool="none")


# ---- RNN ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("input_shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32)])
def test_rnn_reads_an_image_row_by_row(input_shape: tuple) -> None:
    channels, height, width = input_shape
    model = RNN(input_shape, 10, cell="lstm", hidden_size=16)
    assert model.rnn.input_size == channels * width
    seen = []
    model.rnn.register_forward_hook(lambda module, args, output: seen.append(args[0]))
    x = torch.randn(2, *input_shape)
    model(x)
    (sequence,) = seen
    assert sequence.shape == (2, height, channels * width)  # (B, T = rows, features of one row)
    for row in (0, height // 2, height - 1):  # step t is row t of every channel, side by side
        assert torch.equal(sequence[:, row], x[:, :, row, :].reshape(2, channels * width))


def test_rnn_reads_a_signal_as_steps_of_channels() -> None:
    model = RNN((3, 40), 4, cell="gru", hidden_size=16)
    assert model.rnn.input_size == 3
    seen = []
    model.rnn.register_forward_hook(lambda module, args, output: seen.append(args[0]))
    x = torch.randn(2, 3, 40)
    model(x)
    assert torch.equal(seen[0], x.transpose(1, 2))  # (B, T=40, C=3)


@pytest.mark.parametrize("readout", ["last", "mean"])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("cell, module", [("rnn", nn.RNN), ("lstm", nn.LSTM), ("gru", nn.GRU)])
def test_rnn_cells_directions_and_readouts(cell: str, module: type, bidirectional: bool, readout: str) -> None:
    model = RNN(
        (1, 32), 4, cell=cell, hidden_size=8, num_layers=2, dropout=0.1, bidirectional=bidirectional, readout=readout
    )
    assert type(model.rnn) is module and model.rnn.num_layers == 2 and model.rnn.dropout == 0.1
    assert model.head.in_features == (16 if bidirectional else 8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert_trains_one_step(model, (1, 32), 4)


def test_rnn_last_readout_is_the_final_state_of_each_direction() -> None:
    """`last`: the forward direction's state after the final step and the backward one's after
    step 0, so changing the first step changes the forward half only through the recurrence."""
    torch.manual_seed(0)
    model = RNN((2, 10), 3, cell="gru", hidden_size=5, bidirectional=True).eval()
    x = torch.randn(1, 2, 10)
    out, _ = model.rnn(x.transpose(1, 2))  # (B, T, 2 * hidden)
    expected = torch.cat([out[:, -1, :5], out[:, 0, 5:]], dim=1)
    assert torch.allclose(model(x), model.head(expected), atol=1e-6)


def test_rnn_dropout_needs_stacked_layers() -> None:
    """torch warns and ignores dropout on a single layer; here it is refused, naming both keys."""
    with pytest.raises(ConfigValueError) as info:
        RNN((1, 32), 4, num_layers=1, dropout=0.2)
    assert "model.dropout=0.2" in str(info.value) and "model.num_layers" in str(info.value)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        RNN((1, 32), 4, num_layers=1, dropout=0.0)
        RNN((1, 32), 4, num_layers=2, dropout=0.2)


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"cell": "lstn"}, "model.cell"),
        ({"hidden_size": 0}, "model.hidden_size"),
        ({"num_layers": 0}, "model.num_layers"),
        ({"num_layers": 2, "dropout": 1.0}, "model.dropout"),
        ({"readout": "first"}, "model.readout"),
    ],
)
def test_rnn_bad_values_name_the_key(kwargs: dict, key: str) -> None:
    with pytest.raises(ConfigValueError, match=key):
        RNN((1, 32), 4, **kwargs)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_rnn_error_names_the_config_of_its_cell(cell: str) -> None:
    with pytest.raises(DataMismatchError, match=f"^The {cell.upper()} needs sequences"):
        RNN((10,), 1, cell=cell)


# ---- learning and the command line ----------------------------------------------------------------


def test_cnn_learns_digits(tmp_path: Path) -> None:
    """Six epochs of the default CNN (its full 30 reach 0.986-0.994 test accuracy): well past
    chance (0.1) and the linear model (0.92 in its 30 epochs)."""
    run = train_tiny(["model=cnn", "trainer.max_epochs=6", "trainer.limit_train_batches=null", "logger=none"], tmp_path)
    assert run.metrics["val/acc"] >= 0.95, run.metrics
    assert run.metrics["test/acc"] >= 0.95, run.metrics


def test_cli_cnn_on_tabular_data_is_a_clear_error(tmp_path: Path) -> None:
    result = run_cli(["model=cnn", "data=diabetes", f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    # The model (by name), the data (by the shape of its samples) and the two ways out.
    for part in ("model=cnn", "needs images (C, H, W) or signals (C, L)", "(10,) (tabular)", "model=mlp", "data="):
        assert part in lines[0], lines[0]
    assert "Traceback" not in result.stdout + result.stderr
    assert not (tmp_path / "run" / "metrics.json").exists()
