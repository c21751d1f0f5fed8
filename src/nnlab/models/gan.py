"""Generative adversarial networks: a generator and a discriminator held in one module.

A GAN (Goodfellow et al., 2014) trains two networks against each other. The generator G maps
noise z ~ N(0, I) to samples G(z); the discriminator D scores how likely a sample is to come
from the data rather than from G. D learns to tell them apart, G learns to fool D, and at the
game's equilibrium G's samples are distributed like the data. How the two updates alternate is
the task's business (`nnlab.tasks.gan`); this file only defines the networks.

Two families, picked by `variant`:

- dcgan (Radford et al., 2016), for images (C, H, W): G projects z to a small map and doubles
  its side with stride-2 transposed convolutions; D mirrors it with stride-2 convolutions.
  Batch norm in both (not on D's input layer nor G's output layer), ReLU in G, LeakyReLU(0.2)
  in D, no pooling and no dense hidden layers: the architecture guidelines that first made GANs
  train reliably on images.
- mlp, for vectors such as the 2-D ring of Gaussians (`data=ring`), where mode collapse (G
  covering only some of the modes) can be seen in a scatter plot.

Conditional GANs (Mirza & Osindero, 2014) also give both networks the class label: G draws a
sample of the requested class, and D judges whether (sample, label) pairs are real pairs.

PacGAN (Lin et al., 2018) lets D judge `pack` samples at once, concatenated (`pack_samples`):
a generator that puts many samples on the same few modes makes packs of near-copies, which real
packs almost never are, so D can catch mode collapse that it cannot see one sample at a time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from nnlab.errors import ConfigValueError, DataMismatchError, check_choice, check_range, did_you_mean
from nnlab.models.layers import ACTIVATIONS

VARIANTS = ("auto", "dcgan", "mlp")
# G's last layer, by name: the activations of `nnlab.models.layers` that bound a sample to the
# data's range (sigmoid: [0, 1], tanh: [-1, 1]), or none for unbounded data. The others there
# (relu, gelu, ...) are hidden-layer choices that match no data range, so they are not offered.
# The hidden activations are DCGAN's and fixed: ReLU in G, LeakyReLU(LEAKY_SLOPE) in D.
OUTPUT_ACTIVATIONS = {**{name: ACTIVATIONS[name] for name in ("sigmoid", "tanh")}, "none": nn.Identity}
INITS = ("dcgan", "default")
LEAKY_SLOPE = 0.2  # DCGAN's LeakyReLU slope in D: keeps a gradient for samples D is sure are fake


def pack_samples(x: torch.Tensor, pack: int) -> torch.Tensor:
    """(B, F) -> (ceil(B / pack), pack * F), or (B, C, H, W) -> (ceil(B / pack), pack * C, H, W):
    each run of `pack` consecutive samples joined into one. A batch that does not divide evenly is
    topped up with its own first samples, cycled (the last pack stays a pack of samples of the
    batch's kind, real or fake, and every sample is judged)."""
    extra = -len(x) % pack
    if extra:
        x = x[torch.arange(len(x) + extra, device=x.device) % len(x)]
    return x.reshape(len(x) // pack, pack * x.shape[1], *x.shape[2:])


def with_label_vector(x: torch.Tensor, labels: torch.Tensor | None, num_classes: int) -> torch.Tensor:
    """(B, F) -> (B, F + K): the one-hot label appended (unchanged when unconditional)."""
    if num_classes == 0:
        return x
    return torch.cat([x, F.one_hot(labels, num_classes).to(x.dtype)], 1)


class MLPGenerator(nn.Module):
    """z (+ one-hot label) -> [Linear -> (BatchNorm) -> ReLU] * len(widths) -> Linear -> output activation."""

    def __init__(
        self,
        latent_dim: int,
        sample_shape: tuple[int, ...],
        widths: Sequence[int],
        num_classes: int,
        batch_norm: bool,
        output_activation: str,
    ) -> None:
        super().__init__()
        self.sample_shape, self.num_classes = sample_shape, num_classes
        layers: list[nn.Module] = []
        width = latent_dim + num_classes
        for w in widths:
            layers += [nn.Linear(width, w, bias=not batch_norm), *([nn.BatchNorm1d(w)] if batch_norm else [])]
            layers.append(nn.ReLU())
            width = w
        layers += [nn.Linear(width, math.prod(sample_shape)), OUTPUT_ACTIVATIONS[output_activation]()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        h = with_label_vector(z, labels, self.num_classes)  # (B, latent_dim + K)
        return self.net(h).view(len(z), *self.sample_shape)  # (B, *sample_shape)


class MLPDiscriminator(nn.Module):
    """x (flattened, + one-hot label) -> [Linear -> (BatchNorm) -> LeakyReLU -> (Dropout)] * len(widths)
    -> Linear -> logit. With `pack` > 1, `pack` flattened samples side by side get one logit."""

    def __init__(
        self,
        sample_shape: tuple[int, ...],
        widths: Sequence[int],
        num_classes: int,
        batch_norm: bool,
        dropout: float = 0.0,
        pack: int = 1,
    ) -> None:
        super().__init__()
        self.num_classes, self.pack = num_classes, pack
        layers: list[nn.Module] = []
        width = math.prod(sample_shape) * pack + num_classes
        for i, w in enumerate(widths):
            norm = batch_norm and i > 0  # no batch norm on the input layer, as in DCGAN's D
            layers += [nn.Linear(width, w, bias=not norm), *([nn.BatchNorm1d(w)] if norm else [])]
            layers += [nn.LeakyReLU(LEAKY_SLOPE), *([nn.Dropout(dropout)] if dropout > 0 else [])]
            width = w
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.pack > 1:  # (B, F) -> (B / pack, pack * F): one logit per pack, given to each member
            return self.net(pack_samples(x.flatten(1), self.pack)).view(-1).repeat_interleave(self.pack)[: len(x)]
        h = with_label_vector(x.flatten(1), labels, self.num_classes)  # (B, F + K)
        return self.net(h).view(-1)  # (B,) logits: log D / (1 - D)


class DCGenerator(nn.Module):
    """DCGAN's generator: z as a 1x1 map, projected to a (widths[0], h0, w0) map, then one
    stride-2 transposed convolution per width, each doubling the side, the last to C channels.

    On 8x8 digits with widths [128, 64]: 1x1 -> 2x2 -> 4x4 -> 8x8; on 28x28 MNIST: 1x1 -> 7x7 ->
    14x14 -> 28x28.
    """

    def __init__(
        self,
        latent_dim: int,
        image_shape: tuple[int, int, int],
        widths: Sequence[int],
        num_classes: int,
        batch_norm: bool,
        output_activation: str,
    ) -> None:
        super().__init__()
        channels, height, width = image_shape
        self.num_classes = num_classes
        start = (height >> len(widths), width >> len(widths))

        def block(conv: nn.Module, out: int) -> list[nn.Module]:
            return [conv, *([nn.BatchNorm2d(out)] if batch_norm else []), nn.ReLU()]

        # A transposed conv with kernel = the start size maps a 1x1 input to exactly that size.
        layers = block(nn.ConvTranspose2d(latent_dim + num_classes, widths[0], start, bias=not batch_norm), widths[0])
        for w_in, w_out in zip(widths[:-1], widths[1:]):
            layers += block(nn.ConvTranspose2d(w_in, w_out, 4, 2, 1, bias=not batch_norm), w_out)
        layers += [nn.ConvTranspose2d(widths[-1], channels, 4, 2, 1), OUTPUT_ACTIVATIONS[output_activation]()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        h = with_label_vector(z, labels, self.num_classes)[:, :, None, None]  # (B, latent_dim + K, 1, 1)
        # (B, widths[0], h0, w0) -> (B, widths[1], 2*h0, 2*w0) -> ... -> (B, C, H, W)
        return self.net(h)


class DCDiscriminator(nn.Module):
    """DCGAN's discriminator: G's layers mirrored. One stride-2 convolution per width (reversed),
    each halving the side, then a convolution as large as the remaining map gives one logit.
    With `dropout` > 0, a Dropout follows each LeakyReLU. With `pack` > 1, `pack` images stacked
    along the channels get one logit.

    Conditional: the label enters as K extra input channels, the one-hot vector broadcast over
    the image, so every filter of the first layer sees which class the image claims to be.
    """

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        widths: Sequence[int],
        num_classes: int,
        batch_norm: bool,
        dropout: float = 0.0,
        pack: int = 1,
    ) -> None:
        super().__init__()
        channels, height, width = image_shape
        self.num_classes, self.pack = num_classes, pack
        end = (height >> len(widths), width >> len(widths))
        widths = list(reversed(widths))

        def act() -> list[nn.Module]:
            return [nn.LeakyReLU(LEAKY_SLOPE), *([nn.Dropout(dropout)] if dropout > 0 else [])]

        layers: list[nn.Module] = [nn.Conv2d(channels * pack + num_classes, widths[0], 4, 2, 1), *act()]
        for w_in, w_out in zip(widths[:-1], widths[1:]):
            layers += [nn.Conv2d(w_in, w_out, 4, 2, 1, bias=not batch_norm)]
            layers += [*([nn.BatchNorm2d(w_out)] if batch_norm else []), *act()]
        layers.append(nn.Conv2d(widths[-1], 1, end))  # (B, 1, 1, 1)
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.pack > 1:  # (B, C, H, W) -> (B / pack, pack * C, H, W): one logit per pack, given to each member
            return self.net(pack_samples(x, self.pack)).view(-1).repeat_interleave(self.pack)[: len(x)]
        if self.num_classes:
            maps = F.one_hot(labels, self.num_classes).to(x.dtype)[:, :, None, None]
            x = torch.cat([x, maps.expand(-1, -1, *x.shape[2:])], 1)  # (B, C + K, H, W)
        # (B, widths[-1], H/2, W/2) -> ... -> (B, widths[0], h0, w0) -> (B, 1, 1, 1)
        return self.net(x).view(-1)  # (B,) logits


class GAN(nn.Module):
    """A generator and a discriminator, sized from the data; the engine checkpoints both.

    `model(z, labels)` runs the generator: (B, latent_dim) noise -> (B, *input_shape) samples.
    `model.discriminator(x, labels)` gives one logit per sample (D(x) = sigmoid(logit)), which
    the task feeds to binary cross-entropy with logits (stable where D saturates).

    Args:
        input_shape: (C, H, W) images or (F,) vectors, given by the dataset.
        num_outputs: number of classes, given by the dataset; used when `conditional`.
        variant: auto (dcgan for images (C, H, W), mlp otherwise), dcgan or mlp.
        latent_dim: size of the noise z. Large enough to vary every factor of the data; DCGAN
            uses 100 for 64x64 images.
        widths: G's hidden widths from the noise towards the sample (channels for dcgan); D
            uses them reversed. dcgan: one stride-2 layer per width, so the image side must be
            divisible by 2**len(widths): [128, 64] starts 8x8 digits at 2x2 and MNIST at 7x7.
        conditional: give both networks the class label (classification data only).
        output_activation: G's last layer, matching the data's range: sigmoid for pixels in
            [0, 1] (data.standardize=false), tanh for [-1, 1], none for unbounded data (the ring,
            or standardized features).
        batch_norm: batch norm in G's hidden layers and D's (except its input layer); it
            steadies DCGAN training, and its per-batch statistics are one reason D sees real
            and fake samples in separate batches.
        init: dcgan (weights ~ N(0, 0.02), batch norm scales ~ N(1, 0.02), as Radford et al.)
            or default (PyTorch's). The `init` config group (`nnlab.models.init`), when not
            default, is applied after the model is built and re-draws the Linear and conv
            weights over this (the batch norm scales keep DCGAN's N(1, 0.02)).
        d_dropout: probability of zeroing an activation after each of D's hidden layers in
            training, in [0, 1); G gets none. Goodfellow et al. (2014) trained their
            discriminator with dropout: it keeps D from memorising the real samples of a small
            data set and overpowering G, whose gradient then vanishes. Try 0.3.
        pack: PacGAN's packing degree (Lin et al., 2018): D scores `pack` samples at once,
            all real or all generated, and each sample of a pack gets the pack's logit, so the
            task's losses are unchanged. 1 is a plain D; Lin et al. use 2-4, and show it on this
            ring of Gaussians among others (experiment=gan_mode_collapse). Unconditional GANs
            only.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_outputs: int,
        variant: str = "auto",
        latent_dim: int = 64,
        widths: Sequence[int] = (128, 64),
        conditional: bool = False,
        output_activation: str = "sigmoid",
        batch_norm: bool = True,
        init: str = "dcgan",
        d_dropout: float = 0.0,
        pack: int = 1,
    ) -> None:
        super().__init__()
        check_choice("model.variant", variant, VARIANTS)
        check_range("model.latent_dim", latent_dim, 1)
        check_choice("model.output_activation", output_activation, OUTPUT_ACTIVATIONS)
        if init not in INITS:
            raise ConfigValueError(
                f"model.init={init!r} is not a GAN initialisation.{did_you_mean(init, INITS)} Choose one of: "
                f"{', '.join(INITS)}. Other schemes (xavier_uniform, kaiming_normal, ... in configs/init/) "
                "are chosen with the init config group, e.g. init=kaiming_normal: it is applied after the "
                "model is built, over model.init."
            )
        check_range("model.d_dropout", d_dropout, 0.0, 1.0, high_inclusive=False)
        check_range("model.pack", pack, 1)
        if pack > 1 and conditional:
            raise ConfigValueError(
                f"model.pack={pack} packs samples of any class together, but model.conditional=true judges each "
                "sample with its own label. Set model.pack=1 for a conditional GAN, or model.conditional=false."
            )
        if len(widths) == 0:
            raise ConfigValueError(
                "model.widths=[] gives the networks no hidden layer: give at least one, e.g. [128, 64]."
            )
        for w in widths:
            check_range("model.widths[*]", w, 1)
        shape = tuple(int(s) for s in input_shape)
        if variant == "auto":
            variant = "dcgan" if len(shape) == 3 else "mlp"
        if variant == "dcgan":
            _check_image_shape(shape, len(widths))
        self.input_shape, self.variant, self.latent_dim = shape, variant, latent_dim
        self.conditional = conditional
        self.num_classes = int(num_outputs) if conditional else 0
        k = self.num_classes
        if variant == "dcgan":
            self.generator = DCGenerator(latent_dim, shape, widths, k, batch_norm, output_activation)
            self.discriminator = DCDiscriminator(shape, widths, k, batch_norm, d_dropout, pack)
        else:
            self.generator = MLPGenerator(latent_dim, shape, widths, k, batch_norm, output_activation)
            self.discriminator = MLPDiscriminator(shape, list(reversed(widths)), k, batch_norm, d_dropout, pack)
        if init == "dcgan":
            self.apply(_dcgan_init)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.generator(z, labels)  # (B, latent_dim) -> (B, *input_shape)


def _check_image_shape(shape: tuple[int, ...], depth: int) -> None:
    if len(shape) != 3:
        raise DataMismatchError(
            f"model.variant=dcgan needs images (C, H, W), but the dataset gives samples of shape {shape}. "
            "Use model.variant=mlp (or auto), or choose an image dataset with data=<name>."
        )
    factor = 2**depth
    if shape[1] % factor or shape[2] % factor:
        raise ConfigValueError(
            f"model.widths has {depth} entries, one stride-2 layer each, so the image side must be divisible "
            f"by 2**{depth} = {factor}, but the dataset's images are {shape[1]}x{shape[2]}. Give model.widths "
            "fewer entries (two fit both 8x8 digits and 28x28 MNIST)."
        )


def _dcgan_init(m: nn.Module) -> None:
    """DCGAN's initialisation: conv and linear weights ~ N(0, 0.02), batch norm scale ~ N(1, 0.02)."""
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(m.weight, 0.0, 0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)
