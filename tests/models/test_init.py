"""nnlab.models.init and the `init` config group: each scheme's statistics, which layers it touches
(and which it leaves alone), every model config initialized, and errors that name the key.

The variance rules checked here are the ones the docstrings teach: Glorot
Var = gain^2 * 2 / (fan_in + fan_out), He Var = 2 / fan_in for ReLU, orthogonal W W^T = gain^2 I.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from helpers import CONFIG_DIR, compose_config
from nnlab.errors import ConfigValueError
from nnlab.models.cnn import CNN, LeNet5
from nnlab.models.gan import GAN
from nnlab.models.init import SCHEMES, Initializer, init_weights
from nnlab.models.mlp import MLP
from nnlab.models.perceptron import Perceptron
from nnlab.models.som import SOM

MODEL_CONFIGS = sorted((CONFIG_DIR / "model").rglob("*.yaml"))
INIT_CONFIGS = sorted((CONFIG_DIR / "init").rglob("*.yaml"))

# The layers whose weights every scheme draws (recurrent layers are checked by name).
DRAWN = (
    nn.Linear, nn.Bilinear, nn.Conv1d, nn.Conv2d, nn.Conv3d,
    nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d, Perceptron,
)  # fmt: skip
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm)

# A primary config with just the groups a model and its initializer need; the groups are
# nnlab's own, found on Hydra's search path, so this does not depend on train.yaml's wiring.
SMALL_PRIMARY = """\
defaults:
  - _self_
  - task: supervised        # before the model, which may override it (as in train.yaml)
  - model: mlp
  - init: default
hydra:
  searchpath:
    - pkg://nnlab.configs
"""


@pytest.fixture(scope="module")
def small_config_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("configs")
    (folder / "small.yaml").write_text(SMALL_PRIMARY)
    return folder


def compose_small(folder: Path, overrides: list[str]):
    with initialize_config_dir(str(folder), version_base="1.3"):
        return compose("small", overrides=overrides)


def fan_in(w: torch.Tensor) -> int:
    """Inputs summed by one output unit of an (out, in, *kernel) weight."""
    return w.shape[1] * math.prod(w.shape[2:])


def drawn_weights(model: nn.Module) -> dict[str, tuple[torch.Tensor, bool]]:
    """name -> (weight, is recurrent) for every weight a scheme must draw."""
    found = {}
    for module_name, m in model.named_modules():
        for name, p in m.named_parameters(recurse=False):
            full = f"{module_name}.{name}" if module_name else name
            if isinstance(m, nn.RNNBase) and name.startswith("weight_"):
                found[full] = (p, True)
            elif isinstance(m, DRAWN) and name == "weight":
                found[full] = (p, False)
    return found


def biases(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every bias of a drawn layer (Linear, Conv, perceptron, recurrent `bias_*`)."""
    return {
        f"{module_name}.{name}": p
        for module_name, m in model.named_modules()
        if isinstance(m, (*DRAWN, nn.RNNBase))
        for name, p in m.named_parameters(recurse=False)
        if name.startswith("bias")
    }


def norm_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Parameters and buffers of every normalization layer, cloned."""
    return {
        f"{module_name}.{k}": v.clone()
        for module_name, m in model.named_modules()
        if isinstance(m, NORMS)
        for k, v in m.state_dict().items()
    }


# ---- each scheme's statistics on a big layer -----------------------------------------------------


@pytest.mark.parametrize("nonlinearity, gain", [("linear", 1.0), ("relu", math.sqrt(2)), ("tanh", 5 / 3)])
def test_xavier_uniform_bound(nonlinearity: str, gain: float) -> None:
    torch.manual_seed(0)
    layer = nn.Linear(512, 256)  # fan_in 512, fan_out 256
    assert init_weights(layer, "xavier_uniform", nonlinearity=nonlinearity) == 1
    bound = gain * math.sqrt(6 / (512 + 256))
    top = layer.weight.abs().max().item()
    assert 0.99 * bound <= top <= bound * (1 + 1e-6)
    assert layer.weight.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.02)  # std of U(-b, b)


@pytest.mark.parametrize("nonlinearity, gain", [("linear", 1.0), ("tanh", 5 / 3), ("gelu", math.sqrt(2))])
def test_xavier_normal_std(nonlinearity: str, gain: float) -> None:
    torch.manual_seed(0)
    layer = nn.Linear(512, 256)
    init_weights(layer, "xavier_normal", nonlinearity=nonlinearity)
    assert layer.weight.std().item() == pytest.approx(gain * math.sqrt(2 / (512 + 256)), rel=0.02)
    assert abs(layer.weight.mean().item()) < 1e-3


# He: Var = 2 / fan_in for ReLU (gelu, silu count as ReLU), 2 / ((1 + a^2) fan_in) for leaky ReLU
# of slope a = 0.01, LeCun's 1 / fan_in for everything else.
@pytest.mark.parametrize(
    "nonlinearity, numerator",
    [("relu", 2.0), ("gelu", 2.0), ("silu", 2.0), ("leaky_relu", 2 / (1 + 0.01**2)), ("tanh", 1.0), ("linear", 1.0)],
)
def test_kaiming_normal_std_on_a_conv(nonlinearity: str, numerator: float) -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(64, 128, 3)  # fan_in = 64 * 3 * 3 = 576
    init_weights(conv, "kaiming_normal", nonlinearity=nonlinearity)
    assert conv.weight.std().item() == pytest.approx(math.sqrt(numerator / 576), rel=0.03)


def test_kaiming_uniform_bound() -> None:
    torch.manual_seed(0)
    layer = nn.Linear(512, 512)
    init_weights(layer, "kaiming_uniform", nonlinearity="relu")
    bound = math.sqrt(6 / 512)  # sqrt(3) * sqrt(2 / fan_in)
    assert 0.99 * bound <= layer.weight.abs().max().item() <= bound * (1 + 1e-6)
    # PyTorch's own default, kaiming_uniform with a = sqrt(5), is bounded by 1 / sqrt(fan_in): a third of the variance.
    assert nn.Linear(512, 512).weight.abs().max().item() <= 1 / math.sqrt(512) * (1 + 1e-6)


@pytest.mark.parametrize("nonlinearity, gain", [("linear", 1.0), ("relu", math.sqrt(2))])
def test_orthogonal_preserves_norms(nonlinearity: str, gain: float) -> None:
    torch.manual_seed(0)
    layer = nn.Linear(512, 512)
    init_weights(layer, "orthogonal", nonlinearity=nonlinearity)
    w = layer.weight
    assert torch.allclose(w @ w.T, gain**2 * torch.eye(512), atol=1e-4)
    x = torch.randn(8, 512)
    assert torch.allclose((x @ w.T).norm(dim=1), gain * x.norm(dim=1), rtol=1e-4)
    # A conv's weight is orthogonal as the (out, in * k * k) matrix it multiplies patches by.
    conv = nn.Conv2d(16, 32, 3)
    init_weights(conv, "orthogonal", nonlinearity=nonlinearity)
    flat = conv.weight.flatten(1)  # (32, 144): orthonormal rows (times the gain)
    assert torch.allclose(flat @ flat.T, gain**2 * torch.eye(32), atol=1e-4)


def test_normal_has_the_given_std() -> None:
    torch.manual_seed(0)
    layer = nn.Linear(512, 512)
    init_weights(layer, "normal", std=0.05)
    assert layer.weight.std().item() == pytest.approx(0.05, rel=0.02)
    assert abs(layer.weight.mean().item()) < 1e-3


def test_zeros_makes_every_unit_identical() -> None:
    model = MLP((8,), 3, hidden_sizes=[16], activation="sigmoid", batch_norm=False)
    init_weights(model, "zeros", bias="zeros")
    assert all(torch.all(p == 0) for p in model.parameters())
    # Every hidden unit computes the same value and gets the same gradient: symmetry is never broken.
    x, y = torch.randn(32, 8), torch.randint(0, 3, (32,))
    nn.functional.cross_entropy(model(x), y).backward()
    hidden = model.net[1].weight.grad  # (16, 8): one row per hidden unit
    assert torch.allclose(hidden, hidden[:1].expand_as(hidden))


# ---- biases, layers left alone, the count ----------------------------------------------------------


@pytest.mark.parametrize("scheme", SCHEMES)
def test_bias_default_is_left_bit_identical_and_zeros_zeroes_it(scheme: str) -> None:
    torch.manual_seed(0)
    layer = nn.Linear(64, 32)
    before = {k: v.clone() for k, v in layer.state_dict().items()}
    init_weights(layer, scheme, bias="default")
    assert torch.equal(layer.bias, before["bias"])
    assert torch.equal(layer.weight, before["weight"]) == (scheme == "default")
    init_weights(layer, scheme, bias="zeros")
    assert torch.all(layer.bias == 0)


def test_default_changes_nothing_and_draws_nothing() -> None:
    torch.manual_seed(0)
    model = CNN((1, 8, 8), 10, fc_hidden=16)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert Initializer()(model) == 0
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    # bias=zeros alone sets the biases and leaves every weight (and the batch norms) as they were.
    norms = norm_state(model)
    assert Initializer(bias="zeros")(model) == 0
    assert all(torch.all(b == 0) for b in biases(model).values())
    assert all(torch.equal(w, before[name]) for name, (w, _) in drawn_weights(model).items())
    assert all(torch.equal(norm_state(model)[k], v) for k, v in norms.items())


@pytest.mark.parametrize("cell, gates", [(nn.LSTM, 4), (nn.GRU, 3), (nn.RNN, 1)])
def test_recurrent_weights_are_drawn_one_gate_at_a_time(cell: type[nn.RNNBase], gates: int) -> None:
    torch.manual_seed(0)
    rnn = cell(32, 64, num_layers=2, bidirectional=True)
    before = {k: v.clone() for k, v in rnn.state_dict().items()}
    # 2 layers x 2 directions x (weight_ih, weight_hh); relu's gain is not used inside the cell.
    assert init_weights(rnn, "orthogonal", bias="zeros", nonlinearity="relu") == 8
    for name, p in rnn.named_parameters():
        if name.startswith("bias"):
            assert torch.all(p == 0), name
            continue
        assert not torch.equal(p, before[name]), f"{name} was not drawn"
        if name.startswith("weight_hh"):  # (gates * 64, 64): every gate's block is orthogonal, gain 1
            for block in p.chunk(gates):
                assert torch.allclose(block @ block.T, torch.eye(64), atol=1e-4), name
    assert any(name.endswith("_reverse") for name in before)


def test_xavier_on_an_lstm_uses_each_gates_fans() -> None:
    torch.manual_seed(0)
    lstm = nn.LSTM(256, 256)
    init_weights(lstm, "xavier_normal", nonlinearity="tanh")
    for block in lstm.weight_hh_l0.chunk(4):  # fan_out is one gate's 256, not 4 * 256; gain 1
        assert block.std().item() == pytest.approx(math.sqrt(2 / (256 + 256)), rel=0.03)


def test_normalization_layers_are_left_alone() -> None:
    torch.manual_seed(0)
    models = [
        (MLP((16,), 3, hidden_sizes=[32, 32], batch_norm=True), (16,)),
        (CNN((1, 8, 8), 10, channels=[8, 16]), (1, 8, 8)),
        (nn.Sequential(nn.Linear(16, 32), nn.LayerNorm(32), nn.Linear(32, 2)), (16,)),
    ]
    for model, input_shape in models:
        for m in model.modules():  # move them off their 1 / 0 start, so that any change shows
            if isinstance(m, NORMS):
                nn.init.uniform_(m.weight, 0.5, 1.5)
                nn.init.uniform_(m.bias, -0.5, 0.5)
        model.train()(torch.randn(8, *input_shape))  # batch norm running statistics move off 0 / 1 too
        before = norm_state(model)
        assert before
        Initializer("zeros", bias="zeros")(model)
        after = norm_state(model)
        assert all(torch.equal(after[k], v) for k, v in before.items())


def test_the_count_is_the_number_of_weight_tensors_drawn() -> None:
    assert init_weights(MLP((16,), 3, hidden_sizes=[32, 16], batch_norm=True), "kaiming_normal") == 3
    assert init_weights(CNN((1, 8, 8), 10), "kaiming_normal") == 4  # 3 convs, 1 Linear
    assert init_weights(LeNet5((1, 28, 28), 10), "xavier_uniform") == 5  # C1, C3, F5, F6, output
    assert init_weights(GAN((1, 8, 8), 10), "normal") == 6  # 3 transposed convs in G, 3 convs in D
    assert init_weights(nn.Bilinear(4, 5, 6), "xavier_uniform") == 1
    assert init_weights(nn.ConvTranspose1d(4, 8, 3), "kaiming_uniform") == 1


def test_the_perceptron_is_covered_like_a_linear_layer() -> None:
    torch.manual_seed(0)
    model = Perceptron((64,), 3)  # its own init: zeros
    assert Initializer("xavier_uniform", bias="zeros", nonlinearity="linear")(model) == 1
    assert model.weight.abs().max().item() <= math.sqrt(6 / (64 + 3)) * (1 + 1e-6)
    assert model.weight.abs().min().item() > 0 and not model.weight.requires_grad


def test_the_init_group_draws_over_the_gans_own_recipe() -> None:
    """model.init=dcgan runs in the constructor; the init group, applied after, re-draws the
    Linear and conv weights and leaves the batch norm scales at DCGAN's N(1, 0.02)."""
    torch.manual_seed(0)
    model = GAN((1, 8, 8), 10)  # init: dcgan
    scales = {k: v.clone() for k, v in norm_state(model).items() if k.endswith("weight")}
    assert any(not torch.all(v == 1) for v in scales.values())  # DCGAN drew them
    Initializer("normal", std=0.1)(model)
    for name, (w, _) in drawn_weights(model).items():
        if w.numel() >= 2048:
            assert w.std().item() == pytest.approx(0.1, rel=0.1), name  # not DCGAN's 0.02
    assert all(torch.equal(norm_state(model)[k], v) for k, v in scales.items())


# ---- every model config, built the way nnlab-train builds it -------------------------------------


@pytest.mark.parametrize("path", MODEL_CONFIGS, ids=lambda p: p.stem)
def test_every_model_config_is_initialized_with_kaiming_normal(path: Path, small_config_dir: Path) -> None:
    cfg = compose_small(small_config_dir, [f"model={path.stem}", "init=kaiming_normal", "init.bias=zeros"])
    torch.manual_seed(0)
    if path.stem in ("gpt", "char_lstm"):  # language models: token ids in, a score per token out
        model = instantiate(cfg.model, input_shape=(16,), num_outputs=30, vocab_size=30)
    else:
        model = instantiate(cfg.model, input_shape=(1, 8, 8), num_outputs=10)  # fits every other family
    initializer = instantiate(cfg.init)
    if isinstance(model, SOM):  # prototypes only, which the SOM task draws from the data
        with pytest.raises(ConfigValueError) as info:
            initializer(model)
        message = str(info.value)
        assert "init=kaiming_normal" in message and "SOM" in message
        assert "task.init=pca|random" in message and "Use init=default" in message
        return

    weights = drawn_weights(model)
    before = {name: w.clone() for name, (w, _) in weights.items()}
    norms = norm_state(model)
    assert weights, f"model={path.stem} has no layer to initialize"
    assert initializer(model) == len(weights)
    for name, (w, recurrent) in weights.items():
        assert not torch.equal(w, before[name]), f"model={path.stem}: {name} was not drawn"
        if w.numel() >= 2048:  # enough samples for the std to be within a few %
            numerator = 1.0 if recurrent else 2.0  # recurrent weights: gain 1 (LeCun), else He's 2
            assert w.std().item() == pytest.approx(math.sqrt(numerator / fan_in(w)), rel=0.1), name
    assert all(torch.all(b == 0) for b in biases(model).values())
    assert all(torch.equal(norm_state(model)[k], v) for k, v in norms.items())


def test_som_with_the_default_init_is_fine() -> None:
    model = SOM((4,), 3)
    before = model.weight.clone()
    assert Initializer()(model) == 0 and torch.equal(model.weight, before)
    with pytest.raises(ConfigValueError, match=r"init\.bias=zeros has nothing to initialize.*Use init\.bias=default"):
        Initializer(bias="zeros")(model)


# ---- the config group ------------------------------------------------------------------------------


def test_the_group_has_a_file_per_scheme() -> None:
    assert sorted(p.stem for p in INIT_CONFIGS) == sorted(SCHEMES)


@pytest.mark.parametrize("path", INIT_CONFIGS, ids=lambda p: p.stem)
def test_each_init_file_builds_its_scheme(path: Path, small_config_dir: Path) -> None:
    first = path.read_text().splitlines()[0]
    assert first.startswith(f"# nnlab-train init={path.stem}"), first
    cfg = compose_small(small_config_dir, [f"init={path.stem}"])
    initializer = instantiate(cfg.init)
    assert isinstance(initializer, Initializer) and initializer.scheme == path.stem
    assert OmegaConf.to_container(cfg.init).keys() == {"_target_", "scheme", "std", "bias", "nonlinearity"}
    model = MLP((16,), 3, hidden_sizes=[32, 16])
    assert initializer(model) == (0 if path.stem == "default" else 3)


def test_command_line_values_reach_the_initializer(small_config_dir: Path) -> None:
    cfg = compose_small(small_config_dir, ["init=normal", "init.std=0.2", "init.bias=default"])
    initializer = instantiate(cfg.init)
    assert (initializer.scheme, initializer.std, initializer.bias) == ("normal", 0.2, "default")
    cfg = compose_small(small_config_dir, ["init=normal", "init.std=0"])
    with pytest.raises(InstantiationException) as info:
        instantiate(cfg.init)
    assert isinstance(info.value.__cause__, ConfigValueError) and "init.std=0" in str(info.value.__cause__)


def test_build_applies_the_init_group(tmp_path: Path) -> None:
    """End to end: `nnlab-train init=kaiming_normal` builds the model, then re-draws it (train.yaml
    lists `init: default`, and build() applies the Initializer right after the model)."""
    from nnlab.runs.build import build

    torch.manual_seed(0)
    cfg = compose_config(["init=kaiming_normal", "model.batch_norm=false"], tmp_path)
    parts = build(cfg)
    linears = [m for m in parts.model.modules() if isinstance(m, nn.Linear)]
    assert all(torch.all(m.bias == 0) for m in linears)  # kaiming_normal.yaml: bias zeros
    first = linears[0].weight  # (256, 64) on 8x8 digits
    assert first.std().item() == pytest.approx(math.sqrt(2 / first.shape[1]), rel=0.05)
    if parts.logger is not None:
        parts.logger.close()


# ---- mistakes ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        ({"scheme": "kaiming_normall"}, ["init.scheme='kaiming_normall'", "Did you mean 'kaiming_normal'?"]),
        ({"scheme": "xavier"}, ["init.scheme='xavier'", "Did you mean 'xavier_uniform'?"]),  # the old names
        ({"scheme": "he"}, ["init.scheme='he'", "Did you mean 'kaiming_normal'?"]),
        ({"std": 0.0}, ["init.std=0.0", "must be > 0.0"]),
        ({"std": -0.01}, ["init.std=-0.01", "must be > 0.0"]),
        ({"bias": "zero"}, ["init.bias='zero'", "Did you mean 'zeros'?"]),
        ({"nonlinearity": "rleu"}, ["init.nonlinearity='rleu'", "Did you mean 'relu'?"]),
    ],
)
def test_bad_options_name_the_key(kwargs: dict, expected: list[str]) -> None:
    with pytest.raises(ConfigValueError) as info:
        Initializer(**kwargs)
    message = str(info.value)
    assert all(part in message for part in expected), message
    if "scheme" in kwargs:
        assert all(name in message for name in SCHEMES)
    with pytest.raises(ConfigValueError):  # the function checks as the class does
        init_weights(nn.Linear(2, 2), **{"scheme": "normal", **kwargs})


def test_a_gan_scheme_that_belongs_to_the_init_group_says_so() -> None:
    with pytest.raises(ConfigValueError) as info:
        GAN((1, 8, 8), 10, init="kaiming_normal")
    message = str(info.value)
    assert "model.init='kaiming_normal'" in message and "init=kaiming_normal" in message
