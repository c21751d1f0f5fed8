"""GANs: each phase of the step moves only its own network, the shapes of G and D on every kind of
sample, the sample-quality metrics on hand-checked cases, and runs logged to TensorBoard."""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.linalg import sqrtm
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from datafiles import offline_data
from helpers import epoch_curve, train_tiny
from nnlab.data.datamodule import DataModule
from nnlab.data.synthetic import ring
from nnlab.engine.precision import Precision
from nnlab.errors import ConfigValueError, DataMismatchError
from nnlab.models.gan import GAN, with_label_vector
from nnlab.tasks.gan import Adversarial
from nnlab.tasks.gan_metrics import (
    assign_modes,
    coverage,
    fit_modes,
    frechet_distance,
    frechet_distance_gaussians,
    mode_tv,
)

CPU = torch.device("cpu")
ADAM = partial(torch.optim.Adam, lr=2e-4, betas=(0.5, 0.999))
# A short GAN run: two epochs of two batches, a quickly trained judge, fewer scored samples.
QUICK = ["trainer.max_epochs=2", "task.judge_steps=30", "task.num_samples=200", "trainer.log_every_n_steps=1"]


def gan_task(model: GAN, **kwargs) -> Adversarial:
    task = Adversarial(model, kwargs.pop("optimizer", ADAM), **kwargs)
    task.configure(CPU, Precision("32", CPU), total_steps=10)
    return task


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in module.named_parameters()}


def changed(module: torch.nn.Module, before: dict[str, torch.Tensor]) -> set[str]:
    return {name for name, p in module.named_parameters() if not torch.equal(p, before[name])}


# ---- the step ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "input_shape, conditional", [((1, 8, 8), False), ((1, 8, 8), True), ((2,), False), ((2,), True)]
)
def test_each_phase_moves_only_its_network(input_shape: tuple[int, ...], conditional: bool) -> None:
    torch.manual_seed(0)
    model = GAN(input_shape, 10, conditional=conditional, output_activation="none")
    task = gan_task(model)
    x, y = torch.rand(16, *input_shape), torch.arange(16) % 10
    labels = y if conditional else None
    G, D = model.generator, model.discriminator

    g_before, d_before = snapshot(G), snapshot(D)
    out = task.discriminator_step(x, labels)
    assert changed(D, d_before) == set(d_before)  # every D parameter moved (Adam: even tiny grads)
    assert not changed(G, g_before)  # fakes were made without a graph: nothing reached G
    assert all(p.grad is None for p in G.parameters())

    g_before, d_before = snapshot(G), snapshot(D)
    out.update(task.generator_step(16, labels))
    assert changed(G, g_before) == set(g_before)
    assert not changed(D, d_before)
    assert all(p.grad is None for p in D.parameters())  # frozen: nothing left for D's next update
    assert all(p.requires_grad for p in D.parameters())  # and unfrozen afterwards

    assert set(out) == {"d_loss", "d_real", "d_fake", "g_loss"}
    for value in out.values():
        assert value.ndim == 0 and not value.requires_grad and torch.isfinite(value)
    assert 0 < out["d_real"] < 1 and 0 < out["d_fake"] < 1


def test_discriminator_learns_against_a_fixed_generator() -> None:
    """With G held still, D's steps are ordinary classifier training: its loss must fall, from
    about 2 log 2 (D cannot tell yet) towards 0, and D(x) must rise above D(G(z))."""
    torch.manual_seed(0)
    data = DataModule(ring(2000, seed=0), batch_size=128, normalize="none", val_fraction=0.1, test_fraction=0.1)
    data.setup(CPU)
    model = GAN(data.input_shape, data.num_outputs, widths=[64, 64], output_activation="none", batch_norm=False)
    task = gan_task(model, optimizer=partial(torch.optim.Adam, lr=1e-3))
    losses, last = [], {}
    for epoch in range(8):  # 104 steps: seeds 0-3 end at d_loss 0.35-0.45, D(x) 0.95, D(G(z)) 0.24-0.33
        for x, _ in data.train_batches(epoch):
            last = task.discriminator_step(x, None)
            losses.append(last["d_loss"].item())
    assert losses[0] == pytest.approx(2 * math.log(2), abs=0.1)
    assert np.mean(losses[-5:]) < 0.5 * losses[0]
    assert last["d_real"] > 0.8 and last["d_fake"] < 0.5


# ---- shapes -------------------------------------------------------------------------------------


@pytest.mark.parametrize("conditional", [False, True])
@pytest.mark.parametrize(
    "input_shape, variant, start",
    [((1, 8, 8), "dcgan", (2, 2)), ((1, 28, 28), "dcgan", (7, 7)), ((3, 32, 32), "dcgan", (8, 8)), ((2,), "mlp", None)],
)
def test_generator_and_discriminator_shapes(input_shape, variant, start, conditional: bool) -> None:
    model = GAN(input_shape, 10, latent_dim=16, widths=[32, 16], conditional=conditional).eval()
    assert model.variant == variant  # variant=auto: dcgan for images, mlp for vectors
    z, labels = torch.randn(5, 16), (torch.arange(5) if conditional else None)
    fake = model(z, labels)
    assert fake.shape == (5, *input_shape)
    assert model.discriminator(fake, labels).shape == (5,)
    if start is not None:  # the projection of z: the map the stride-2 layers double
        h = with_label_vector(z, labels, model.num_classes)[:, :, None, None]
        assert model.generator.net[:3](h).shape[2:] == start
    first = model.discriminator.net[0]
    in_size = first.in_channels if variant == "dcgan" else first.in_features
    assert in_size == (input_shape[0] if variant == "dcgan" else 2) + (10 if conditional else 0)


def test_sigmoid_output_stays_in_pixel_range() -> None:
    model = GAN((1, 8, 8), 10, output_activation="sigmoid").eval()
    fake = model(torch.randn(64, 64) * 100)
    assert fake.min() >= 0 and fake.max() <= 1
    assert GAN((2,), 8, output_activation="none").variant == "mlp"


def test_mnist_format_run_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """28x28 MNIST-format files (the offline stand-in): G starts at 7x7, a whole run scores it."""
    files = offline_data("mnist", tmp_path / "data", monkeypatch)
    run = train_tiny(
        ["model=gan", "data=mnist", *files, "data.normalize=none", "data.batch_size=16", *QUICK],
        tmp_path / "run",
    )
    assert run.cfg.model._target_ == "nnlab.models.gan.GAN" and run.cfg.task._target_ == "nnlab.tasks.gan.Adversarial"
    assert math.isfinite(run.metrics["val/fd"]) and math.isfinite(run.metrics["test/fd"])
    assert (run.dir / "figures" / "samples.png").exists()


# ---- metrics -------------------------------------------------------------------------------------


def test_frechet_distance_of_known_gaussians() -> None:
    # Diagonal covariances: |mu1 - mu2|^2 + sum (sigma1 - sigma2)^2 = 25 + (1 - 2)^2 + (2 - 1)^2.
    assert frechet_distance_gaussians([0, 0], np.diag([1, 4]), [3, 4], np.diag([4, 1])) == pytest.approx(27)
    # Covariances that do not commute: against the formula with scipy's matrix square root.
    a, b = np.array([[2.0, 0.9], [0.9, 1.0]]), np.array([[1.0, -0.5], [-0.5, 3.0]])
    expected = np.trace(a + b - 2 * sqrtm(a @ b).real)
    assert frechet_distance_gaussians([1, 0], a, [0, 0], b) == pytest.approx(1 + expected)
    assert frechet_distance_gaussians([1, 2], a, [1, 2], a) == pytest.approx(0, abs=1e-9)
    # Fitted to samples: N(0, I) against N(mu, 4I) in 2-D gives |mu|^2 + 2 * (2 - 1)^2.
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(50_000, 2)), rng.normal([1.0, 2.0], 2.0, size=(50_000, 2))
    assert frechet_distance(x, y) == pytest.approx(5 + 2, abs=0.1)
    assert frechet_distance(torch.from_numpy(x), torch.from_numpy(x)) == pytest.approx(0, abs=1e-9)


def test_coverage_counts_classes_with_a_quarter_of_their_share() -> None:
    # 100 samples over 4 classes: a fair share is 25, a quarter of it 6.25.
    labels = np.array([0] * 50 + [1] * 38 + [2] * 6 + [3] * 6)
    covered, entropy = coverage(labels, 4)
    assert covered == 2  # classes 2 and 3 got 6 < 6.25
    p = np.array([0.5, 0.38, 0.06, 0.06])
    assert entropy == pytest.approx(-(p * np.log(p)).sum() / np.log(4))
    assert coverage(np.arange(100) % 4, 4) == (4, pytest.approx(1.0))  # even: every class, entropy 1
    assert coverage(np.zeros(100, int), 4) == (1, pytest.approx(0.0))  # full collapse
    # Uneven shares: class 0 is 70% of the data, so 10 samples of it (fair share 70) are too few.
    assert coverage(np.array([0] * 10 + [1] * 90), 2, shares=[0.7, 0.3])[0] == 1
    # Samples of no class (-1) count in N but for no class.
    assert coverage(np.array([-1] * 90 + [0] * 5 + [1] * 5), 2)[0] == 0


def test_modes_assignment_and_distance() -> None:
    data = ring(4000, modes=8, std=0.02, seed=0)
    x, y = torch.from_numpy(data.x), torch.from_numpy(data.y)
    centres, scales = fit_modes(x, y, 8)
    assert torch.allclose(centres.norm(dim=1), torch.full((8,), 2.0, dtype=torch.float64), atol=0.01)
    assert torch.allclose(scales, torch.full((8,), 0.02, dtype=torch.float64), rtol=0.1)
    assigned = assign_modes(x, centres, scales)
    assert (assigned == y).float().mean() > 0.97  # 3 std keeps ~98.9% of a 2-D Gaussian
    # A point between two modes, or at the origin, belongs to none.
    assert assign_modes(torch.tensor([[0.0, 0.0], [2.0, 0.0], [1.85, 0.77]]), centres, scales).tolist() == [-1, 0, -1]
    assert mode_tv(assigned, assigned, 8) == 0.0
    collapsed = torch.zeros(len(x), dtype=torch.long)  # everything on mode 0
    assert mode_tv(collapsed, y, 8) == pytest.approx(7 / 8)
    assert mode_tv(torch.full_like(y, -1), y, 8) == pytest.approx(1.0)  # all blur


def test_judge_leaves_the_global_rng_alone(tmp_path: Path) -> None:
    """prepare() trains the judge from a forked, seeded RNG: the run's random stream is untouched,
    and the judge is the same whatever the run's seed."""
    from nnlab.data.sklearn import digits

    data = DataModule(digits(), normalize="none")
    data.setup(CPU)
    judges = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        task = gan_task(GAN(data.input_shape, data.num_outputs), judge_steps=20)
        state = torch.get_rng_state()
        task.prepare(data)
        assert torch.equal(torch.get_rng_state(), state)
        judges.append(task.judge.net.head[-1].weight)
    assert torch.equal(*judges)


# ---- whole runs --------------------------------------------------------------------------------


@pytest.mark.parametrize("conditional", [False, True])
def test_digits_gan_logs_losses_quality_and_samples(conditional: bool, tmp_path: Path) -> None:
    run = train_tiny(["experiment=digits_gan", f"model.conditional={str(conditional).lower()}", *QUICK], tmp_path)
    events = EventAccumulator(str(tmp_path), size_guidance={"images": 0})
    events.Reload()
    per_epoch = ["train/d_loss", "train/g_loss", "train/d_real", "train/d_fake", "val/d_loss", "val/g_loss"]
    per_epoch += ["val/d_real", "val/d_fake", "val/fd", "val/classes_covered", "val/class_entropy"]
    per_epoch += ["val/cond_acc"] if conditional else []
    for tag in per_epoch:
        assert [e.step for e in epoch_curve(tmp_path, tag)] == [1, 2], tag
    assert len(events.Scalars("lr/g")) == len(events.Scalars("lr/d")) == 4  # one per step
    assert [e.step for e in events.Images("val/samples")] == [1, 2]
    assert (run.dir / "figures" / "samples.png").exists()
    assert run.cfg.optimized_metric == "val/fd" and run.metrics["val/fd"] > 0
    assert ("test/cond_acc" in run.metrics) == conditional
    # Both optimizers and the fixed noise are checkpointed: a resumed run shows the same samples.
    state = run.checkpoint()["task"]
    assert {"optim_d", "optim_g", "fixed_noise", "fixed_labels"} <= set(state)
    assert state["fixed_noise"].shape == (200, run.cfg.model.latent_dim)
    task = gan_task(GAN((1, 8, 8), 10, conditional=conditional), num_samples=200, sample_seed=5)
    task.load_state_dict(state)
    assert torch.equal(task.fixed_noise, state["fixed_noise"])


@pytest.mark.slow  # (moved out of the default suite to keep it near 10 minutes)
def test_ring_gan_improves_on_the_ring(tmp_path: Path) -> None:
    """15 epochs of experiment=ring_gan (~950 steps): G's samples move from a blob onto the ring,
    and the 2-D Fréchet distance falls more than tenfold (seed 0: 3.7 at epoch 1, 0.08 at 15)."""
    run = train_tiny(["experiment=ring_gan", "trainer.max_epochs=15", "trainer.limit_train_batches=null"], tmp_path)
    events = EventAccumulator(str(tmp_path), size_guidance={"images": 0})
    events.Reload()
    fd = [e.value for e in epoch_curve(tmp_path, "val/fd")]
    assert min(fd[-3:]) < 0.1 * fd[0], fd
    assert {"val/modes_covered", "val/high_quality", "val/mode_tv", "val/mode_entropy"} <= set(run.metrics)
    assert len(events.Images("val/samples")) == 15


# ---- mistakes ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"variant": "cnn"}, "model.variant"),
        ({"output_activation": "relu"}, "model.output_activation"),
        ({"latent_dim": 0}, "model.latent_dim"),
        ({"widths": [64, 0]}, "model.widths"),
        ({"widths": []}, "model.widths"),
        ({"init": "xavier"}, "model.init"),  # GAN's own recipes only; xavier is the init group's
        ({"d_dropout": 1.0}, "model.d_dropout"),
        ({"widths": [64, 32, 16]}, "model.widths"),  # 28 is not divisible by 2**3
    ],
)
def test_bad_model_options_name_the_key(kwargs: dict, key: str) -> None:
    with pytest.raises(ConfigValueError, match=key.replace(".", r"\.")):
        GAN((1, 28, 28), 10, **kwargs)


@pytest.mark.parametrize(
    "kwargs, key",
    [({"label_smoothing": 1.0}, "task.label_smoothing"), ({"num_samples": 1}, "task.num_samples"),
     ({"grid_size": 0}, "task.grid_size"), ({"judge_steps": -1}, "task.judge_steps")],
)  # fmt: skip
def test_bad_task_options_name_the_key(kwargs: dict, key: str) -> None:
    with pytest.raises(ConfigValueError, match=key.replace(".", r"\.")):
        Adversarial(GAN((2,), 8), ADAM, **kwargs)


def test_dcgan_needs_images_and_the_task_needs_a_gan() -> None:
    with pytest.raises(DataMismatchError, match=r"model\.variant=dcgan needs images .*\(2,\).*model\.variant=mlp"):
        GAN((2,), 8, variant="dcgan")
    with pytest.raises(ConfigValueError, match="model=gan"):
        Adversarial(torch.nn.Linear(2, 2), ADAM)


def test_conditional_gan_on_data_without_classes_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigValueError, match=r"model\.conditional=true .* regression: it has no classes"):
        Adversarial(GAN((10,), 1, conditional=True), ADAM, kind="regression")
    # The unconditional GAN takes such data; its samples are scored in the data's own space.
    task = gan_task(GAN((10,), 1, output_activation="none"), kind="regression", num_samples=50)
    metrics = task.evaluate([(torch.randn(40, 10), torch.randn(40))])
    assert set(metrics) == {"d_loss", "g_loss", "d_real", "d_fake", "fd"}
