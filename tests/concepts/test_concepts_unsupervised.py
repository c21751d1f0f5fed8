"""What the unsupervised concept experiments rely on: the reconstruction task's denoising metric
(noisy input, clean target) and kNN probe of the codes, and PacGAN's packed discriminator."""

from __future__ import annotations

from functools import partial

import pytest
import torch

from nnlab.engine.precision import Precision
from nnlab.errors import ConfigValueError
from nnlab.models.autoencoder import Autoencoder
from nnlab.models.gan import GAN, pack_samples
from nnlab.tasks.reconstruction import Reconstruction

CPU = torch.device("cpu")


def reconstruction(model, **kwargs) -> Reconstruction:
    task = Reconstruction(model, partial(torch.optim.Adam, lr=3e-3), **kwargs)
    task.configure(CPU, Precision("32", CPU), total_steps=10)
    return task


class Splits:
    """The part of a DataModule the reconstruction task reads: batches of a split, and the classes
    held out of training (`DataModule.anomaly_classes`: a list, empty when none are)."""

    def __init__(self, **splits: tuple[torch.Tensor, torch.Tensor]) -> None:
        self.splits = splits
        self.anomaly_classes: list[int] = []

    def eval_batches(self, split: str):
        x, y = self.splits[split]
        return [(x[i : i + 16], y[i : i + 16]) for i in range(0, len(x), 16)]


def blobs(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two far-apart clusters in 6-D, labelled by cluster."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = torch.randn(n, 6, generator=g) * 0.1 + 4.0 * y[:, None].float()
    return x, y


# --- denoising -----------------------------------------------------------------------------------


def test_denoise_metric_scores_the_reconstruction_of_noisy_inputs_against_clean_ones() -> None:
    torch.manual_seed(0)
    model = Autoencoder((6,), hidden_sizes=[8], latent_dim=3)
    task = reconstruction(model, eval_noise=0.5)
    x, y = blobs(40, seed=1)
    batches = Splits(val=(x, y)).eval_batches("val")
    metrics = task.evaluate(batches)
    # The same noise, drawn as the task draws it: one generator seeded 0, batch after batch.
    g = torch.Generator().manual_seed(0)
    noisy = torch.cat([xb + 0.5 * torch.randn(xb.shape, generator=g) for xb, _ in batches])
    with torch.no_grad():
        expected = (model(noisy).recon - x).pow(2).mean().item()  # target: the clean x
        clean = (model(x).recon - x).pow(2).mean().item()
    assert metrics["denoise_mse"] == pytest.approx(expected, rel=1e-5)
    assert metrics["mse"] == pytest.approx(clean, rel=1e-5)
    assert task.evaluate(batches)["denoise_mse"] == metrics["denoise_mse"]  # the same noise each time
    # The picture: noisy inputs, their reconstructions and the clean inputs, one row each.
    images = task.epoch_images()
    assert images["val/denoised"].shape[1] > images["val/reconstructions"].shape[1]


def test_no_eval_noise_no_denoise_metric() -> None:
    task = reconstruction(Autoencoder((6,), hidden_sizes=[8], latent_dim=3))
    metrics = task.evaluate(Splits(val=blobs(20, seed=1)).eval_batches("val"))
    assert "denoise_mse" not in metrics
    assert "val/denoised" not in task.epoch_images()


@pytest.mark.parametrize(("kwargs", "key"), [({"eval_noise": -0.1}, "task.eval_noise"),
                                             ({"probe_neighbors": -1}, "task.probe_neighbors")])  # fmt: skip
def test_bad_options_name_the_key(kwargs: dict, key: str) -> None:
    with pytest.raises(ConfigValueError, match=key):
        Reconstruction(Autoencoder((6,)), partial(torch.optim.Adam), **kwargs)


# --- the kNN probe of the codes ------------------------------------------------------------------


def test_knn_probe_scores_codes_and_pca_on_the_test_split() -> None:
    torch.manual_seed(0)
    task = reconstruction(Autoencoder((6,), hidden_sizes=[8], latent_dim=2), probe_neighbors=3)
    task.prepare(Splits(train=blobs(60, seed=1), test=blobs(30, seed=2)))
    metrics = task.evaluate(Splits(test=blobs(30, seed=2)).eval_batches("test"), detailed=True)
    # Two clusters 4 apart with spread 0.1: the first principal component alone separates them,
    # and so does the code of this (untrained) encoder, which keeps them apart.
    assert metrics["pca_knn_acc"] == 1.0
    assert metrics["latent_knn_acc"] == 1.0
    assert "pca_knn_acc" not in task.evaluate(Splits(test=blobs(30, seed=2)).eval_batches("test"))  # val: no probe
    # A code that says nothing (all zeros) leaves the kNN at chance: one class for every sample.
    last = task.model.encoder[-1]
    torch.nn.init.zeros_(last.weight)
    torch.nn.init.zeros_(last.bias)
    blind = task.evaluate(Splits(test=blobs(30, seed=2)).eval_batches("test"), detailed=True)
    assert blind["latent_knn_acc"] == 0.5
    assert blind["pca_knn_acc"] == 1.0


def test_knn_probe_is_off_for_anomaly_detection_and_when_asked() -> None:
    data = Splits(train=blobs(40, seed=1), test=blobs(20, seed=2))
    off = reconstruction(Autoencoder((6,), hidden_sizes=[8], latent_dim=2), probe_neighbors=0)
    off.prepare(data)
    assert "latent_knn_acc" not in off.evaluate(data.eval_batches("test"), detailed=True)
    anomaly = reconstruction(Autoencoder((6,), hidden_sizes=[8], latent_dim=2))
    data.anomaly_classes = [1]
    anomaly.prepare(data)
    metrics = anomaly.evaluate(data.eval_batches("test"), detailed=True)
    assert "latent_knn_acc" not in metrics and "roc_auc" in metrics


# --- PacGAN: D judges packs of samples -----------------------------------------------------------


def test_pack_samples_joins_consecutive_samples_and_tops_up_the_last_pack() -> None:
    x = torch.arange(10.0).view(5, 2)  # five samples of two features
    packed = pack_samples(x, 2)
    assert packed.tolist() == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 0, 1]]  # the fifth packed with the first
    images = torch.randn(4, 1, 8, 8)
    stacked = pack_samples(images, 2)
    assert stacked.shape == (2, 2, 8, 8)
    assert torch.equal(stacked[1, 1], images[3, 0])  # pack 1, second member = sample 3
    assert pack_samples(x[:1], 3).tolist() == [[0, 1, 0, 1, 0, 1]]  # fewer samples than a pack


@pytest.mark.parametrize(("shape", "variant"), [((2,), "mlp"), ((1, 8, 8), "dcgan"), ((1, 28, 28), "dcgan")])
def test_packed_discriminator_gives_each_sample_its_packs_logit(shape: tuple[int, ...], variant: str) -> None:
    torch.manual_seed(0)
    gan = GAN(shape, num_outputs=10, variant=variant, latent_dim=4, pack=3, batch_norm=False)
    x = torch.randn(7, *shape)
    logits = gan.discriminator(x)
    assert logits.shape == (7,)  # one per sample, as the task's losses expect
    assert torch.equal(logits[0], logits[2]) and torch.equal(logits[3], logits[5])  # packs {0,1,2}, {3,4,5}
    # A pack is judged as a whole: changing one member changes its packmates' logits, no others.
    changed = x.clone()
    changed[4] += 1.0
    moved = gan.discriminator(changed) != logits
    assert moved.tolist() == [False, False, False, True, True, True, False]
    # Only D's first layer widens (pack times the inputs); G is untouched.
    plain = GAN(shape, num_outputs=10, variant=variant, latent_dim=4, batch_norm=False)
    first, plain_first = gan.discriminator.net[0].weight, plain.discriminator.net[0].weight
    assert first.shape[1] == 3 * plain_first.shape[1]
    assert [p.shape for p in gan.generator.parameters()] == [p.shape for p in plain.generator.parameters()]


def test_pack_options_are_checked() -> None:
    with pytest.raises(ConfigValueError, match="model.pack"):
        GAN((2,), num_outputs=8, pack=0)
    with pytest.raises(ConfigValueError, match="model.pack=2 .*conditional"):
        GAN((2,), num_outputs=8, pack=2, conditional=True)
