"""Autoencoders: a dense or convolutional encoder squeezes x into a small code z, a decoder
rebuilds x from z. Plain, denoising (corrupted input, clean target) and variational (VAE)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn

from nnlab.errors import check_choice, check_range
from nnlab.models import layers as L

VARIANTS = ("dense", "conv")
NOISES = ("none", "gaussian", "masking")
CONV_LAYERS = {1: nn.Conv1d, 2: nn.Conv2d}


class AEOutput(NamedTuple):
    recon: torch.Tensor  # (B, *input_shape) the decoder's output (logits when the loss is bce)
    z: torch.Tensor  # (B, latent_dim) the code (a VAE: a sample in training, the mean in eval)
    mu: torch.Tensor | None = None  # (B, latent_dim) VAE only: mean of q(z|x)
    logvar: torch.Tensor | None = None  # (B, latent_dim) VAE only: log-variance of q(z|x)


def encoder_decoder(
    input_shape: Sequence[int],
    code_size: int,
    latent_dim: int,
    variant: str,
    hidden_sizes: Sequence[int],
    channels: Sequence[int],
    activation: str,
    dropout: float = 0.0,
) -> tuple[nn.Module, nn.Module]:
    """An encoder x -> (B, code_size) and a decoder (B, latent_dim) -> x, mirror images.

    dense: Flatten -> [Linear -> act -> (Dropout)] per hidden size -> Linear(code); the decoder
    runs the sizes backwards. conv: [Conv(stride 2) -> act -> (Dropout)] per channel count,
    halving the map each time (8x8 -> 4x4 -> 2x2), then a Linear to the code; the decoder maps
    the code back to the last feature map and alternates Upsample (to the exact size the encoder
    saw, so odd sides such as 7 come back as 7) with Conv, the last conv giving the input's
    channels. Dropout follows every hidden activation of both halves (none when 0), never the
    code nor the output.
    """
    shape = tuple(int(s) for s in input_shape)
    check_choice("model.variant", variant, VARIANTS)
    check_range("model.dropout", dropout, 0.0, 1.0, high_inclusive=False)

    def act() -> list[nn.Module]:  # a hidden activation and its dropout
        return [L.activation(activation), *([nn.Dropout(dropout)] if dropout > 0 else [])]

    if variant == "dense":
        sizes = [math.prod(shape), *hidden_sizes]
        enc: list[nn.Module] = [nn.Flatten()]
        for a, b in zip(sizes[:-1], sizes[1:]):
            enc += [nn.Linear(a, b), *act()]
        dec: list[nn.Module] = []
        back = [latent_dim, *reversed(sizes[1:])]
        for a, b in zip(back[:-1], back[1:]):
            dec += [nn.Linear(a, b), *act()]
        dec += [nn.Linear(back[-1], sizes[0]), nn.Unflatten(1, shape)]
        return nn.Sequential(*enc, nn.Linear(sizes[-1], code_size)), nn.Sequential(*dec)

    if len(shape) not in (2, 3):
        raise L.input_shape_error(
            "convolutional autoencoder", "images (C, H, W) or signals (C, L)", "images or signals", shape
        )
    conv = CONV_LAYERS[len(shape) - 1]
    sizes = [shape[1:]]  # spatial size before each block
    enc = []
    chans = [shape[0], *channels]
    for a, b in zip(chans[:-1], chans[1:]):
        enc += [conv(a, b, kernel_size=3, stride=2, padding=1), *act()]
        sizes.append(tuple((s + 1) // 2 for s in sizes[-1]))  # stride 2, padding 1, kernel 3
    last = (chans[-1], *sizes[-1])
    enc += [nn.Flatten(), nn.Linear(math.prod(last), code_size)]
    dec = [nn.Linear(latent_dim, math.prod(last)), *act(), nn.Unflatten(1, last)]
    for i in range(len(channels), 0, -1):  # back up through the sizes the encoder saw
        dec += [nn.Upsample(size=sizes[i - 1]), conv(chans[i], chans[i - 1], kernel_size=3, padding=1)]
        if i > 1:
            dec += act()
    return nn.Sequential(*enc), nn.Sequential(*dec)


class _Bottleneck(nn.Module):
    """What both autoencoders share: checks, input corruption, and the anomaly threshold."""

    def __init__(self, input_shape: Sequence[int], latent_dim: int, noise: str, noise_level: float) -> None:
        super().__init__()
        check_range("model.latent_dim", latent_dim, 1)
        check_choice("model.noise", noise, NOISES)
        check_range("model.noise_level", noise_level, 0.0, 1.0 if noise == "masking" else None)
        self.input_shape = tuple(int(s) for s in input_shape)
        self.latent_dim = latent_dim
        self.noise = noise
        self.noise_level = noise_level
        # Reconstruction error above which a sample is called an anomaly: chosen on the
        # validation split by the reconstruction task (NaN until then); saved with the weights.
        self.register_buffer("anomaly_threshold", torch.tensor(float("nan")))

    def corrupt(self, x: torch.Tensor) -> torch.Tensor:
        """The denoising autoencoder's input: x plus Gaussian noise of std `noise_level`, or x
        with a random `noise_level` fraction of its values set to 0 (masking). Training only:
        the target stays the clean x, so the model must learn the data's structure to undo it."""
        if not self.training or self.noise == "none" or self.noise_level == 0:
            return x
        if self.noise == "gaussian":
            return x + self.noise_level * torch.randn_like(x)
        return x * (torch.rand_like(x) >= self.noise_level)


class Autoencoder(_Bottleneck):
    """x -> encoder -> z (latent_dim numbers) -> decoder -> x_hat, trained to make x_hat = x.

    With a bottleneck smaller than the input the network must keep only what matters about x
    (a non-linear PCA: a linear autoencoder with MSE learns the top principal subspace). Samples
    unlike the training data reconstruct badly, which is what anomaly detection scores.

    Args:
        input_shape: the sample shape, given by the dataset (any for dense; (C, L) or (C, H, W)
            for conv).
        num_outputs: the dataset's class count; unused (the output is the input's shape).
        variant: dense (MLP encoder/decoder) or conv (strided convolutions, for images/signals).
        hidden_sizes: dense widths from the input towards the code, e.g. [128, 64].
        channels: conv channels per stride-2 block, e.g. [16, 32] (8x8 -> 4x4 -> 2x2).
        latent_dim: the bottleneck size: smaller forces more compression.
        activation: relu, leaky_relu, tanh, sigmoid or gelu.
        noise: none, gaussian or masking: corrupt the input in training (a denoising autoencoder).
        noise_level: the Gaussian noise's std (in the data's units), or the fraction masked.
        dropout: probability of zeroing a hidden activation of the encoder and the decoder in
            training, in [0, 1). It corrupts the hidden features where `noise` corrupts the
            input; a little (0.1) curbs overfitting of a wide network on little data.
    """

    variational = False

    def __init__(
        self,
        input_shape: Sequence[int],
        num_outputs: int = 0,
        variant: str = "dense",
        hidden_sizes: Sequence[int] = (128, 64),
        channels: Sequence[int] = (16, 32),
        latent_dim: int = 16,
        activation: str = "relu",
        noise: str = "none",
        noise_level: float = 0.0,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(input_shape, latent_dim, noise, noise_level)
        self.encoder, self.decoder = encoder_decoder(
            input_shape, latent_dim, latent_dim, variant, hidden_sizes, channels, activation, dropout
        )

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)  # (B, latent_dim)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)  # (B, *input_shape)

    def forward(self, x: torch.Tensor) -> AEOutput:
        z = self.encode(self.corrupt(x))
        return AEOutput(self.decode(z), z)


class VAE(_Bottleneck):
    """A variational autoencoder (Kingma & Welling, 2014): the encoder gives a Gaussian
    q(z|x) = N(mu, diag(exp(logvar))) instead of a point, z is drawn from it with the
    reparameterisation z = mu + exp(logvar / 2) * eps (eps ~ N(0, I), so gradients reach mu and
    logvar), and training maximises the evidence lower bound

        ELBO = E_q[log p(x|z)] - beta * KL(q(z|x) || N(0, I)),

    i.e. minimises reconstruction error + beta * KL (the task's `beta`; beta > 1 gives the
    smoother, more disentangled codes of a beta-VAE, beta < 1 sharper reconstructions). The KL
    term packs the codes of all samples around the origin, so decoding z ~ N(0, I) generates new
    samples (`sample`). In eval mode z = mu: reconstructions and anomaly scores are deterministic.

    Args: as `Autoencoder` (denoising noise and dropout included); latent_dim is the size of z.
    """

    variational = True

    def __init__(
        self,
        input_shape: Sequence[int],
        num_outputs: int = 0,
        variant: str = "dense",
        hidden_sizes: Sequence[int] = (128, 64),
        channels: Sequence[int] = (16, 32),
        latent_dim: int = 8,
        activation: str = "relu",
        noise: str = "none",
        noise_level: float = 0.0,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(input_shape, latent_dim, noise, noise_level)
        # One encoder output of 2 * latent_dim: mu and logvar side by side.
        self.encoder, self.decoder = encoder_decoder(
            input_shape, 2 * latent_dim, latent_dim, variant, hidden_sizes, channels, activation, dropout
        )

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.encoder(x).chunk(2, dim=1)  # (B, latent_dim) each
        return mu, logvar

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> AEOutput:
        mu, logvar = self.encode(self.corrupt(x))
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu) if self.training else mu
        return AEOutput(self.decode(z), z, mu, logvar)

    @torch.no_grad()
    def sample(self, z: torch.Tensor) -> torch.Tensor:
        """Decode codes drawn from the prior N(0, I): new samples, (B, *input_shape)."""
        return self.decode(z)


class EncoderClassifier(nn.Module):
    """An autoencoder's encoder with a linear head: x -> encoder -> z -> Linear -> logits.

    Built by the same `encoder_decoder` as `Autoencoder`, so its parameters carry the same
    names (`encoder.0.weight`, ...): `transfer.init_from=<autoencoder run>/checkpoints/best.ckpt`
    copies the pretrained encoder and leaves the head (and nothing else) to learn. This is the
    fine-tuning half of self-supervised pretraining: the autoencoder learned features from
    unlabeled rows (reconstructing masked or noisy inputs), the head maps them to the few labels.

    Args:
        input_shape: the sample shape, given by the dataset.
        num_outputs: classes (or regression targets), given by the dataset.
        variant, hidden_sizes, channels, latent_dim, activation, dropout: as in `Autoencoder`;
            they must match the pretrained autoencoder's for its weights to fit.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_outputs: int,
        variant: str = "dense",
        hidden_sizes: Sequence[int] = (128, 64),
        channels: Sequence[int] = (16, 32),
        latent_dim: int = 16,
        activation: str = "relu",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        check_range("model.latent_dim", latent_dim, 1)
        # The decoder is built and dropped: building both halves keeps the encoder's layers, and
        # so its parameter names, exactly those of the autoencoder.
        self.encoder, _ = encoder_decoder(
            input_shape, latent_dim, latent_dim, variant, hidden_sizes, channels, activation, dropout
        )
        self.head = nn.Linear(latent_dim, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))  # (B, *input_shape) -> (B, latent_dim) -> (B, num_outputs)
