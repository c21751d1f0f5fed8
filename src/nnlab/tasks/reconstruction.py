"""Reconstruction: train an autoencoder (or a VAE) to rebuild its input, and score anomalies by
how badly it does."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from nnlab.engine.optim import Optimization, UpdateRules, build_scheduler
from nnlab.engine.precision import Precision
from nnlab.engine.task import TaskDefaults
from nnlab.errors import ConfigValueError, check_choice, check_range
from nnlab.models.autoencoder import VAE, Autoencoder
from nnlab.tasks.anomaly import THRESHOLD_RULES, anomaly_metrics, choose_threshold, score_histogram

LOSSES = ("mse", "bce")


class Reconstruction(TaskDefaults):
    """Minimise the reconstruction error of an autoencoder; for a VAE, the negative ELBO.

    Per sample, the reconstruction error is summed over the input's values (squared error for
    `mse`, or binary cross-entropy for `bce`, where the decoder's outputs are logits and the
    data must lie in [0, 1]), and the loss is its batch mean, plus `beta` times the KL divergence
    of q(z|x) from N(0, I) for a VAE:

        KL = -1/2 * sum_j (1 + logvar_j - mu_j^2 - exp(logvar_j)).

    Metrics: `loss`, `recon` (the summed error above), `mse` or `bce` (the error per value, the
    readable number), and `kl` for a VAE.

    Denoising: with `eval_noise` > 0, every evaluation also feeds the model x + eval_noise * N(0, I)
    (the same noise each time, drawn from a fixed seed) and reports `denoise_mse` (or
    `denoise_bce`): the error per value of that reconstruction against the *clean* x. A denoising
    autoencoder (model.noise=gaussian, which corrupts only its training inputs, the target
    staying clean) should beat a plain one on it, at the same noise level.

    Codes as features: after testing on classification data, a k-nearest-neighbour classifier
    (k = `probe_neighbors`) fitted on the training split's codes labels the test codes:
    `latent_knn_acc`; the same classifier on the first latent_dim principal components of the
    raw inputs (PCA fitted on the training split) gives `pca_knn_acc`, the linear baseline the
    code should beat when its non-linearity is worth anything.

    Anomaly detection: when the data module leaves `anomaly_classes` out of training (the
    `data_edit=anomaly` row edit), each validation/test sample is scored by its reconstruction
    error (per value; the VAE's uses the mean code), the loss is reported over the normal samples
    only, and the anomaly metrics of `nnlab.tasks.anomaly` are added: ROC-AUC, PR-AUC, and
    precision/recall/F1 at a threshold chosen on each validation pass by `threshold` (f1 or
    quantile). The threshold is stored in the model (`anomaly_threshold`), so the best checkpoint
    carries the one chosen with it, and the test split is flagged with exactly that value.

    TensorBoard: every epoch, `reconstructions` (the first `num_images` validation samples above
    their reconstructions) and, for a VAE, `samples` decoded from a fixed batch of prior codes;
    after testing, `latent_space` (test codes in 2-D, principal components if latent_dim > 2,
    coloured by label), the anomaly `score_histogram`, and the codes in the Projector tab.

    Args:
        model: an `Autoencoder` or `VAE`.
        optimizer, scheduler: factories (Hydra `_partial_` configs) for the one optimizer.
        kind, class_names, class_counts: given by the dataset (labels only colour the plots).
        loss: mse or bce.
        beta: weight of the KL term (VAE only); 1 is the ELBO, > 1 a beta-VAE.
        threshold: f1 (maximise F1 on validation; needs anomalies there) or quantile.
        threshold_quantile: for `quantile`: the share of normal validation scores below it.
        num_images: samples in the per-epoch reconstruction grid.
        eval_noise: std of the Gaussian noise added to val/test inputs for `denoise_<loss>` (in the
            data's units; 0 turns the metric and its picture off).
        probe_neighbors: k of the test-time kNN probe of the codes (0 turns it off).
    """

    # What this task supports, declared for the engine and the commands (see nnlab.engine.task.Task).
    supports_ddp = True  # trains only through model(x): DistributedDataParallel can wrap it
    supports_backbone_lr_scale = False  # its optimizer takes model.parameters(): no transfer lr groups
    own_optimizer_parts: tuple[str, ...] = ()  # one optimizer trains the whole model

    def __init__(
        self,
        model: Autoencoder | VAE,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        kind: str = "classification",
        class_names: list[str] | None = None,
        class_counts: list[int] | None = None,
        loss: str = "mse",
        beta: float = 1.0,
        threshold: str = "f1",
        threshold_quantile: float = 0.95,
        num_images: int = 8,
        eval_noise: float = 0.0,
        probe_neighbors: int = 5,
    ) -> None:
        if not isinstance(model, (Autoencoder, VAE)):
            raise ConfigValueError(
                f"task=reconstruction trains autoencoders, but the model is a {type(model).__name__}. "
                "Use model=autoencoder or model=vae (they select this task), or task=supervised."
            )
        check_choice("task.loss", loss, LOSSES)
        check_range("task.beta", beta, 0.0)
        check_range("task.num_images", num_images, 1)
        check_range("task.eval_noise", eval_noise, 0.0)
        check_range("task.probe_neighbors", probe_neighbors, 0)
        check_choice("task.threshold", threshold, THRESHOLD_RULES)
        check_range("task.threshold_quantile", threshold_quantile, 0.0, 1.0, low_inclusive=False, high_inclusive=False)
        self.model = model
        self.loss_name = loss
        self.beta = beta
        self.threshold_rule = threshold
        self.threshold_quantile = threshold_quantile
        self.num_images = num_images
        self.eval_noise = eval_noise
        self.probe_neighbors = probe_neighbors
        self.kind = kind
        self.class_names = list(class_names) if class_names else None
        self._optimizer_factory = optimizer
        self._scheduler_factory = scheduler
        self.optim: Optimization | None = None
        self.precision: Precision | None = None
        self.anomaly_classes: list[int] = []
        self._prior_z: torch.Tensor | None = None
        self._grid: torch.Tensor | None = None  # the last validation's reconstruction grid
        self._denoise_grid: torch.Tensor | None = None  # noisy inputs, their reconstructions, clean inputs
        self._train_batches: Callable[[], Iterable[Any]] | None = None  # for the kNN probe
        self._test: dict[str, np.ndarray] = {}  # codes, labels, scores of the last test

    def configure(
        self, device: torch.device, precision: Precision, total_steps: int, rules: UpdateRules | None = None
    ) -> None:
        self.model.to(device)
        self.precision = precision
        optimizer = self._optimizer_factory(params=self.model.parameters())
        scheduler = build_scheduler(self._scheduler_factory, optimizer, total_steps)
        self.optim = Optimization(optimizer, scheduler, precision.grad_scaler(), rules=rules)
        if self.model.variational:  # a fixed batch of prior codes, so epochs show the same samples
            g = torch.Generator().manual_seed(0)
            self._prior_z = torch.randn(self.num_images * 2, self.model.latent_dim, generator=g).to(device)

    def prepare(self, data: Any) -> None:
        """Read which classes the data module left out of training (anomaly detection), and keep
        a way to the training split for the kNN probe of the codes."""
        self.anomaly_classes = data.anomaly_classes
        self._train_batches = lambda: data.eval_batches("train")

    # ----------------------------------------------------------------------------------------
    def errors(self, x: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
        """(B,) reconstruction error of each sample, summed over its values."""
        if self.loss_name == "bce":
            err = F.binary_cross_entropy_with_logits(recon, x, reduction="none")
        else:
            err = (recon - x).pow(2)
        return err.flatten(1).sum(1)

    @staticmethod
    def kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """(B,) KL(N(mu, exp(logvar)) || N(0, I)), in closed form."""
        return -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], update: bool = True) -> dict[str, torch.Tensor]:
        x, _ = batch
        with self.precision.autocast():
            out = self.model(x)
        recon = self.errors(x, out.recon.float()).mean()
        metrics = {"recon": recon.detach(), self.loss_name: recon.detach() / x[0].numel()}
        loss = recon
        if out.mu is not None:
            kl = self.kl(out.mu.float(), out.logvar.float()).mean()
            loss = recon + self.beta * kl
            metrics["kl"] = kl.detach()
        self.optim.step(loss, update)
        metrics["loss"] = loss.detach()
        return metrics

    @torch.no_grad()
    def evaluate(
        self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], detailed: bool = False
    ) -> dict[str, float]:
        self.model.eval()
        errs, kls, ys, codes, first = [], [], [], [], None
        denoise_errs, noisy_first, inputs = [], None, []
        g = torch.Generator().manual_seed(0)  # the same noise every evaluation: comparable epochs
        for x, y in batches:
            with self.precision.autocast():
                out = self.model(x)
            errs.append(self.errors(x, out.recon.float()))
            if self.eval_noise > 0:  # reconstruct the clean x from a noisy copy
                noisy = x + self.eval_noise * torch.randn(x.shape, generator=g).to(x.device)
                with self.precision.autocast():
                    denoised = self.model(noisy).recon.float()
                denoise_errs.append(self.errors(x, denoised))
                if noisy_first is None:
                    shown = torch.sigmoid(denoised) if self.loss_name == "bce" else denoised
                    # Noisy inputs clamped to the clean range: the grid's common scaling then
                    # follows the data, not the noise's outliers.
                    n = self.num_images
                    noisy_first = (noisy[:n].clamp(x.min(), x.max()), shown[:n], x[:n])
            if out.mu is not None:
                kls.append(self.kl(out.mu.float(), out.logvar.float()))
            ys.append(y)
            codes.append(out.z.float())
            if detailed:  # the raw inputs, for the PCA baseline of the kNN probe
                inputs.append(x.flatten(1).float().cpu())
            if first is None:
                recon = torch.sigmoid(out.recon) if self.loss_name == "bce" else out.recon
                first = (x[: self.num_images], recon[: self.num_images].float())
        err, y = torch.cat(errs).cpu().numpy(), torch.cat(ys).cpu().numpy()
        kl = torch.cat(kls).cpu().numpy() if kls else np.zeros_like(err)
        is_anomaly = np.isin(y, self.anomaly_classes) if self.anomaly_classes else np.zeros(len(y), bool)
        normal = ~is_anomaly
        per_value = err / int(np.prod(self.model.input_shape))
        metrics = {
            "loss": float((err[normal] + self.beta * kl[normal]).mean()),
            "recon": float(err[normal].mean()),
            self.loss_name: float(per_value[normal].mean()),
        }
        if kls:
            metrics["kl"] = float(kl[normal].mean())
        if denoise_errs:
            denoise = torch.cat(denoise_errs).cpu().numpy() / int(np.prod(self.model.input_shape))
            metrics[f"denoise_{self.loss_name}"] = float(denoise[normal].mean())
            self._denoise_grid = _grid(*noisy_first)
        if self.anomaly_classes:
            if not detailed:  # validation: choose the threshold, keep it with the weights
                t = choose_threshold(per_value, is_anomaly, self.threshold_rule, self.threshold_quantile)
                self.model.anomaly_threshold.fill_(t)
            metrics.update(anomaly_metrics(per_value, is_anomaly, float(self.model.anomaly_threshold)))
        self._grid = _grid(*first)
        if detailed:
            self._test = {"codes": torch.cat(codes).cpu().numpy(), "y": y, "scores": per_value, "anomaly": is_anomaly}
            self._test["inputs"] = torch.cat(inputs)  # (N, values): the Projector's thumbnails
            if self.probe_neighbors and self.kind == "classification" and not self.anomaly_classes:
                metrics.update(self.knn_probe(self._test["codes"], y, torch.cat(inputs).numpy()))
        return metrics

    @torch.no_grad()
    def knn_probe(self, test_codes: np.ndarray, test_y: np.ndarray, test_x: np.ndarray) -> dict[str, float]:
        """Test accuracy of a kNN classifier on the codes, and on as many principal components
        of the raw inputs, both fitted on the training split (see the class docstring)."""
        from sklearn.decomposition import PCA
        from sklearn.neighbors import KNeighborsClassifier

        xs, zs, ys = [], [], []
        for x, y in self._train_batches():
            with self.precision.autocast():
                zs.append(self.model(x).z.float().cpu())
            xs.append(x.flatten(1).float().cpu())
            ys.append(y.cpu())
        train_x, train_z, train_y = torch.cat(xs).numpy(), torch.cat(zs).numpy(), torch.cat(ys).numpy()
        k = min(self.probe_neighbors, len(train_y))

        def accuracy(train: np.ndarray, test: np.ndarray) -> float:
            return float(KNeighborsClassifier(k).fit(train, train_y).score(test, test_y))

        pca = PCA(min(self.model.latent_dim, *train_x.shape)).fit(train_x)
        return {
            "latent_knn_acc": accuracy(train_z, test_codes),
            "pca_knn_acc": accuracy(pca.transform(train_x), pca.transform(test_x)),
        }

    # ----------------------------------------------------------------------------------------
    def epoch_images(self) -> dict[str, torch.Tensor]:
        images = {"val/reconstructions": self._grid} if self._grid is not None else {}
        if self._denoise_grid is not None:
            images["val/denoised"] = self._denoise_grid
        if self._prior_z is not None and len(self.model.input_shape) in (2, 3):
            self.model.eval()
            samples = self.model.sample(self._prior_z).float()
            samples = torch.sigmoid(samples) if self.loss_name == "bce" else samples
            images["val/samples"] = _grid(samples[: self.num_images], samples[self.num_images :])
        return images

    def figures(self) -> dict[str, Any]:
        if not self._test:
            return {}
        figs = {"latent_space": _latent_figure(self._test["codes"], self._test["y"], self._test["anomaly"], self)}
        if self.anomaly_classes:
            t = float(self.model.anomaly_threshold)
            figs["score_histogram"] = score_histogram(self._test["scores"], self._test["anomaly"], t)
        return figs

    def embeddings(self) -> dict[str, tuple[Any, list[str], Any]]:
        if not self._test:
            return {}
        names = self.class_names or [str(c) for c in range(int(self._test["y"].max()) + 1)]
        test = self._test
        labels = [names[c] + (" (anomaly)" if a else "") for c, a in zip(test["y"].tolist(), test["anomaly"])]
        return {"test/latent": (torch.from_numpy(self._test["codes"]), labels, self._thumbnails(test["inputs"]))}

    def _thumbnails(self, inputs: torch.Tensor) -> torch.Tensor | None:
        """(N, C, H, W) in [0, 1], each input scaled by its own range, for image data (else None):
        the Projector then shows each point as its picture."""
        shape = tuple(self.model.input_shape)
        if len(shape) not in (2, 3) or len(inputs) == 0:
            return None
        images = inputs.view(len(inputs), *((1, *shape) if len(shape) == 2 else shape))
        low = images.amin(dim=(1, 2, 3), keepdim=True)
        span = (images.amax(dim=(1, 2, 3), keepdim=True) - low).clamp_min(1e-8)
        return (images - low) / span

    def epoch_end(self, val_metrics: dict[str, float]) -> None:
        self.optim.epoch_end(val_metrics)

    def learning_rates(self) -> dict[str, float]:
        return {"lr": self.optim.lr}

    def single_optimizer(self) -> torch.optim.Optimizer | None:
        return self.optim.optimizer if self.optim is not None else None  # None until `configure`

    def state_dict(self) -> dict[str, Any]:
        return {"optim": self.optim.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optim.load_state_dict(state["optim"])


def _as_images(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) pictures of samples: images as they are (grey or RGB); signals and feature
    vectors as one strip each, 4 pixels high so they can be seen."""
    if x.dim() == 4 and x.shape[1] in (1, 3):
        return x
    return x.flatten(1)[:, None, None, :].repeat_interleave(4, dim=2)  # (B, 1, 4, D)


def _grid(*rows: torch.Tensor) -> torch.Tensor:
    """One (C, H, W) image in [0, 1]: one row of samples per argument (e.g. inputs above their
    reconstructions), scaled together (one min-max over all), so equal values look equal."""
    from torchvision.utils import make_grid

    both = _as_images(torch.cat(rows).float().cpu())
    lo, hi = both.min(), both.max()
    both = (both - lo) / (hi - lo).clamp_min(1e-8)
    scale = max(1, 64 // max(both.shape[-2:]))  # enlarge tiny 8x8 digits for the dashboard
    both = both.repeat_interleave(scale, -2).repeat_interleave(scale, -1)
    return make_grid(both, nrow=len(rows[0]), padding=2, pad_value=1.0)


def _latent_figure(codes: np.ndarray, y: np.ndarray, anomaly: np.ndarray, task: Reconstruction):
    """Test codes as a 2-D scatter coloured by label (the top two principal components when the
    code has more than two numbers); anomalies drawn as crosses."""
    import matplotlib.pyplot as plt

    if codes.shape[1] > 2:
        centred = codes - codes.mean(0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        points, axes = centred @ vt[:2].T, ("PC 1 of z", "PC 2 of z")
    else:
        points = np.pad(codes, ((0, 0), (0, 2 - codes.shape[1])))
        axes = ("z1", "z2")
    fig, ax = plt.subplots(figsize=(6, 5), layout="constrained")
    names = task.class_names or [str(c) for c in range(int(y.max()) + 1)]
    cmap = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    for c in np.unique(y).tolist():
        rows = y == c
        if (rows & ~anomaly).any():
            ax.scatter(*points[rows & ~anomaly].T, s=8, color=cmap(c % cmap.N), label=names[c])
        if (rows & anomaly).any():
            label = f"{names[c]} (anomaly)"
            ax.scatter(*points[rows & anomaly].T, s=20, marker="x", color=cmap(c % cmap.N), label=label)
    ax.set_xlabel(axes[0])
    ax.set_ylabel(axes[1])
    ax.set_title("latent space (test split)")
    ax.legend(markerscale=2, fontsize="small", ncol=2)
    return fig
