"""The streaming path: splits too big for the device go through a DataLoader, batch by batch."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch.utils.data import DataLoader, Sampler, TensorDataset

if TYPE_CHECKING:
    from nnlab.data.datamodule import DataModule


def loader(data: DataModule, split: str) -> DataLoader:
    """A DataLoader over `split` of `data` (CPU tensors), pinned for CUDA, with persistent workers;
    the training split visits rows in the DataModule's epoch order (see `OrderSampler`)."""
    train = split == "train"
    return DataLoader(
        TensorDataset(*data._tensors[split]),
        batch_size=data.batch_size if train else data.eval_batch_size,
        # The sampler reads the order the DataModule sets each epoch, so both paths shuffle alike.
        sampler=OrderSampler(data) if train else None,
        drop_last=data.drop_last and train,
        num_workers=data.num_workers,
        pin_memory=data.device.type == "cuda",
        persistent_workers=data.num_workers > 0,
        # Worker seeds come from this generator, not the global one, so streaming leaves the global
        # RNG (dropout, init) exactly where in-memory batching does.
        generator=torch.Generator().manual_seed(data.seed),
    )


class OrderSampler(Sampler):
    """Yields the DataModule's current epoch order, so both batching paths visit rows alike."""

    def __init__(self, data: DataModule) -> None:
        self.data = data

    def __len__(self) -> int:
        return self.data.steps_per_epoch * self.data.batch_size if self.data.world_size > 1 else self.data.size("train")

    def __iter__(self):
        return iter(self.data._train_order.tolist())
