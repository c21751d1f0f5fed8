"""Autoencoders, VAEs and anomaly detection: shapes, corruption, the ELBO terms, training, the
anomaly metrics on hand-checked cases, and a whole run's outputs."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from helpers import train_tiny
from nnlab.data.arrays import ArrayDataset
from nnlab.data.datamodule import DataModule
from nnlab.data.edits.anomaly import HoldOutClasses
from nnlab.engine.precision import Precision
from nnlab.errors import ConfigValueError, DataMismatchError, OptionError
from nnlab.models.autoencoder import VAE, Autoencoder
from nnlab.models.mlp import MLP
from nnlab.tasks.anomaly import anomaly_metrics, choose_threshold
from nnlab.tasks.reconstruction import Reconstruction

CPU = torch.device("cpu")


def task_for(model, **kwargs) -> Reconstruction:
    task = Reconstruction(model, partial(torch.optim.Adam, lr=3e-3), **kwargs)
    task.configure(CPU, Precision("32", CPU), total_steps=100)
    return task


@pytest.mark.parametrize(
    ("shape", "variant"),
    [((1, 8, 8), "dense"), ((1, 8, 8), "conv"), ((1, 28, 28), "conv"), ((3, 32, 32), "conv"), ((1, 40), "conv"),
     ((30,), "dense")],
)  # fmt: skip
@pytest.mark.parametrize("cls", [Autoencoder, VAE])
def test_reconstructions_have_the_input_shape(cls, shape, variant) -> None:
    model = cls(shape, variant=variant, latent_dim=5)
    x = torch.randn(4, *shape)
    out = model(x)
    assert out.recon.shape == x.shape
    assert out.z.shape == (4, 5)
    if cls is VAE:
        assert out.mu.shape == out.logvar.shape == (4, 5)
        model.eval()
        out = model(x)
        assert torch.equal(out.z, out.mu)  # eval: the mean code, deterministic
    else:
        assert out.mu is None


def test_conv_autoencoder_refuses_tabular_data() -> None:
    with pytest.raises(DataMismatchError, match=r"needs images \(C, H, W\) or signals"):
        Autoencoder((30,), variant="conv")


def test_bad_model_options_name_the_key() -> None:
    with pytest.raises(ConfigValueError, match="model.noise"):
        Autoencoder((4,), noise="salt")
    with pytest.raises(ConfigValueError, match="model.latent_dim"):
        Autoencoder((4,), latent_dim=0)
    with pytest.raises(ConfigValueError, match="model.noise_level"):
        Autoencoder((4,), noise="masking", noise_level=1.5)
    with pytest.raises(ConfigValueError, match="model.variant"):
        VAE((4,), variant="recurrent")


def test_denoising_corrupts_only_in_training() -> None:
    torch.manual_seed(0)
    x = torch.ones(200, 50)
    gaussian = Autoencoder((50,), noise="gaussian", noise_level=0.5)
    assert (gaussian.corrupt(x) - x).std().item() == pytest.approx(0.5, rel=0.05)
    masking = Autoencoder((50,), noise="masking", noise_level=0.3)
    assert (masking.corrupt(x) == 0).float().mean().item() == pytest.approx(0.3, abs=0.02)
    masking.eval()
    assert torch.equal(masking.corrupt(x), x)


def test_kl_matches_torch_distributions() -> None:
    mu, logvar = torch.randn(6, 3), torch.randn(6, 3)
    q = torch.distributions.Normal(mu, torch.exp(0.5 * logvar))
    p = torch.distributions.Normal(torch.zeros(3), torch.ones(3))
    expected = torch.distributions.kl_divergence(q, p).sum(1)
    assert torch.allclose(Reconstruction.kl(mu, logvar), expected, atol=1e-5)


@pytest.mark.parametrize(("cls", "loss"), [(Autoencoder, "mse"), (VAE, "mse"), (VAE, "bce")])
def test_training_lowers_the_reconstruction_error(cls, loss) -> None:
    torch.manual_seed(0)
    prototypes = (torch.rand(4, 1, 8, 8) > 0.5).float()  # four binary 8x8 patterns, 16 copies each
    x = prototypes.repeat(16, 1, 1, 1)
    task = task_for(cls((1, 8, 8), latent_dim=4), loss=loss)
    first = task.training_step((x, torch.zeros(64)))
    for _ in range(60):
        last = task.training_step((x, torch.zeros(64)))
    assert last["recon"] < 0.5 * first["recon"]
    assert ("kl" in last) == (cls is VAE)
    assert last[loss].item() == pytest.approx(last["recon"].item() / 64, rel=1e-5)  # per value


def test_reconstruction_refuses_a_classifier() -> None:
    with pytest.raises(ConfigValueError, match="task=reconstruction trains autoencoders"):
        Reconstruction(MLP((4,), 2), partial(torch.optim.Adam))
    with pytest.raises(ConfigValueError, match="task.threshold"):
        Reconstruction(Autoencoder((4,)), partial(torch.optim.Adam), threshold="median")
    with pytest.raises(ConfigValueError, match="task.loss"):
        Reconstruction(Autoencoder((4,)), partial(torch.optim.Adam), loss="l1")


# --- anomaly metrics ------------------------------------------------------------------------------


def test_anomaly_metrics_match_a_hand_checked_case() -> None:
    scores = np.array([0.1, 0.4, 0.35, 0.8])
    is_anomaly = np.array([False, False, True, True])
    m = anomaly_metrics(scores, is_anomaly, threshold=0.35)
    # Pairs (anomaly, normal) ranked right: 0.8 > 0.1, 0.8 > 0.4, 0.35 > 0.1; wrong: 0.35 < 0.4 -> 3/4.
    assert m["roc_auc"] == pytest.approx(0.75)
    # By score: 0.8 (anomaly: P=1, R=1/2), 0.4 (normal), 0.35 (anomaly: P=2/3, R=1) -> AP = 1/2*1 + 1/2*2/3.
    assert m["pr_auc"] == pytest.approx(0.5 + 1 / 3)
    # Flagged at >= 0.35: 0.4, 0.35, 0.8 -> 2 true positives, 1 false positive, no miss.
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == 1.0
    assert m["f1"] == pytest.approx(0.8)
    assert m["threshold"] == 0.35


def test_thresholds_chosen_on_validation() -> None:
    scores = np.array([0.1, 0.2, 0.3, 0.4, 0.9, 0.95])
    is_anomaly = np.array([False, False, False, False, True, True])
    assert choose_threshold(scores, is_anomaly, "f1") == 0.9  # separates them: F1 = 1
    normal = np.linspace(0, 1, 101)  # quantile of the normal scores only, anomalies ignored
    assert choose_threshold(np.r_[normal, 5.0], np.r_[np.zeros(101, bool), True], "quantile", 0.9) == pytest.approx(0.9)


def test_anomaly_classes_are_left_out_of_training_only() -> None:
    rng = np.random.default_rng(0)
    dataset = ArrayDataset(rng.normal(size=(300, 4)), np.arange(300) % 3, "classification")
    data = DataModule(dataset, edits=[HoldOutClasses([2])])
    assert data.anomaly_classes == [2] and DataModule(dataset).anomaly_classes == []
    train_y, val_y, test_y = (data._arrays[s][1] for s in ("train", "val", "test"))
    assert 2 not in train_y and {0, 1} <= set(train_y.tolist())
    assert 2 in val_y and 2 in test_y
    for bad in ([3], [0, 1, 2]):
        with pytest.raises(ConfigValueError, match=r"data_edit.anomaly.classes=.* must list some, but not all.*0-2"):
            DataModule(dataset, edits=[HoldOutClasses(bad)])
    for bad in ([], [1, 1]):
        with pytest.raises(OptionError, match=r"data_edit.anomaly.classes=.* must list one or more class indices"):
            HoldOutClasses(bad)


# --- whole runs ----------------------------------------------------------------------------------


def test_anomaly_run_reports_and_keeps_the_validation_threshold(tmp_path: Path) -> None:
    run = train_tiny(
        [
            "experiment=digits_anomaly",
            "data_edit.anomaly.classes=[0]",
            "trainer.max_epochs=8",
            "trainer.limit_train_batches=null",
        ],
        tmp_path,
    )
    m = run.metrics
    for split in ("val", "test"):
        for key in ("roc_auc", "pr_auc", "precision", "recall", "f1", "threshold", "loss", "mse"):
            assert np.isfinite(m[f"{split}/{key}"]), f"{split}/{key}"
    assert m["test/roc_auc"] > 0.8  # digit 0 is already told apart after 8 epochs
    # The test split is flagged with the threshold the best checkpoint's validation chose.
    best = run.checkpoint("best")
    assert m["test/threshold"] == pytest.approx(best["model"]["anomaly_threshold"].item())
    assert {p.name for p in (tmp_path / "figures").iterdir()} == {
        "reconstructions.png",
        "latent_space.png",
        "score_histogram.png",
    }
    events = EventAccumulator(str(tmp_path), size_guidance={"images": 0})
    events.Reload()
    assert [e.step for e in events.Images("val/reconstructions")] == list(range(1, 9))  # one per epoch
    assert {"test/latent_space", "test/score_histogram"} <= set(events.Tags()["images"])
    projector = (tmp_path / "projector" / "projector_config.pbtxt").read_text()
    assert "test/latent" in projector
    assert "sprite" in projector and "single_image_dim: 8" in projector  # each digit shown as its picture
    (sprite,) = (tmp_path / "projector").rglob("sprite.png")
    assert sprite.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_vae_run_logs_kl_and_prior_samples(tmp_path: Path) -> None:
    run = train_tiny(["experiment=digits_vae", "trainer.max_epochs=2"], tmp_path)
    assert {"train/kl", "val/kl", "test/kl", "test/bce", "test/recon"} <= set(run.metrics)
    assert run.metrics["test/loss"] == pytest.approx(run.metrics["test/recon"] + run.metrics["test/kl"], rel=1e-5)
    events = EventAccumulator(str(tmp_path), size_guidance={"images": 0})
    events.Reload()
    assert [e.step for e in events.Images("val/samples")] == [1, 2]
    assert "test/roc_auc" not in run.metrics  # no anomaly classes: no anomaly metrics
