"""Dropout in the families that had none: the dense and conv autoencoder and VAE (after every
hidden activation), the GAN's discriminator (`d_dropout`), LeNet-5's fully connected layers.
Off (0.0) by default, which builds exactly the layers a model had before; a bad rate names its key."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
import torch
from torch import nn

from nnlab.errors import ConfigValueError
from nnlab.models.autoencoder import VAE, Autoencoder
from nnlab.models.cnn import LeNet5
from nnlab.models.gan import GAN


@dataclass
class Family:
    cls: type[nn.Module]
    kwargs: dict[str, Any]
    count: int  # Dropout modules expected
    part: str = ""  # the submodule that holds all of them ("" for the whole model)
    arg: str = "dropout"

    def build(self, p: float | None = None) -> nn.Module:
        """The model with rate `p`, or with the argument left out (None)."""
        return self.cls(**self.kwargs, **({} if p is None else {self.arg: p}))


IN_D = {"part": "discriminator", "arg": "d_dropout"}  # the GAN's rate, and where its layers go

FAMILIES = {
    # hidden [32, 16]: 2 activations in the encoder, 2 in the decoder
    "ae-dense": Family(Autoencoder, {"input_shape": (20,), "hidden_sizes": [32, 16]}, 4),
    "vae-dense": Family(VAE, {"input_shape": (20,), "hidden_sizes": [32, 16]}, 4),
    # channels [8, 16]: 2 conv blocks in the encoder; the decoder's Linear and its inner conv
    "ae-conv": Family(Autoencoder, {"input_shape": (1, 8, 8), "variant": "conv", "channels": [8, 16]}, 4),
    "vae-conv": Family(VAE, {"input_shape": (1, 8, 8), "variant": "conv", "channels": [8, 16]}, 4),
    # D only, one per hidden layer (G's widths [32, 16], reversed in D)
    "gan-mlp": Family(GAN, {"input_shape": (2,), "num_outputs": 8, "widths": [32, 16]}, 2, **IN_D),
    "gan-dcgan": Family(GAN, {"input_shape": (1, 8, 8), "num_outputs": 10, "widths": [32, 16]}, 2, **IN_D),
    # F5 and F6
    "lenet5": Family(LeNet5, {"input_shape": (1, 28, 28), "num_outputs": 10}, 2, "classifier"),
}


def dropouts(module: nn.Module) -> list[nn.Dropout]:
    return [m for m in module.modules() if isinstance(m, nn.Dropout)]


@pytest.mark.parametrize("name", FAMILIES)
def test_dropout_puts_dropout_layers_where_it_says(name: str) -> None:
    family = FAMILIES[name]
    model = family.build(0.3)
    found = dropouts(model)
    assert len(found) == family.count and all(m.p == 0.3 for m in found)
    assert len(dropouts(model.get_submodule(family.part))) == family.count
    # Off by default, and no module at all then: parameter names (checkpoint keys) stay as they were.
    default = family.build()
    assert not dropouts(default)
    assert list(default.state_dict()) == list(family.build(0.0).state_dict())
    assert [p.shape for p in default.parameters()] == [p.shape for p in model.parameters()]


def test_the_gan_generator_gets_no_dropout() -> None:
    model = GAN((1, 8, 8), 10, d_dropout=0.5)
    assert not dropouts(model.generator) and dropouts(model.discriminator)


@pytest.mark.parametrize("name", ["ae-dense", "ae-conv", "lenet5"])  # (a VAE samples z in training anyway)
def test_dropout_acts_in_training_only(name: str) -> None:
    family = FAMILIES[name]
    torch.manual_seed(0)
    model = family.build(0.5)
    x = torch.randn(4, *family.kwargs["input_shape"])

    def output() -> torch.Tensor:
        out = model(x)
        return out.recon if hasattr(out, "recon") else out

    model.eval()
    assert torch.equal(output(), output())
    model.train()
    assert not torch.equal(output(), output())


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("p", [1.0, -0.1])
def test_a_rate_out_of_range_names_the_key(name: str, p: float) -> None:
    family = FAMILIES[name]
    with pytest.raises(ConfigValueError) as info:
        family.build(p)
    message = str(info.value)
    assert f"model.{family.arg}={p}" in message and "[0.0, 1.0)" in message, message
