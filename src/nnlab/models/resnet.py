"""A small residual network for 32x32 images: the CIFAR ResNet of He et al. (2016), section 4.2."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from nnlab.errors import ConfigValueError, check_range
from nnlab.models import layers as L


class BasicBlock(nn.Module):
    """Two 3x3 convs with batch norm, added to a shortcut: out = relu(F(x) + shortcut(x)).

    The shortcut is the identity when the shape is kept, else a strided 1x1 conv with batch norm
    (the paper's option B) that matches the channels and halves the map like the first conv.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))  # (B, C_in, H, W) -> (B, C_out, H/s, W/s)
        out = self.bn2(self.conv2(out))  # (B, C_out, H/s, W/s)
        return torch.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """CIFAR-style ResNet: 3x3 stem -> stages of BasicBlocks -> global average pool -> Linear.

    A residual block learns a correction F(x) added to its input instead of a whole new map, so
    the signal and its gradient pass through the identity path unchanged: networks of tens of
    layers train where a plain stack of the same depth trains worse than a shallow one. Each
    stage after the first halves the map with a stride-2 first block and (by the usual rule)
    doubles the channels, keeping the compute per layer about constant.

    Depth is 2 + 2 * sum(blocks_per_stage) weighted layers: [1, 1, 1] is ResNet-8, [3, 3, 3]
    ResNet-20, [5, 5, 5] ResNet-32 (the paper's CIFAR nets use widths [16, 32, 64]; ResNet-20
    has 0.27 M parameters and reaches about 91.7% on CIFAR-10 with the paper's schedule and
    flip/crop augmentation).

    Args:
        input_shape: (C, H, W), given by the dataset. Built for 32x32; any H, W >= 1 works
            (global pooling makes the head size-independent).
        num_outputs: classes for classification, targets for regression.
        widths: output channels of each stage, one stage per entry.
        blocks_per_stage: BasicBlocks in each stage, one entry per stage (same length as widths).
        stem_width: channels of the 3x3 stem conv; null uses widths[0].
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_outputs: int,
        widths: Sequence[int] = (16, 32, 64),
        blocks_per_stage: Sequence[int] = (3, 3, 3),
        stem_width: int | None = None,
    ) -> None:
        super().__init__()
        if len(input_shape) != 3:
            raise L.input_shape_error("resnet", "images (C, H, W)", "images", input_shape)
        if len(widths) == 0:
            raise ConfigValueError("model.widths=[] has no stage: give at least one, e.g. [16, 32, 64].")
        if len(blocks_per_stage) != len(widths):
            raise ConfigValueError(
                f"model.blocks_per_stage={list(blocks_per_stage)} has {len(blocks_per_stage)} entries but "
                f"model.widths={list(widths)} has {len(widths)}: give one block count per stage, "
                f"e.g. model.blocks_per_stage=[{', '.join(['3'] * len(widths))}]."
            )
        for w in widths:
            check_range("model.widths[*]", w, 1)
        for n in blocks_per_stage:
            check_range("model.blocks_per_stage[*]", n, 1)
        stem_width = int(widths[0]) if stem_width is None else stem_width
        check_range("model.stem_width", stem_width, 1)
        self.input_shape = tuple(int(s) for s in input_shape)

        self.stem = nn.Sequential(
            nn.Conv2d(self.input_shape[0], stem_width, 3, padding=1, bias=False),
            nn.BatchNorm2d(stem_width),
            nn.ReLU(),
        )
        stages: list[nn.Module] = []
        in_channels = stem_width
        for i, (width, n_blocks) in enumerate(zip(widths, blocks_per_stage)):
            blocks = []
            for j in range(n_blocks):
                stride = 2 if i > 0 and j == 0 else 1  # the first block of each later stage halves the map
                blocks.append(BasicBlock(in_channels, int(width), stride))
                in_channels = int(width)
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(in_channels, num_outputs))
        # He et al.'s init for ReLU convs; BatchNorm starts as the identity (PyTorch's default).
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or tuple(x.shape[1:2]) != self.input_shape[:1]:
            raise L.input_shape_error("resnet", f"batches of images (B, {self.input_shape[0]}, H, W)", "images",
                                      tuple(x.shape[1:]))  # fmt: skip
        x = self.stem(x)  # (B, C, 32, 32) -> (B, stem_width, 32, 32)
        x = self.stages(x)  # (B, widths[-1], 32 / 2^(S-1), ...): 8x8 for three stages
        return self.head(x)  # (B, widths[-1]) -> (B, num_outputs)
