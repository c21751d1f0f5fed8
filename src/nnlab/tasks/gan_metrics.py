"""How good are a GAN's samples? Numbers that compare generated samples with real ones.

A GAN's losses say who is winning the game, not how good the samples are: D's loss can sit
still while G improves, or G can fool a weak D with garbage. So the GAN task also measures the
samples themselves:

- `frechet_distance`: how far the generated distribution is from the real one, as the distance
  between Gaussians fitted to each (the FID of Heusel et al., 2017, uses Inception features of
  natural images; nnlab uses a small `Judge` classifier's features for images, the raw values
  for low-dimensional data). Lower is better; 0 only when the means and covariances match.
- `coverage`: how many classes (or modes) the samples fall in, and how evenly. Mode collapse,
  G producing only a few kinds of sample, shows here when FD alone could hide it.
- `fit_modes` / `assign_modes` / `mode_tv`: for data made of separated clusters (the ring of
  Gaussians), which cluster a sample is a good sample of, if any, and how far the generated
  spread over the clusters is from the data's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from nnlab.models.cnn import CNN


def _sqrt_psd(m: np.ndarray) -> np.ndarray:
    """The symmetric square root of a symmetric positive semi-definite matrix (eigenvalues that
    round-off made slightly negative are taken as 0)."""
    values, vectors = np.linalg.eigh((m + m.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def frechet_distance_gaussians(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    """The Fréchet (2-Wasserstein) distance, squared, between N(mu1, cov1) and N(mu2, cov2):

        ||mu1 - mu2||^2 + Tr(cov1 + cov2 - 2 (cov1 cov2)^(1/2))

    (Dowson & Landau, 1982). The trace of the matrix square root is computed as that of
    (cov1^(1/2) cov2 cov1^(1/2))^(1/2), a similar matrix that is symmetric positive
    semi-definite, so an eigen-decomposition gives it exactly, with none of the small imaginary
    parts `scipy.linalg.sqrtm(cov1 @ cov2)` can return. For diagonal covariances it reduces to
    sum_i (mu1_i - mu2_i)^2 + (sigma1_i - sigma2_i)^2.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    cov1, cov2 = np.atleast_2d(np.asarray(cov1, np.float64)), np.atleast_2d(np.asarray(cov2, np.float64))
    root1 = _sqrt_psd(cov1)
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(root1 @ cov2 @ root1), 0.0, None)).sum()
    value = float(((mu1 - mu2) ** 2).sum() + np.trace(cov1) + np.trace(cov2) - 2 * cross)
    return max(value, 0.0)  # round-off can leave -1e-12 for identical inputs


def frechet_distance(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted (mean, unbiased covariance) to two sets of
    vectors, (N, D) and (M, D), e.g. real and generated samples' features.

    The estimate is biased upwards by finite samples (roughly by Tr(cov) * (1/N + 1/M)), so
    compare values computed from sets of the same sizes, as the GAN task does every epoch.
    """
    a, b = (np.asarray(v.detach().cpu().double() if isinstance(v, torch.Tensor) else v, np.float64) for v in (a, b))
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    stats = [(v.mean(0), np.cov(v, rowvar=False)) for v in (a, b)]
    return frechet_distance_gaussians(*stats[0], *stats[1])


def coverage(
    labels: np.ndarray | torch.Tensor, num_classes: int, shares: Sequence[float] | None = None, min_share: float = 0.25
) -> tuple[int, float]:
    """(classes covered, normalised entropy) of the classes assigned to N samples.

    A class is covered when it gets at least `min_share` of its fair share of the N samples,
    N * shares[k] (shares: each class's frequency in the real data; uniform when None). A
    quarter by default: a class G produces only by accident (a few samples) does not count,
    while an uneven but real coverage does. Labels of -1 (a sample of no class, e.g. one far
    from every mode) count in N but for no class.

    The entropy of the histogram of assigned classes, divided by log K, is 1 when the samples
    spread exactly evenly over the K classes and 0 when all are of one class (full collapse).
    """
    labels = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels).reshape(-1)
    counts = np.bincount(labels[labels >= 0], minlength=num_classes)[:num_classes].astype(np.float64)
    fair = len(labels) * (np.full(num_classes, 1.0 / num_classes) if shares is None else np.asarray(shares))
    covered = int((counts >= min_share * fair).sum())
    p = counts[counts > 0] / max(counts.sum(), 1.0)
    entropy = float(-(p * np.log(p)).sum() / math.log(num_classes)) if num_classes > 1 else 1.0
    return covered, entropy


def fit_modes(x: torch.Tensor, y: torch.Tensor, num_modes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Centre (K, D) and scale (K,) of each labelled cluster: the mean of its samples and their
    root-mean-square deviation per dimension (the std of an isotropic Gaussian)."""
    x = x.flatten(1).double()
    centres = torch.stack([x[y == k].mean(0) for k in range(num_modes)])
    scales = torch.stack([(x[y == k] - centres[k]).pow(2).mean().sqrt() for k in range(num_modes)])
    return centres, scales


def assign_modes(
    x: torch.Tensor, centres: torch.Tensor, scales: torch.Tensor, max_distance: float = 3.0
) -> torch.Tensor:
    """(N,) index of the mode each sample is a good sample of, or -1 for none.

    A sample belongs to the mode nearest in units of that mode's scale when it lies within
    `max_distance` scales of its centre. In 2-D, 3 std keeps 98.9% of a Gaussian's own samples
    (1 - exp(-9/2)), so real data scores ~0.99 "high-quality" and a sample between two modes 0.
    """
    x = x.flatten(1).to(centres)
    distance = torch.cdist(x, centres) / scales  # (N, K) in units of each mode's scale
    nearest, mode = distance.min(1)
    return torch.where(nearest <= max_distance, mode, torch.full_like(mode, -1))


def mode_tv(generated: torch.Tensor, real: torch.Tensor, num_modes: int) -> float:
    """Total variation distance between how generated and real samples spread over the modes.

    Both are histograms of `assign_modes` labels over K + 1 bins (each mode, and "off every
    mode"); TV = 1/2 * sum |p_k - q_k| = 1 - sum min(p_k, q_k), in [0, 1]. It is 0 only when the
    samples hit every mode as often as the data does and miss as rarely, so it sees blur (samples
    between modes) and collapse (modes without samples) in one number, where the Fréchet
    distance in 2-D, matching only a mean and a covariance, rates a smeared circle as close as
    eight sharp modes.
    """

    def histogram(labels: torch.Tensor) -> torch.Tensor:
        return torch.bincount(labels + 1, minlength=num_modes + 1).double() / len(labels)  # bin 0: off-mode

    return 0.5 * (histogram(generated) - histogram(real)).abs().sum().item()


class Judge:
    """A small CNN classifier of the real images: the eyes the GAN's samples are judged with.

    Its penultimate layer (64 ReLU features) is the space `frechet_distance` is computed in, as
    FID uses Inception's: distances there reflect what tells the classes apart (strokes, shapes)
    more than raw pixel distances do. Its predictions on generated samples are the labels
    `coverage` counts, and for a conditional GAN the share that match the requested class.
    A judge that is itself inaccurate makes these numbers meaningless, so the task logs its
    validation accuracy.
    """

    def __init__(self, input_shape: Sequence[int], num_classes: int, device: torch.device) -> None:
        # Two conv blocks (8x8 -> 4x4 -> 2x2 on digits; 28 -> 14 -> 7 on MNIST) and a 64-wide layer.
        self.net = CNN(input_shape, num_classes, channels=(32, 64), dropout=0.0, fc_hidden=64).to(device)

    def fit(self, x: torch.Tensor, y: torch.Tensor, steps: int, batch_size: int = 64, lr: float = 1e-3) -> None:
        """Adam on cross-entropy for `steps` random mini-batches (draws from the global RNG:
        the caller forks and seeds it)."""
        optimizer = torch.optim.Adam(self.net.parameters(), lr=lr)
        self.net.train()
        for _ in range(steps):
            idx = torch.randint(len(x), (batch_size,), device=x.device)
            loss = F.cross_entropy(self.net(x[idx]), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        self.net.eval()

    @torch.no_grad()
    def features(self, x: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
        """(N, *input_shape) -> (N, 64): the input to the judge's last layer."""
        head = self.net.head[:-1]  # global pool, flatten, Linear(64, 64), ReLU
        return torch.cat([head(self.net.features(x[i : i + chunk])) for i in range(0, len(x), chunk)])

    @torch.no_grad()
    def predict(self, x: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
        """(N, *input_shape) -> (N,) predicted classes."""
        return torch.cat([self.net(x[i : i + chunk]).argmax(1) for i in range(0, len(x), chunk)])
