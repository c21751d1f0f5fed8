"""Weight sparsity, every epoch: how many weights a penalty has driven to (nearly) zero.

    nnlab-train regularization.l1=1e-3 +callbacks.sparsity._target_=nnlab.engine.sparsity.WeightSparsity

(experiment=regularization sets it up.) Scalars go to TensorBoard only, so metrics.json keeps
the same keys with or without this callback.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from nnlab.engine.tensorboard import save_image
from nnlab.errors import check_range

if TYPE_CHECKING:
    from nnlab.engine.trainer import Trainer


def weight_matrices(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The >= 2-D parameters (weight matrices, conv filters) by name: the ones the L1/L2 penalties
    of `nnlab.engine.regularization.Regularization` act on (biases and norm scales are left out)."""
    return {name: p.detach() for name, p in model.named_parameters() if p.ndim >= 2}


def sparsity(weights: dict[str, torch.Tensor], threshold: float) -> dict[str, float]:
    """{"": fraction of all entries with |w| < threshold, name: the same per tensor}."""
    small = {name: int((w.abs() < threshold).sum()) for name, w in weights.items()}
    total = sum(w.numel() for w in weights.values())
    fractions = {name: n / weights[name].numel() for name, n in small.items()}
    return {"": sum(small.values()) / max(total, 1), **fractions}


class WeightSparsity:
    """Logs the fraction of near-zero weights after every epoch, and a histogram of |w| at the end.

    - `weights/sparsity`: the fraction of all weight-matrix and filter entries with
      |w| < `threshold`; `weights/sparsity/<parameter>` the same per tensor (TensorBoard, at
      step = epoch, beside val/loss).
    - `figures/weight_hist.png` (and TensorBoard's Images tab): a histogram of log10 |w| over the
      same entries at the end of training, with the threshold marked.

    What to expect: an L1 penalty's gradient l1 * sign(w) has the same size however small w is,
    so it drives the weights the data does not need to zero: sparsity rises epoch by epoch. L2's
    gradient l2 * w fades as w shrinks, so it makes weights small but almost never zero: the
    histogram shifts left but keeps its bell shape.

    Why a threshold rather than exact zeros: an optimizer step rarely lands exactly on 0, it
    jumps across it. Adam's steps are about lr long whatever the gradient's size, so an L1-held
    weight hovers within about lr of 0; the default threshold 1e-3 is Adam's default lr. With
    plain SGD it hovers within lr * l1, and a smaller threshold works.

    Args:
        threshold: |w| below this counts as zero (> 0).
        histogram: save the end-of-training histogram of log10 |w|.
    """

    def __init__(self, threshold: float = 1e-3, histogram: bool = True) -> None:
        check_range("callbacks.sparsity.threshold", threshold, 0.0, low_inclusive=False)
        self.threshold = threshold
        self.histogram = histogram
        self.last: dict[str, float] = {}  # the latest fractions, "" = all weights

    def on_epoch_end(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        self.last = sparsity(weight_matrices(trainer.module), self.threshold)
        if trainer.logger is not None:
            scalars = {f"weights/sparsity{'/' + name if name else ''}": v for name, v in self.last.items()}
            trainer.logger.log_metrics(scalars, trainer.epoch)

    def on_fit_end(self, trainer: Trainer) -> None:
        weights = weight_matrices(trainer.module)
        if not self.histogram or not weights:
            return
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        values = torch.cat([w.flatten().float().cpu() for w in weights.values()]).abs()
        share = float((values < self.threshold).float().mean())
        logs = values.clamp_min(1e-8).log10().numpy()  # exact zeros land in the leftmost bin
        fig, ax = plt.subplots(figsize=(5.5, 3.4))
        ax.hist(logs, bins=80, color="tab:blue")
        ax.axvline(math.log10(self.threshold), color="tab:red", linestyle="--", label=f"|w| = {self.threshold:g}")
        ax.set(
            xlabel="log10 |w|",
            ylabel="weights",
            title=f"{share:.1%} of {len(values):,} weights below {self.threshold:g} (epoch {trainer.epoch})",
        )
        ax.legend()
        fig.tight_layout()
        path = Path(trainer.output_dir) / "figures" / "weight_hist.png"
        save_image(fig, path, trainer.logger, "weights/hist", trainer.epoch)
