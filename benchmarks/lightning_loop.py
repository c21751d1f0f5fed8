"""PyTorch Lightning on a case's model: the framework nnlab is compared with.

A `LightningModule` around the same model (built by nnlab's `build_model`, so the same initial
weights), the config's optimizer and schedule, `lightning.Trainer(max_epochs, accelerator)` with
its defaults (TQDM progress bar, TensorBoard or CSV logger in a temporary folder, checkpointing,
the sanity validation pass), and shuffling `DataLoader`s for training and validation. Lightning
is optional (`pip install "lightning>=2.4,<2.7"`): without it the row is skipped with a note.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch.nn.functional as F
from omegaconf import DictConfig

from benchmarks.loops import Outcome, Timer, Unavailable, _build, accuracy, whole_split

INSTALL = 'PyTorch Lightning is not installed, so its row is skipped: pip install "lightning>=2.4,<2.7"'


def lightning_loop(cfg: DictConfig, device: str) -> Outcome:
    try:
        import lightning
    except ImportError as e:
        raise Unavailable(INSTALL) from e
    from torch.utils.data import DataLoader, TensorDataset

    from nnlab.engine.optim import PER_STEP_SCHEDULERS

    data, model, optimizer, scheduler, dev = _build(cfg)

    class Module(lightning.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def training_step(self, batch, batch_idx):  # noqa: ANN001, ANN201 (Lightning's signature)
            x, y = batch
            loss = F.cross_entropy(self.model(x), y)
            self.log("train_loss", loss, on_step=True, on_epoch=True, prog_bar=True)
            return loss

        def validation_step(self, batch, batch_idx):  # noqa: ANN001, ANN201
            x, y = batch
            self.log("val_loss", F.cross_entropy(self.model(x), y), prog_bar=True)

        def configure_optimizers(self):  # noqa: ANN201
            if scheduler is None:
                return optimizer
            interval = "step" if isinstance(scheduler, PER_STEP_SCHEDULERS) else "epoch"
            return {
                "optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "interval": interval, "monitor": "val_loss"},
            }

    x, y = (t.cpu() for t in whole_split(data, "train"))
    xv, yv = (t.cpu() for t in whole_split(data, "val"))
    train_loader = DataLoader(TensorDataset(x, y), batch_size=data.batch_size, shuffle=True)
    val_loader = DataLoader(TensorDataset(xv, yv), batch_size=data.eval_batch_size)
    epochs = cfg.trainer.max_epochs
    # Lightning's start-up notes ("GPU available: ...", "consider more workers") are not results.
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    trainer = lightning.Trainer(
        max_epochs=epochs,
        accelerator="gpu" if dev.type == "cuda" else "cpu",
        devices=1,
        default_root_dir=str(Path(cfg.paths.output_dir)),
    )
    module = Module()
    timer = Timer(dev)
    with timer:
        trainer.fit(module, train_loader, val_loader)
    model.to(dev)
    loss = trainer.callback_metrics.get("train_loss_epoch")
    return Outcome(
        seconds=timer.seconds,
        epochs=trainer.current_epoch,
        steps=trainer.global_step,
        samples=trainer.current_epoch * len(x),
        train_loss=float(loss) if loss is not None else None,
        test_acc=accuracy(model, data.eval_batches("test")),
        extra={"lightning": lightning.__version__},
    )
