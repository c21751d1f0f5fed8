"""Weight initialization for every model family, chosen with the `init` config group.

`nnlab-train init=kaiming_normal` builds the model as usual (PyTorch's own initialization, or a
model's own recipe such as the GAN's `model.init=dcgan`), then `Initializer` re-draws the
weights of every layer it covers:

- nn.Linear and nn.Bilinear, nn.Conv1d/2d/3d and nn.ConvTranspose1d/2d/3d: `weight` by the
  scheme, `bias` by the bias option;
- nn.RNN, nn.LSTM and nn.GRU: every `weight_ih_l*` and `weight_hh_l*` (the `_reverse` ones of a
  bidirectional layer too) by the scheme, one gate at a time (see `init_weights`), every
  `bias_*` by the bias option;
- the perceptron (`nnlab.models.perceptron.Perceptron`): its (units, features) `weight` and
  `bias` are a Linear layer's, kept bare because the perceptron rule updates them without
  autograd.

Normalization layers (BatchNorm, LayerNorm, ...) keep their scale 1 and shift 0 (or the model's
own choice), and a SOM has nothing to cover: its prototypes start from the data (`task.init`).

Why initialization matters: a layer y = W x sums fan_in products, so with independent weights
of variance v, Var(y) = fan_in * v * E[x^2]. Unless v is about 1 / fan_in, the signal grows or
shrinks by the same factor at every layer, and in a deep net the activations (and, backwards,
the gradients) explode or vanish before training starts. Each scheme below picks v to keep
that variance steady, for a given nonlinearity.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from nnlab.errors import ConfigValueError, check_choice, check_range
from nnlab.models.perceptron import Perceptron

SCHEMES = (
    "default",
    "xavier_uniform",
    "xavier_normal",
    "kaiming_uniform",
    "kaiming_normal",
    "orthogonal",
    "normal",
    "zeros",
)
# The names of the old per-model `model.init`, for a message that points at the new one.
RENAMED = {"xavier": "xavier_uniform", "kaiming": "kaiming_normal", "he": "kaiming_normal"}
BIASES = ("default", "zeros")
NONLINEARITIES = ("relu", "leaky_relu", "gelu", "silu", "tanh", "sigmoid", "linear")

# The layers whose `weight` and `bias` are initialized like a Linear layer's.
DENSE_LAYERS = (
    nn.Linear,
    nn.Bilinear,
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
)
# Gates stacked in a recurrent layer's weight matrices, by `nn.RNNBase.mode`: (gates * H, fan_in).
GATES = {"RNN_TANH": 1, "RNN_RELU": 1, "LSTM": 4, "GRU": 3}
LEAKY_SLOPE = 0.01  # nn.LeakyReLU's default, as `activation: leaky_relu` builds it


def check_options(scheme: str, std: float, bias: str, nonlinearity: str) -> None:
    """Raise `ConfigValueError` naming the `init.*` key of the first invalid option."""
    if scheme in RENAMED:
        raise ConfigValueError(
            f"init.scheme={scheme!r} is not a valid choice. Did you mean '{RENAMED[scheme]}'? "
            f"Choose one of: {', '.join(SCHEMES)}."
        )
    check_choice("init.scheme", scheme, SCHEMES)
    check_range("init.std", std, 0.0, low_inclusive=False)
    check_choice("init.bias", bias, BIASES)
    check_choice("init.nonlinearity", nonlinearity, NONLINEARITIES)


class Covered(NamedTuple):
    """A parameter `init_weights` sets."""

    tensor: nn.Parameter
    is_weight: bool  # else a bias
    gates: int = 1  # blocks stacked along dim 0 (a recurrent layer's gates), each drawn on its own
    recurrent: bool = False  # a recurrent layer's: gain 1, whatever the nonlinearity


def covered_parameters(module: nn.Module) -> list[Covered]:
    """Every parameter `init_weights` sets, in the order of `module.modules()` and weight before
    bias within a layer (the order in which a seeded run draws them)."""
    found: list[Covered] = []
    for m in module.modules():
        if isinstance(m, (*DENSE_LAYERS, Perceptron)):
            found.append(Covered(m.weight, True))
            if m.bias is not None:
                found.append(Covered(m.bias, False))
        elif isinstance(m, nn.RNNBase):
            for name, p in m.named_parameters(recurse=False):
                # weight_ih_l{k}[_reverse], weight_hh_l{k}[_reverse]; an LSTM with proj_size > 0 also
                # has weight_hr_l{k}, a plain projection (no gates).
                gates = 1 if name.startswith("weight_hr") else GATES[m.mode]
                found.append(Covered(p, name.startswith("weight_"), gates, recurrent=True))
    return found


def gain(nonlinearity: str) -> float:
    """The factor by which Glorot and orthogonal weights are scaled for the activation that
    follows (`nn.init.calculate_gain`): 1 for linear and sigmoid, 5/3 for tanh, sqrt(2) for
    relu (which zeroes half its inputs, halving the signal's energy). gelu and silu behave like
    relu for positive inputs and get its gain."""
    name = {"gelu": "relu", "silu": "relu"}.get(nonlinearity, nonlinearity)
    return nn.init.calculate_gain(name, LEAKY_SLOPE if name == "leaky_relu" else None)


def _draw(w: torch.Tensor, scheme: str, std: float, nonlinearity: str) -> None:
    """Fill `w` in place by `scheme` (any scheme but default)."""
    if scheme == "xavier_uniform":
        nn.init.xavier_uniform_(w, gain=gain(nonlinearity))
    elif scheme == "xavier_normal":
        nn.init.xavier_normal_(w, gain=gain(nonlinearity))
    elif scheme in ("kaiming_uniform", "kaiming_normal"):
        # He et al. derived the rule for (leaky) ReLU (gelu and silu are close to it); for any
        # other activation torch's 'linear' gives LeCun's Var = 1 / fan_in.
        he = {"gelu": "relu", "silu": "relu"}.get(nonlinearity, nonlinearity)
        he = he if he in ("relu", "leaky_relu") else "linear"
        draw = nn.init.kaiming_uniform_ if scheme == "kaiming_uniform" else nn.init.kaiming_normal_
        draw(w, a=LEAKY_SLOPE if he == "leaky_relu" else 0.0, mode="fan_in", nonlinearity=he)
    elif scheme == "orthogonal":
        nn.init.orthogonal_(w, gain=gain(nonlinearity))
    elif scheme == "normal":
        nn.init.normal_(w, 0.0, std)
    elif scheme == "zeros":
        nn.init.zeros_(w)


@torch.no_grad()
def init_weights(
    module: nn.Module,
    scheme: str = "default",
    std: float = 0.01,
    bias: str = "default",
    nonlinearity: str = "relu",
) -> int:
    """Re-draw the weights of every layer `module` contains that this file covers (see the module
    docstring); return how many weight tensors were drawn (0 for scheme=default).

    Schemes (fan_in: inputs summed by one output unit, e.g. in_channels * k * k for a conv;
    fan_out: outputs one input reaches; gain: see `gain`). Fans are torch's, read from a
    weight's dims 0 and 1, which a transposed conv stores as (in, out): its "fan_in" is
    out_channels * k * k, as in PyTorch's own default for it.

    - default: leave the weights as the model built them. For Linear and Conv layers that is
      PyTorch's U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (kaiming_uniform with a=sqrt(5)), so
      Var = 1 / (3 fan_in): a little small for deep ReLU nets, harmless for shallow ones
      (recurrent layers: U(-1/sqrt(H), 1/sqrt(H)) for a hidden size H).
    - xavier_uniform, xavier_normal (Glorot & Bengio, 2010): Var = gain^2 * 2 / (fan_in + fan_out),
      a compromise that keeps the forward signal (needs 1/fan_in) and the backward gradient
      (needs 1/fan_out) about steady. Uniform on [-b, b] with b = gain * sqrt(6 / (fan_in + fan_out)),
      or normal with std = gain * sqrt(2 / (fan_in + fan_out)). Derived for units that are
      linear near 0 (tanh), so gain 1 is the published rule; torch's tanh gain 5/3 makes up for
      tanh's squashing of larger inputs.
    - kaiming_uniform, kaiming_normal (He et al., 2015): Var = 2 / fan_in for ReLU, twice
      LeCun's 1 / fan_in because ReLU zeroes half of its inputs; 2 / ((1 + a^2) fan_in) for
      leaky_relu of slope a; 1 / fan_in (LeCun) for any other nonlinearity. Normal with
      std = sqrt(2 / fan_in), or uniform with bound sqrt(6 / fan_in). The usual choice for deep
      ReLU networks.
    - orthogonal (Saxe et al., 2014): the weight matrix (a conv's flattened to (out, in * k * k))
      is a random orthogonal matrix times gain: W W^T = gain^2 I when it has no more rows than
      columns, W^T W = gain^2 I otherwise. A square one preserves the norm of every input
      exactly, not just on average, so signals and gradients keep their size through many
      linear layers or time steps. The classic choice for recurrent weights.
    - normal: N(0, std^2) regardless of the layer's size, e.g. std 0.02 is DCGAN's, 0.01 the
      AlexNet/Caffe habit. Fine for shallow nets; in deep ones the signal scales by
      sqrt(fan_in) * std per layer, so it vanishes or explodes.
    - zeros: every weight 0. A teaching case: every unit of a layer computes the same output and
      gets the same gradient, so they stay identical forever (symmetry is never broken) and the
      network is no wider than one unit per layer. Worse, with relu or tanh (0 at 0) the hidden
      units output 0, so no gradient reaches any weight and only the last bias learns. Only a
      model with a single layer (logistic regression, the perceptron) trains normally from zeros.

    Recurrent layers stack the matrices of their gates (LSTM: input, forget, cell, output;
    GRU: reset, update, new) into one (gates * H, fan_in) tensor. Each gate's block is drawn on
    its own, as the separate layer it is: Glorot then uses fan_out = H, and orthogonal gives
    every gate an orthogonal (H, H) recurrent matrix. The cell's own tanh and sigmoid gates set
    its nonlinearity, so recurrent weights ignore `nonlinearity` and use gain 1 (an orthogonal
    W_hh of gain > 1 would grow the state at every step); the layers after it (e.g. the RNN's
    Linear head) follow `nonlinearity` as usual.

    Args:
        module: the model (every submodule is visited).
        scheme: one of SCHEMES, above.
        std: the standard deviation of scheme=normal (> 0).
        bias: default (leave as built: PyTorch's U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for Linear
            and Conv) or zeros (the convention of the papers above: a zero bias adds no variance,
            and the random weights already break the symmetry between units).
        nonlinearity: the activation that follows the layers, which sets the gain of xavier and
            orthogonal and the rule of kaiming: relu, leaky_relu (slope 0.01), gelu, silu, tanh,
            sigmoid or linear.
    """
    check_options(scheme, std, bias, nonlinearity)
    drawn = 0
    for p, is_weight, gates, recurrent in covered_parameters(module):
        if not is_weight:
            if bias == "zeros":
                nn.init.zeros_(p)
        elif scheme != "default":
            for block in p.chunk(gates, dim=0):  # one block per gate; the whole tensor for other layers
                _draw(block, scheme, std, "linear" if recurrent else nonlinearity)
            drawn += 1
    return drawn


class Initializer:
    """The `init` config group's object: `Initializer(...)(model)` re-initializes `model`'s
    weights by `init_weights` and returns the number of weight tensors drawn.

    `nnlab-train` calls it right after building the model, so it comes after (and overrides)
    PyTorch's defaults and a model's own recipe (the GAN's `model.init=dcgan`). With the
    default scheme and bias it changes nothing.

    Rules of thumb: kaiming_normal for ReLU networks (MLP, CNN), xavier_uniform with
    `init.nonlinearity=tanh` for tanh networks (LeNet-5), orthogonal for recurrent ones; zeros
    and a too-large `normal` std show how training fails without a good start.

    Args:
        scheme: default, xavier_uniform, xavier_normal, kaiming_uniform, kaiming_normal,
            orthogonal, normal or zeros (see `init_weights` for the variance rule of each).
        std: the standard deviation of scheme=normal, > 0 (unused by the other schemes).
        bias: default (as the model built it) or zeros.
        nonlinearity: the activation after the layers (relu, leaky_relu, gelu, silu, tanh,
            sigmoid or linear): the gain of xavier and orthogonal, the rule of kaiming.
    """

    def __init__(
        self,
        scheme: str = "default",
        std: float = 0.01,
        bias: str = "default",
        nonlinearity: str = "relu",
    ) -> None:
        check_options(scheme, std, bias, nonlinearity)
        self.scheme, self.std, self.bias, self.nonlinearity = scheme, std, bias, nonlinearity

    def __repr__(self) -> str:
        return (
            f"Initializer(scheme={self.scheme!r}, std={self.std}, bias={self.bias!r}, "
            f"nonlinearity={self.nonlinearity!r})"
        )

    def __call__(self, model: nn.Module) -> int:
        if (self.scheme != "default" or self.bias != "default") and not covered_parameters(model):
            # init=default selects default.yaml, whose bias is default too.
            key, value = ("init", self.scheme) if self.scheme != "default" else ("init.bias", self.bias)
            raise ConfigValueError(
                f"{key}={value} has nothing to initialize: the model ({type(model).__name__}) has no "
                "Linear, Conv or recurrent layers (a SOM initializes its prototypes from the data, with "
                f"task.init=pca|random). Use {key}=default."
            )
        return init_weights(model, self.scheme, self.std, self.bias, self.nonlinearity)
