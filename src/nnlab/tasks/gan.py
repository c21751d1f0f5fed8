"""The GAN game: every training step updates the discriminator, then the generator."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from nnlab.engine.optim import Optimization, UpdateRules, build_scheduler
from nnlab.engine.precision import Precision
from nnlab.engine.task import TaskDefaults
from nnlab.errors import ConfigValueError, check_range
from nnlab.models.gan import GAN
from nnlab.tasks.gan_metrics import Judge, assign_modes, coverage, fit_modes, frechet_distance, mode_tv

log = logging.getLogger(__name__)


class Adversarial(TaskDefaults):
    """Train a `GAN`: D and G, each with its own optimizer, take turns on every batch.

    D, a classifier of real against generated samples, maximises

        log D(x) + log(1 - D(G(z)))

    and G minimises what D maximises, but in its non-saturating form (Goodfellow et al., 2014):
    G maximises log D(G(z)) rather than minimising log(1 - D(G(z))). Both have the same fixed
    point, but early in training D rejects G's samples with confidence, where log(1 - D) is flat
    and G would get almost no gradient; log D is steepest there. Both objectives are binary
    cross-entropies on D's logits: D's with targets 1 (real) and 0 (fake), G's with target 1.

    Each phase leaves the other network alone: D trains on fakes generated without a graph (no
    gradient can reach G), and G trains through a D whose parameters are frozen (no gradient is
    left in D for its next update). `discriminator_step` and `generator_step` are the two phases.

    One-sided label smoothing (Salimans et al., 2016): D's target for real samples is
    1 - label_smoothing, which keeps D from growing over-confident logits that give G vanishing
    or exploding gradients. Fakes keep target 0: smoothing them would reward G's worst samples.

    Metrics. Training: d_loss, g_loss, d_real = mean D(x), d_fake = mean D(G(z)) (before D's
    update). At 0.5/0.5 D cannot tell real from fake; d_real near 1 with d_fake near 0 means D
    is winning and G learns little. Evaluation adds the same on the split, plus sample quality
    over a fixed batch of `num_samples` noise vectors (drawn once from `sample_seed`, so every
    epoch scores the same z and the numbers are comparable); see `nnlab.tasks.gan_metrics`:
      - images with classes: fd, the Fréchet distance between the split's images and the samples
        in the features of a judge classifier trained on the training split in `prepare`
        (its validation accuracy is logged); classes_covered, the classes the judge sees in at
        least a quarter of their fair share of samples, and class_entropy, how evenly (1: even);
      - vectors with classes (the ring): fd in the data's own space; modes_covered (as classes
        above, a sample counting for a mode within 3 std of its centre, centres and stds from the
        training data per label); mode_entropy; high_quality, the share within 3 std of a mode;
        mode_tv, the total variation distance between the generated and the split's spread over
        the modes (and off them): blur and collapse in one number, lower is better;
      - conditional GANs: cond_acc, the share of samples the judge (or the nearest mode) places
        in the class they were generated for.
    Lower fd is better: model=gan's `optimized_metric` (val/fd) picks best.ckpt by it (the ring's
    experiment by val/mode_tv).

    Pictures, every epoch (`epoch_images`): a grid of the first samples of the fixed batch for
    images (one row per class when conditional), or a scatter of all of them over the real data.

    Args:
        model: a `nnlab.models.gan.GAN`.
        optimizer: a factory taking `params` (a Hydra `_partial_`), called once per network.
        scheduler: a factory taking `optimizer`, or None; one per optimizer.
        kind, class_names, class_counts: given by the dataset; only `kind` is used (each class's
            fair share is counted from the training split in `prepare`).
        label_smoothing: D's real target is 1 - label_smoothing, in [0, 1); 0.1 is common.
        num_samples: generated samples each evaluation is scored on (at least 2).
        sample_seed: seed of those samples' noise.
        grid_size: columns of the image grid; rows: grid_size, or one per class if conditional.
        judge_steps: training steps of the judge (images with classes); 0 leaves it out, and
            fd is then computed in pixel space.
        judge_seed: seed of the judge's initialisation and batches (drawn from a forked RNG, so
            training the judge leaves the run's random stream where it was).
    """

    # What this task supports, declared for the engine and the commands (see nnlab.engine.task.Task).
    supports_ddp = False  # calls into the model's parts (G, D), not through one model(x) DDP could wrap
    supports_backbone_lr_scale = False  # each optimizer takes its network's parameters(): no transfer lr groups
    own_optimizer_parts: tuple[str, ...] = ("generator", "discriminator")  # each with an optimizer of its own

    def __init__(
        self,
        model: GAN,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        kind: str = "classification",
        class_names: list[str] | None = None,
        class_counts: list[int] | None = None,
        label_smoothing: float = 0.0,
        num_samples: int = 1000,
        sample_seed: int = 0,
        grid_size: int = 8,
        judge_steps: int = 300,
        judge_seed: int = 0,
    ) -> None:
        if not isinstance(model, GAN):
            raise ConfigValueError(
                f"task=gan trains a generator against a discriminator (model=gan), but the model is a "
                f"{type(model).__name__}. Use model=gan (it selects this task), or task=supervised."
            )
        if model.conditional and kind != "classification":
            raise ConfigValueError(
                f"model.conditional=true gives G and D the class label, but the dataset is {kind}: it has no "
                "classes. Set model.conditional=false, or choose a classification dataset (e.g. data=digits)."
            )
        check_range("task.label_smoothing", label_smoothing, 0.0, 1.0, high_inclusive=False)
        check_range("task.num_samples", num_samples, 2)
        check_range("task.grid_size", grid_size, 1)
        check_range("task.judge_steps", judge_steps, 0)
        self.model = model
        self.kind = kind
        self.label_smoothing = label_smoothing
        self.num_samples = num_samples
        self.sample_seed = sample_seed
        self.grid_size = grid_size
        self.judge_steps = judge_steps
        self.judge_seed = judge_seed
        self.device = torch.device("cpu")
        self.is_image = len(model.input_shape) == 3
        self._optimizer_factory = optimizer
        self._scheduler_factory = scheduler
        self.optim_d: Optimization | None = None
        self.optim_g: Optimization | None = None
        self.precision: Precision | None = None
        self.fixed_noise: torch.Tensor | None = None
        self.fixed_labels: torch.Tensor | None = None
        self.judge: Judge | None = None
        self.modes: tuple[torch.Tensor, torch.Tensor] | None = None  # centres (K, D), scales (K,)
        self.class_shares: np.ndarray | None = None  # each class's share of the training split
        self.real_points: torch.Tensor | None = None  # training data behind the 2-D scatter

    # ---- setup ------------------------------------------------------------------------------
    def configure(
        self, device: torch.device, precision: Precision, total_steps: int, rules: UpdateRules | None = None
    ) -> None:
        self.model.to(device)
        self.device = device
        self.precision = precision

        def optimization(network: torch.nn.Module) -> Optimization:
            optimizer = self._optimizer_factory(params=network.parameters())
            scheduler = build_scheduler(self._scheduler_factory, optimizer, total_steps)
            return Optimization(optimizer, scheduler, precision.grad_scaler(), rules=rules)

        self.optim_d = optimization(self.model.discriminator)
        self.optim_g = optimization(self.model.generator)
        # The fixed batch every evaluation and picture uses, drawn from its own generator (on the
        # CPU, so the same seed gives the same z on any device) without touching the global RNG.
        g = torch.Generator().manual_seed(self.sample_seed)
        self.fixed_noise = torch.randn(self.num_samples, self.model.latent_dim, generator=g).to(device)
        k = self.model.num_classes
        self.fixed_labels = (torch.arange(self.num_samples) % k).to(device) if k else None

    def prepare(self, data: Any) -> None:
        """Fit what scores the samples: the judge classifier (images) or the modes (vectors)."""
        if self.kind != "classification":
            return
        x, y = (torch.cat(part) for part in zip(*data.eval_batches("train")))
        self.class_shares = np.bincount(y.cpu().numpy(), minlength=data.num_outputs) / len(y)
        if not self.is_image:
            self.modes = fit_modes(x, y, data.num_outputs)
            self.real_points = x[torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[:2000]].cpu()
            log.info("Modes: %d centres, std %.4f on average", len(self.modes[1]), self.modes[1].mean())
            return
        if self.judge_steps == 0:
            return
        device = x.device
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(self.judge_seed)
            self.judge = Judge(self.model.input_shape, data.num_outputs, device)
            self.judge.fit(x, y, self.judge_steps)
        xv, yv = (torch.cat(part) for part in zip(*data.eval_batches("val")))
        acc = (self.judge.predict(xv) == yv).float().mean().item()
        # FD between two real sets of the evaluation's sizes: roughly the lowest val/fd can go.
        floor = frechet_distance(self.judge.features(x[: self.num_samples]), self.judge.features(xv))
        log.info("Judge classifier: val acc %.4f; FD(train, val) = %.3f, a floor for val/fd", acc, floor)

    # ---- one training step: D, then G ---------------------------------------------------------
    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], update: bool = True) -> dict[str, torch.Tensor]:
        x, y = batch
        labels = y if self.model.conditional else None
        metrics = self.discriminator_step(x, labels, update)
        metrics.update(self.generator_step(len(x), labels, update))
        return metrics

    def discriminator_step(
        self, x: torch.Tensor, labels: torch.Tensor | None, update: bool = True
    ) -> dict[str, torch.Tensor]:
        """One update of D on a real batch and as many fresh fakes (backward only when not
        `update`: an open accumulation window); G is not touched."""
        G, D = self.model.generator, self.model.discriminator
        z = torch.randn(len(x), self.model.latent_dim, device=x.device)
        with torch.no_grad(), self.precision.autocast():
            fake = G(z, labels)  # no graph: D's loss cannot backpropagate into G
        # D: maximise log D(x) + log(1 - D(G(z))), i.e. minimise the binary cross-entropy of its
        # logits on real samples (target 1 - label_smoothing) and on fakes (target 0). Real and
        # fake go through D in separate batches, so batch norm never mixes their statistics.
        with self.precision.autocast():
            real_logits = D(x, labels).float()
            fake_logits = D(fake, labels).float()
        bce = F.binary_cross_entropy_with_logits
        real_target = torch.full_like(real_logits, 1.0 - self.label_smoothing)
        loss = bce(real_logits, real_target) + bce(fake_logits, torch.zeros_like(fake_logits))
        self.optim_d.step(loss, update)
        return {
            "d_loss": loss.detach(),
            "d_real": torch.sigmoid(real_logits.detach()).mean(),
            "d_fake": torch.sigmoid(fake_logits.detach()).mean(),
        }

    def generator_step(
        self, batch_size: int, labels: torch.Tensor | None, update: bool = True
    ) -> dict[str, torch.Tensor]:
        """One update of G through a frozen D: D's parameters get no gradient, so nothing is left
        in them for its next update (and no time is spent computing it)."""
        G, D = self.model.generator, self.model.discriminator
        z = torch.randn(batch_size, self.model.latent_dim, device=self.device)
        D.requires_grad_(False)
        try:
            # G: non-saturating loss, maximise log D(G(z)): binary cross-entropy of D's logits on
            # fresh fakes against target 1.
            with self.precision.autocast():
                logits = D(G(z, labels), labels).float()
            loss = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))
            self.optim_g.step(loss, update)
        finally:
            D.requires_grad_(True)
        return {"g_loss": loss.detach()}

    # ---- evaluation -----------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(
        self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], detailed: bool = False
    ) -> dict[str, float]:
        """Losses and D's means on the split (no label smoothing: the game's plain value), then
        the quality of the fixed batch of samples against the split's real data."""
        self.model.eval()
        G, D = self.model.generator, self.model.discriminator
        g = torch.Generator().manual_seed(self.sample_seed + 1)  # the same fakes every evaluation
        sums = dict.fromkeys(("d_loss", "g_loss", "d_real", "d_fake"), 0.0)
        reals, n = [], 0
        for x, y in batches:
            labels = y if self.model.conditional else None
            z = torch.randn(len(x), self.model.latent_dim, generator=g).to(x.device)
            with self.precision.autocast():
                real_logits = D(x, labels).float()
                fake_logits = D(G(z, labels), labels).float()
            real_loss = _bce_sum(real_logits, 1.0)
            sums["d_loss"] += (real_loss + _bce_sum(fake_logits, 0.0)).item()
            sums["g_loss"] += _bce_sum(fake_logits, 1.0).item()
            sums["d_real"] += torch.sigmoid(real_logits).sum().item()
            sums["d_fake"] += torch.sigmoid(fake_logits).sum().item()
            reals.append(self.judge.features(x) if self.judge is not None else x.flatten(1))
            n += len(x)
        metrics = {k: v / max(n, 1) for k, v in sums.items()}
        metrics.update(self.sample_quality(torch.cat(reals)))
        return metrics

    def sample_quality(self, real: torch.Tensor) -> dict[str, float]:
        """Score the fixed batch of samples against `real` (judge features for images, else the
        data itself): see the class docstring."""
        samples = self.generate()
        if self.judge is not None:
            metrics = {"fd": frechet_distance(real, self.judge.features(samples))}
            predicted = self.judge.predict(samples)
            names = ("classes_covered", "class_entropy")
        else:
            metrics = {"fd": frechet_distance(real, samples.flatten(1))}
            if self.modes is None:  # no classes: no modes to count
                return metrics
            predicted = assign_modes(samples, *self.modes)
            metrics["high_quality"] = (predicted >= 0).float().mean().item()
            metrics["mode_tv"] = mode_tv(predicted, assign_modes(real, *self.modes), len(self.modes[0]))
            names = ("modes_covered", "mode_entropy")
        shares, labels = self.class_shares, self.fixed_labels
        if labels is not None:  # conditional: the requested labels set each class's fair share
            shares = np.bincount(labels.cpu().numpy(), minlength=len(shares)) / len(labels)
            metrics["cond_acc"] = (predicted == labels).float().mean().item()
        covered, entropy = coverage(predicted, len(shares), shares)
        metrics.update({names[0]: float(covered), names[1]: entropy})
        return metrics

    @torch.no_grad()
    def generate(self) -> torch.Tensor:
        """G's samples (float32, eval mode) for the fixed noise batch: (num_samples, *input_shape)."""
        training = self.model.training
        self.model.eval()
        with self.precision.autocast():
            samples = self.model(self.fixed_noise, self.fixed_labels).float()
        self.model.train(training)
        return samples

    # ---- pictures -------------------------------------------------------------------------------
    def epoch_images(self) -> dict[str, Any]:
        """{"val/samples": image grid (C, H, W) in [0, 1]} for images, {"val/samples": scatter
        figure} for vectors of two or more dimensions (the first two are plotted); tagged as the
        autoencoder's pictures are (val/reconstructions, val/samples)."""
        samples = self.generate().cpu()
        if self.is_image:
            return {"val/samples": self._grid(samples)}
        if samples.shape[1] >= 2:
            return {"val/samples": self._scatter(samples)}
        return {}

    def _grid(self, samples: torch.Tensor) -> torch.Tensor:
        from torchvision.utils import make_grid

        cols = self.grid_size
        if self.fixed_labels is None:
            shown = samples[: cols * cols]
        else:  # one row per class: the first `cols` samples generated for it
            labels = self.fixed_labels.cpu()
            shown = torch.cat([samples[labels == c][:cols] for c in range(self.model.num_classes)])
        activation = type(self.model.generator.net[-1]).__name__
        if activation == "Tanh":
            shown = (shown + 1) / 2
        scale = max(1, 32 // shown.shape[-2])  # 8x8 digits drawn 4x larger (nearest: no blur)
        shown = F.interpolate(shown, scale_factor=scale, mode="nearest")
        # Unbounded outputs (no output activation) are scaled to [0, 1] over the whole grid.
        return make_grid(shown, nrow=cols, padding=1, normalize=activation == "Identity").clamp(0, 1)

    def _scatter(self, samples: torch.Tensor) -> Any:
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 5))
        if self.real_points is not None:
            real = self.real_points
            ax.scatter(real[:, 0], real[:, 1], s=4, c="lightgrey", label="data")
            low, high = real[:, :2].min().item(), real[:, :2].max().item()
            pad = 0.25 * (high - low)
            ax.set_xlim(low - pad, high + pad)  # fixed limits: epochs compare at a glance
            ax.set_ylim(low - pad, high + pad)
        if self.fixed_labels is None:
            ax.scatter(samples[:, 0], samples[:, 1], s=4, color="tab:red", label="G(z), fixed z")
        else:  # conditional: coloured by the requested class
            labels = self.fixed_labels.cpu().numpy()
            ax.scatter(samples[:, 0], samples[:, 1], s=4, c=labels, cmap="tab10", label="G(z, class), fixed z")
        ax.set_aspect("equal")
        ax.legend(loc="upper right", fontsize="small")
        ax.set_title(f"{len(samples)} samples from a fixed noise batch")
        fig.tight_layout()
        return fig

    # ---- the rest of the Task protocol ----------------------------------------------------------
    def epoch_end(self, val_metrics: dict[str, float]) -> None:
        self.optim_d.epoch_end(val_metrics)
        self.optim_g.epoch_end(val_metrics)

    def learning_rates(self) -> dict[str, float]:
        return {"lr/g": self.optim_g.lr, "lr/d": self.optim_d.lr}

    def single_optimizer(self) -> None:
        return None  # two: D's and G's

    def state_dict(self) -> dict[str, Any]:
        """Both optimizers (with their schedulers and scalers) and the fixed noise batch, so a
        resumed run scores and shows the same samples."""
        return {
            "optim_d": self.optim_d.state_dict(),
            "optim_g": self.optim_g.state_dict(),
            "fixed_noise": self.fixed_noise.cpu(),
            "fixed_labels": None if self.fixed_labels is None else self.fixed_labels.cpu(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optim_d.load_state_dict(state["optim_d"])
        self.optim_g.load_state_dict(state["optim_g"])
        device = self.fixed_noise.device
        self.fixed_noise = state["fixed_noise"].to(device)
        self.fixed_labels = None if state["fixed_labels"] is None else state["fixed_labels"].to(device)


def _bce_sum(logits: torch.Tensor, target: float) -> torch.Tensor:
    """Binary cross-entropy of D's logits against a constant target, summed over the batch."""
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target), reduction="sum")
