"""Synthetic 2-D classification sets, generated from a seed: the classic toy problems for
seeing what a linear model cannot do (xor, moons, circles) and what depth buys (spirals)."""

from __future__ import annotations

import numpy as np

from nnlab.data.arrays import ArrayDataset
from nnlab.errors import check_range


def blobs(n_samples: int = 500, num_classes: int = 2, spread: float = 0.5, seed: int = 0) -> ArrayDataset:
    """Gaussian clusters of std `spread` around centres spaced 4 apart on a circle: linearly
    separable (one-vs-rest) with overwhelming probability while spread <= 0.7."""
    check_range("data.dataset.n_samples", n_samples, num_classes)
    check_range("data.dataset.num_classes", num_classes, 2)
    check_range("data.dataset.spread", spread, 0.0, low_inclusive=False)
    rng = np.random.default_rng(seed)
    y = np.arange(n_samples) % num_classes
    angle = 2 * np.pi * np.arange(num_classes) / num_classes
    radius = 2.0 / np.sin(np.pi / num_classes)  # neighbouring centres 4 apart
    centres = radius * np.stack([np.cos(angle), np.sin(angle)], 1)
    x = centres[y] + rng.normal(0.0, spread, (n_samples, 2))
    return ArrayDataset(x, y, "classification")


def xor(n_samples: int = 1000, spread: float = 0.3, seed: int = 0) -> ArrayDataset:
    """XOR: four Gaussian clusters of std `spread` at the corners (+-1, +-1); the label is 1 where
    the two coordinates' signs differ (quadrants 2 and 4), else 0.

    The classic problem no single threshold unit solves (Minsky & Papert, 1969): each class sits
    on a diagonal, so any line leaves at least one of the four clusters on the wrong side, and the
    best linear classifier is right on 3 clusters of 4 (accuracy 0.75 at most; a line through
    the middle gets 0.5). One hidden layer of two units already suffices. Clusters overlap when spread nears 1.
    """
    check_range("data.dataset.n_samples", n_samples, 4)
    check_range("data.dataset.spread", spread, 0.0, low_inclusive=False)
    rng = np.random.default_rng(seed)
    corner = np.arange(n_samples) % 4  # equal clusters: (-,-) (-,+) (+,-) (+,+)
    signs = np.stack([np.where(corner >= 2, 1.0, -1.0), np.where(corner % 2 == 1, 1.0, -1.0)], 1)
    x = signs + rng.normal(0.0, spread, (n_samples, 2))
    y = (signs[:, 0] != signs[:, 1]).astype(np.int64)
    return ArrayDataset(x, y, "classification")


def moons(n_samples: int = 1000, noise: float = 0.1, seed: int = 0) -> ArrayDataset:
    """Two interleaving half circles (scikit-learn's make_moons), 2 classes."""
    from sklearn.datasets import make_moons

    check_range("data.dataset.n_samples", n_samples, 2)
    check_range("data.dataset.noise", noise, 0.0)
    x, y = make_moons(n_samples=n_samples, noise=noise, random_state=seed)
    return ArrayDataset(x, y, "classification")


def circles(n_samples: int = 1000, noise: float = 0.05, factor: float = 0.5, seed: int = 0) -> ArrayDataset:
    """A small circle inside a large one (scikit-learn's make_circles), 2 classes.

    factor: radius of the inner circle relative to the outer one, in (0, 1).
    """
    from sklearn.datasets import make_circles

    check_range("data.dataset.n_samples", n_samples, 2)
    check_range("data.dataset.noise", noise, 0.0)
    check_range("data.dataset.factor", factor, 0.0, 1.0, low_inclusive=False, high_inclusive=False)
    x, y = make_circles(n_samples=n_samples, noise=noise, factor=factor, random_state=seed)
    return ArrayDataset(x, y, "classification")


def spirals(
    n_samples: int = 1000, num_classes: int = 2, turns: float = 1.5, noise: float = 0.1, seed: int = 0
) -> ArrayDataset:
    """Interleaved Archimedean spirals, one arm per class.

    Point i of arm k sits at radius r in [0.1, 1] and angle 2*pi*turns*r + 2*pi*k/num_classes,
    plus Gaussian noise of std `noise * 0.1`. More turns make the boundary harder to learn.
    """
    check_range("data.dataset.n_samples", n_samples, num_classes)
    check_range("data.dataset.num_classes", num_classes, 2)
    check_range("data.dataset.turns", turns, 0.0, low_inclusive=False)
    check_range("data.dataset.noise", noise, 0.0)
    rng = np.random.default_rng(seed)
    y = np.arange(n_samples) % num_classes
    r = rng.uniform(0.1, 1.0, n_samples)
    theta = 2 * np.pi * turns * r + 2 * np.pi * y / num_classes
    x = np.stack([r * np.cos(theta), r * np.sin(theta)], axis=1)
    x += rng.normal(0.0, 0.1 * noise, x.shape)
    return ArrayDataset(x, y, "classification")


def ring(n_samples: int = 5000, modes: int = 8, radius: float = 2.0, std: float = 0.02, seed: int = 0) -> ArrayDataset:
    """A ring of `modes` Gaussians of std `std`, centred evenly on a circle of `radius`; the label
    is the mode index. The standard test of a GAN's mode collapse (Metz et al., 2017, "Unrolled
    GANs", use 8 modes, radius 2, std 0.02): modes this narrow and far apart leave no path between
    them, so a generator that settles on some of them rarely finds the others."""
    check_range("data.dataset.n_samples", n_samples, modes)
    check_range("data.dataset.modes", modes, 2)
    check_range("data.dataset.radius", radius, 0.0, low_inclusive=False)
    check_range("data.dataset.std", std, 0.0, low_inclusive=False)
    rng = np.random.default_rng(seed)
    y = np.arange(n_samples) % modes
    angle = 2 * np.pi * np.arange(modes) / modes
    centres = radius * np.stack([np.cos(angle), np.sin(angle)], 1)
    x = centres[y] + rng.normal(0.0, std, (n_samples, 2))
    return ArrayDataset(x, y, "classification")


def fake_images(
    n_samples: int = 10000,
    channels: int = 3,
    height: int = 32,
    width: int = 32,
    num_classes: int = 10,
    signal: float = 0.3,
    max_shift: int = 4,
    seed: int = 0,
) -> ArrayDataset:
    """CIFAR-shaped random images with a learnable label: for benchmarks and smoke tests that
    need image-sized tensors without a download (`data=fake_cifar`).

    Each class has a smooth pattern: Gaussian noise on a 4x4 grid per channel, upsampled to
    height x width, then rolled by a random shift of up to `max_shift` pixels per axis (so the
    pattern is not pinned to positions, as in real images). A sample is its class's shifted
    pattern times `signal` plus pixel noise of std 1: a coarse, translated signal under heavy
    noise, which a CNN's pooled filters pick up and a single pixel does not.

    Args:
        n_samples: images, split evenly over the classes (row i has class i % num_classes).
        channels, height, width: the shape of one image, (C, H, W).
        num_classes: at least 2.
        signal: amplitude of the class pattern against noise of std 1; lower is harder.
        max_shift: largest roll of the pattern, in pixels, along each axis; 0 for none.
        seed: the same seed gives the same images.
    """
    check_range("data.dataset.n_samples", n_samples, num_classes)
    check_range("data.dataset.num_classes", num_classes, 2)
    for key, value in (("channels", channels), ("height", height), ("width", width)):
        check_range(f"data.dataset.{key}", value, 1)
    check_range("data.dataset.signal", signal, 0.0, low_inclusive=False)
    check_range("data.dataset.max_shift", max_shift, 0)
    rng = np.random.default_rng(seed)
    grid = rng.normal(0.0, 1.0, (num_classes, channels, 4, 4))
    # Nearest-neighbour upsampling of the 4x4 grid, then cropped to (height, width).
    rows = np.minimum(np.arange(height) * 4 // height, 3)
    cols = np.minimum(np.arange(width) * 4 // width, 3)
    patterns = grid[:, :, rows][:, :, :, cols]  # (K, C, H, W)
    y = np.arange(n_samples) % num_classes
    x = rng.normal(0.0, 1.0, (n_samples, channels, height, width)).astype(np.float32)
    shifts = rng.integers(-max_shift, max_shift + 1, (n_samples, 2))
    for i in range(n_samples):
        x[i] += signal * np.roll(patterns[y[i]], tuple(shifts[i]), axis=(1, 2))
    return ArrayDataset(x, y, "classification")
