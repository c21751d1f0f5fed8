"""On-device image augmentation: exact flips and crops, seeded randomness, image-only."""

from __future__ import annotations

import pytest
import torch

from nnlab.data import sklearn
from nnlab.data.augment import ImageAugment
from nnlab.data.datamodule import DataModule
from nnlab.data.edits.order import FixedOrder
from nnlab.errors import ConfigValueError

X = torch.arange(2 * 1 * 4 * 5, dtype=torch.float32).reshape(2, 1, 4, 5)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_flip_mirrors_some_images_exactly() -> None:
    out = ImageAugment(hflip=True)(X.repeat(16, 1, 1, 1), gen())
    flipped = [torch.equal(o, x.flip(-1)) for o, x in zip(out, X.repeat(16, 1, 1, 1))]
    kept = [torch.equal(o, x) for o, x in zip(out, X.repeat(16, 1, 1, 1))]
    assert all(f or k for f, k in zip(flipped, kept))
    assert 0 < sum(flipped) < 32


def test_crop_is_a_whole_pixel_shift_with_zero_fill() -> None:
    out = ImageAugment(crop_padding=1)(X, gen(3))
    for o, x in zip(out, X):
        matches = []
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                shifted = torch.zeros_like(x)
                src = x[:, max(0, -dy) : 4 - max(0, dy), max(0, -dx) : 5 - max(0, dx)]
                shifted[:, max(0, dy) : 4 - max(0, -dy), max(0, dx) : 5 - max(0, -dx)] = src
                matches.append(torch.equal(o, shifted))
        assert sum(matches) >= 1  # exactly one of the 9 shifts (or several if they coincide)


def test_noise_has_the_configured_std_and_is_seeded() -> None:
    x = torch.zeros(64, 3, 16, 16)
    a = ImageAugment(noise_std=0.5)
    out = a(x, gen(1))
    assert out.std().item() == pytest.approx(0.5, rel=0.03)
    assert torch.equal(out, a(x, gen(1)))  # same generator state, same augmentation
    assert not torch.equal(out, a(x, gen(2)))


def test_identity_when_all_off() -> None:
    assert torch.equal(ImageAugment()(X, gen()), X)


def test_affine_keeps_shape_and_changes_images() -> None:
    out = ImageAugment(degrees=15, translate=0.1, scale=0.1)(X, gen())
    assert out.shape == X.shape and torch.isfinite(out).all()
    assert not torch.equal(out, X)


def test_rejects_non_image_batches() -> None:
    with pytest.raises(ConfigValueError, match="augmentation=none"):
        ImageAugment(noise_std=0.1)(torch.zeros(4, 10), gen())


def test_data_module_augments_training_batches_only_and_per_epoch_seeded() -> None:
    data = DataModule(sklearn.digits(), edits=[FixedOrder()], augment=ImageAugment(noise_std=0.1), seed=0)
    plain = DataModule(sklearn.digits(), edits=[FixedOrder()], seed=0)
    for d in (data, plain):
        d.setup(torch.device("cpu"))
    (xa, _), (xp, _) = next(data.train_batches(0)), next(plain.train_batches(0))
    assert not torch.equal(xa, xp) and (xa - xp).std().item() == pytest.approx(0.1, rel=0.1)
    assert torch.equal(next(data.train_batches(0))[0], xa)  # replayable per epoch
    assert not torch.equal(next(data.train_batches(1))[0], xa)
    assert torch.equal(next(data.eval_batches("val"))[0], next(plain.eval_batches("val"))[0])


def test_pixels_move_in_raw_units_when_the_data_is_standardized_per_pixel() -> None:
    """A shifted batch of standardized digits is the standardized batch of shifted raw digits
    (moving z-scores would put each value under another pixel's mean and std)."""
    data = DataModule(sklearn.digits(), edits=[FixedOrder()], augment=ImageAugment(crop_padding=1), seed=0)
    data.setup(torch.device("cpu"))
    mean, std = (torch.as_tensor(a) for a in data.x_scale)
    x = next(data._train_batches(0))[0]  # the standardized batch before augmentation
    g = torch.Generator().manual_seed(data.seed * 1_000_003 + 0 + 1)  # the epoch's generator
    expected = (ImageAugment(crop_padding=1)(x * std + mean, g) - mean) / std
    got = next(data.train_batches(0))[0]
    assert torch.allclose(got, expected, atol=1e-5)
    moved_z = ImageAugment(crop_padding=1)(x, torch.Generator().manual_seed(1))
    assert not torch.allclose(got, moved_z, atol=1e-3)  # not the z-scores moved
    border = got[:, :, :, 0]  # digits' left column is blank: a shift brings in background, in z units
    assert torch.allclose(border.min(), ((torch.zeros(()) - mean) / std)[:, :, 0].min(), atol=1e-5)
