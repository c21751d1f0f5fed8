"""Image augmentation applied to each training batch on its device, with no DataLoader workers."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from nnlab.errors import ConfigValueError, check_range


class ImageAugment:
    """Random flips, crops, small affine warps and noise for image batches (B, C, H, W).

    Everything runs as batched tensor ops where the batch already lives (GPU or CPU), drawn from
    a generator the data module seeds per epoch, so an epoch's augmentations can be replayed.

    - hflip: mirror each image left-right with probability 1/2 (fine for objects, wrong for
      digits and text).
    - crop_padding: "random crop with padding p": shift each image by a whole number of pixels
      in [-p, p] along each axis, filling with 0 (the background, in raw units: see below).
    - degrees, translate, scale: a random affine warp per image, rotation in [-degrees, degrees],
      shift up to `translate` x the image size, zoom in [1 - scale, 1 + scale]; bilinear.
    - noise_std: add Gaussian noise of this std (in standardized units).
    Validation and test batches are never augmented.

    Flips, crops and warps move pixels, so they work in the dataset's raw units when the batch
    comes standardized pixel by pixel: given `scale` = (offset, divisor) of that standardization
    (the data module passes its own), the batch is unscaled, moved (0 fills in the background, as
    in the raw image) and scaled back. Moving z-scores instead would put each value under another
    pixel's mean and std: a shifted batch would not be the shifted digits. The noise is added
    afterwards, in the units the model sees.
    """

    def __init__(
        self,
        hflip: bool = False,
        crop_padding: int = 0,
        degrees: float = 0.0,
        translate: float = 0.0,
        scale: float = 0.0,
        noise_std: float = 0.0,
    ) -> None:
        check_range("augmentation.crop_padding", crop_padding, 0)
        check_range("augmentation.degrees", degrees, 0.0, 180.0)
        check_range("augmentation.translate", translate, 0.0, 1.0)
        check_range("augmentation.scale", scale, 0.0, 1.0, high_inclusive=False)
        check_range("augmentation.noise_std", noise_std, 0.0)
        self.hflip = hflip
        self.crop_padding = crop_padding
        self.degrees = degrees
        self.translate = translate
        self.scale = scale
        self.noise_std = noise_std

    def __call__(
        self, x: torch.Tensor, generator: torch.Generator, scale: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> torch.Tensor:
        if x.dim() != 4:
            raise ConfigValueError(
                f"augmentation works on image batches (B, C, H, W), but this dataset gives batches of "
                f"shape {tuple(x.shape)}. Use augmentation=none for tables, signals and sequences."
            )
        b, _, h, w = x.shape

        def uniform(low: float, high: float) -> torch.Tensor:
            return low + (high - low) * torch.rand(b, generator=generator, device=x.device)

        moves = self.hflip or self.crop_padding or self.degrees > 0 or self.translate > 0 or self.scale > 0
        if scale is not None and moves:
            offset, divisor = scale
            x = x * divisor + offset  # (B, C, H, W) in raw units; offset and divisor are (C, H, W)
        if self.hflip:
            flip = torch.rand(b, generator=generator, device=x.device) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        warp = self.degrees > 0 or self.translate > 0 or self.scale > 0
        if self.crop_padding or warp:
            # One affine map per image, in the normalized [-1, 1] coordinates of affine_grid:
            # a shift of k pixels is 2k / size there.
            p = self.crop_padding
            shift_x = torch.randint(-p, p + 1, (b,), generator=generator, device=x.device) * (2 / w)
            shift_y = torch.randint(-p, p + 1, (b,), generator=generator, device=x.device) * (2 / h)
            angle = uniform(-self.degrees, self.degrees) * (math.pi / 180)
            zoom = uniform(1 - self.scale, 1 + self.scale)
            shift_x = shift_x + uniform(-self.translate, self.translate) * 2
            shift_y = shift_y + uniform(-self.translate, self.translate) * 2
            cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
            theta = torch.stack([torch.stack([cos, -sin, -shift_x], 1), torch.stack([sin, cos, -shift_y], 1)], 1)
            grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)  # (B, H, W, 2)
            mode = "bilinear" if warp else "nearest"  # whole-pixel crops stay exact
            x = F.grid_sample(x, grid, mode=mode, padding_mode="zeros", align_corners=False)
        if scale is not None and moves:
            x = (x - offset) / divisor
        if self.noise_std > 0:
            x = x + self.noise_std * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return x
