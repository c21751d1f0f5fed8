"""The GPU fast path's model-side switches (channels_last, torch.compile), the CIFAR ResNet and
the fake CIFAR data. CUDA tests are marked `gpu` and skip without a device."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from helpers import assert_finite_metrics, train_tiny
from nnlab.data.synthetic import fake_images
from nnlab.engine.acceleration import (
    channels_last_batches,
    compile_mode,
    prepare_model,
    to_channels_last,
    unwrap,
)
from nnlab.errors import ConfigValueError, DataMismatchError
from nnlab.models.resnet import ResNet

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

SMALL = {"widths": (4, 8), "blocks_per_stage": (1, 1)}


def tiny_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(4, 5),
    )  # fmt: skip


# ---- ResNet ---------------------------------------------------------------------------------


def test_resnet_forward_backward_shapes() -> None:
    torch.manual_seed(0)
    model = ResNet((3, 32, 32), 10)  # ResNet-20 defaults
    x = torch.randn(2, 3, 32, 32)
    out = model(x)
    assert out.shape == (2, 10)
    out.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    # Depth 2 + 2 * 9 = 20 weighted layers: 19 3x3 convs (stem + 2 per block) and the Linear head.
    convs3 = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(convs3) == 19
    # Two 1x1 shortcuts (entering stages 2 and 3); the paper's ResNet-20 has ~0.27 M parameters.
    assert sum(isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) for m in model.modules()) == 2
    assert 0.26e6 < sum(p.numel() for p in model.parameters()) < 0.28e6


def test_resnet_stages_halve_the_map() -> None:
    model = ResNet((3, 32, 32), 10, widths=(4, 8, 16), blocks_per_stage=(1, 1, 1)).eval()
    feats = model.stages(model.stem(torch.zeros(1, 3, 32, 32)))
    assert feats.shape == (1, 16, 8, 8)


def test_resnet_rejects_non_images_with_a_clear_error() -> None:
    with pytest.raises(DataMismatchError, match=r"RESNET needs images.*\(64,\).*data=<name>"):
        ResNet((64,), 10)
    model = ResNet((3, 32, 32), 10, **SMALL)
    with pytest.raises(DataMismatchError, match=r"B, 3, H, W.*\(1, 32, 32\)"):
        model(torch.zeros(2, 1, 32, 32))


def test_resnet_config_errors_name_the_key() -> None:
    with pytest.raises(ConfigValueError, match=r"model.blocks_per_stage=\[1, 1\].*model.widths=\[4, 8, 16\]"):
        ResNet((3, 32, 32), 10, widths=(4, 8, 16), blocks_per_stage=(1, 1))
    with pytest.raises(ConfigValueError, match="model.widths"):
        ResNet((3, 32, 32), 10, widths=(), blocks_per_stage=())


# ---- fake CIFAR -----------------------------------------------------------------------------


def test_fake_images_shapes_dtypes_and_seed() -> None:
    a = fake_images(n_samples=50, channels=3, height=32, width=32, num_classes=10, seed=1)
    assert a.x.shape == (50, 3, 32, 32) and a.x.dtype == np.float32
    assert a.y.dtype == np.int64 and set(a.y) == set(range(10)) and np.bincount(a.y).tolist() == [5] * 10
    assert a.kind == "classification" and a.input_shape == (3, 32, 32)
    b = fake_images(n_samples=50, channels=3, height=32, width=32, num_classes=10, seed=1)
    c = fake_images(n_samples=50, channels=3, height=32, width=32, num_classes=10, seed=2)
    np.testing.assert_array_equal(a.x, b.x)
    assert not np.allclose(a.x, c.x)


def test_fake_images_carry_their_class() -> None:
    """Without shifts, the class means are the patterns: each image is nearest its own class's
    mean (estimated on other images) far more often than chance (0.1)."""
    d = fake_images(n_samples=1000, num_classes=10, signal=0.3, max_shift=0, seed=0)
    x = d.x.reshape(len(d.x), -1)
    means = np.stack([x[:500][d.y[:500] == k].mean(0) for k in range(10)])
    pred = ((x[500:, None, :] - means[None]) ** 2).sum(-1).argmin(1)
    assert (pred == d.y[500:]).mean() > 0.9


def test_fake_images_errors_name_the_key() -> None:
    with pytest.raises(ConfigValueError, match="data.dataset.num_classes"):
        fake_images(n_samples=10, num_classes=1)
    with pytest.raises(ConfigValueError, match="data.dataset.signal"):
        fake_images(n_samples=10, signal=0.0)


def test_train_resnet_on_fake_cifar(tmp_path: Path) -> None:
    run = train_tiny(
        [
            "model=resnet",
            "model.widths=[4,8]",
            "model.blocks_per_stage=[1,1]",
            "data=fake_cifar",
            "data.dataset.n_samples=200",
            "data.batch_size=16",
            "trainer.device=cpu",
        ],
        tmp_path / "run",
    )
    assert_finite_metrics(run.metrics, "classification")
    ckpt = torch.load(run.dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert "stem.0.weight" in ckpt["model"]


def test_a_channels_last_run_equals_a_contiguous_one(tmp_path: Path) -> None:
    """trainer.channels_last=true changes memory layout only: the same metrics and weights (up to
    float rounding), in checkpoints with the usual parameter names."""
    # No dropout: its mask is drawn in memory order, so NHWC drops other (equally random) units.
    # SGD: Adam would turn rounding-level gradient differences into lr-sized steps.
    overrides = ["model=cnn", "model.dropout=0", "data=digits", "optimizer=sgd", "trainer.device=cpu"]
    plain = train_tiny(overrides, tmp_path / "plain")
    nhwc = train_tiny([*overrides, "trainer.channels_last=true"], tmp_path / "nhwc")
    # NHWC kernels sum in another order: equal up to float rounding, not bit for bit
    assert nhwc.metrics["val/loss"] == pytest.approx(plain.metrics["val/loss"], rel=1e-3)
    for name, w in plain.checkpoint()["model"].items():
        torch.testing.assert_close(nhwc.checkpoint()["model"][name], w, rtol=1e-3, atol=1e-4)


# ---- compile mode and channels_last ---------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "mode"),
    [(False, None), (None, None), ("false", None), (True, "default"), ("true", "default"),
     ("default", "default"), ("reduce-overhead", "reduce-overhead"), ("max-autotune", "max-autotune")],
)  # fmt: skip
def test_compile_mode(value: object, mode: str | None) -> None:
    assert compile_mode(value) == mode


def test_unknown_compile_mode_names_the_key_and_choices() -> None:
    with pytest.raises(ConfigValueError, match=r"trainer.compile='max_autotune'.*Did you mean 'max-autotune'"):
        compile_mode("max_autotune")
    with pytest.raises(ConfigValueError, match="trainer.compile=3"):
        compile_mode(3)


def test_to_channels_last_only_restrides_4d() -> None:
    x = torch.randn(2, 3, 5, 6)
    y = to_channels_last(x)
    assert y.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(x, y) and y.stride() == (90, 1, 18, 3)
    flat = torch.randn(2, 7)
    assert to_channels_last(flat) is flat
    batches = list(channels_last_batches([(x, torch.tensor([0, 1]))]))
    assert batches[0][0].is_contiguous(memory_format=torch.channels_last) and torch.equal(
        batches[0][1], torch.tensor([0, 1])
    )


def test_channels_last_outputs_equal_contiguous_on_cpu() -> None:
    torch.manual_seed(0)
    model = ResNet((3, 32, 32), 10, **SMALL).eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
        fast = prepare_model(model, "cpu", channels_last=True)
        assert fast is model
        assert model.stem[0].weight.is_contiguous(memory_format=torch.channels_last)
        got = fast(to_channels_last(x))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    # The state_dict is unchanged in name and value (only strides differ).
    assert all(k == k2 for k, k2 in zip(model.state_dict(), ResNet((3, 32, 32), 10, **SMALL).state_dict()))


def test_channels_last_is_a_logged_no_op_without_2d_convs(caplog: pytest.LogCaptureFixture) -> None:
    mlp = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    before = {k: v.clone() for k, v in mlp.state_dict().items()}
    with caplog.at_level(logging.INFO, logger="nnlab.engine.acceleration"):
        out = prepare_model(mlp, "cpu", channels_last=True)
    assert out is mlp and all(torch.equal(before[k], v) for k, v in mlp.state_dict().items())
    assert "does nothing for Sequential" in caplog.text


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["mlp", "cnn", "text_transformer", "gpt"])
def test_compile_equals_eager_on_cpu(kind: str) -> None:
    """Inductor on CPU (C++ kernels): same outputs and gradients as eager, and the original
    module keeps its plain state_dict keys (checkpoints are written from it). The Transformers
    run scaled_dot_product_attention with a padding mask and causally."""
    from nnlab.models.gpt import GPT
    from nnlab.models.transformer import Transformer

    torch.manual_seed(0)
    tokens = torch.randint(2, 20, (8, 12))
    tokens[:, 9:] = 0  # padding at the end of every row
    model, x = {
        "mlp": lambda: (nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3)), torch.randn(8, 6)),
        "cnn": lambda: (tiny_cnn(), torch.randn(8, 3, 8, 8)),
        "text_transformer": lambda: (
            Transformer((12,), 3, vocab_size=20, d_model=16, num_heads=2, dropout=0.0),
            tokens,
        ),
        "gpt": lambda: (GPT((12,), 20, vocab_size=20, d_model=16, num_heads=2, num_layers=2, dropout=0.0), tokens),
    }[kind]()
    model.eval()
    expected = model(x)
    compiled = prepare_model(model, "cpu", compile=True)
    assert compiled is not model and unwrap(compiled) is model
    torch.testing.assert_close(compiled(x), expected, rtol=1e-4, atol=1e-5)
    # Gradients agree too (the training step runs backward through the compiled graph).
    expected_grads = torch.autograd.grad(model(x).square().sum(), list(model.parameters()))
    got_grads = torch.autograd.grad(compiled(x).square().sum(), list(model.parameters()))
    for g, e in zip(got_grads, expected_grads):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-5)
    assert all(k.startswith("_orig_mod.") for k in compiled.state_dict())
    assert not any(k.startswith("_orig_mod.") for k in model.state_dict())


# ---- CUDA -----------------------------------------------------------------------------------


@pytest.mark.gpu
@cuda
def test_cuda_channels_last_bf16_matches_fp32() -> None:
    if not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    torch.manual_seed(0)
    model = ResNet((3, 32, 32), 10, widths=(16, 32, 64), blocks_per_stage=(1, 1, 1)).eval()
    x = torch.randn(32, 3, 32, 32, device="cuda")
    model.cuda()
    with torch.no_grad():
        expected = model(x)
        prepare_model(model, "cuda", channels_last=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            got = model(to_channels_last(x))
    assert got.dtype == torch.bfloat16
    # bf16 keeps 8 bits of mantissa: agreement to a few percent of the logits' scale.
    torch.testing.assert_close(got.float(), expected, rtol=0.05, atol=0.05 * expected.abs().max().item())


@pytest.mark.gpu
@pytest.mark.slow
@cuda
def test_cuda_compile_channels_last_bf16_trains(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = ResNet((3, 32, 32), 10, widths=(16, 32, 64), blocks_per_stage=(1, 1, 1))
    fast = prepare_model(model, "cuda", channels_last=True, compile=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    data = fake_images(n_samples=512, seed=0)
    x = to_channels_last(torch.as_tensor(data.x, device="cuda"))
    y = torch.as_tensor(data.y, device="cuda")
    losses = []
    for step in range(20):
        idx = torch.arange(step % 4 * 128, step % 4 * 128 + 128, device="cuda")
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = nn.functional.cross_entropy(fast(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(np.isfinite(losses)) and np.mean(losses[-4:]) < np.mean(losses[:4])
    assert "stem.0.weight" in model.state_dict()


@pytest.mark.gpu
@cuda
def test_cuda_train_resnet_fake_cifar(tmp_path: Path) -> None:
    run = train_tiny(
        ["model=resnet", "model.widths=[8,16]", "model.blocks_per_stage=[1,1]", "data=fake_cifar",
         "data.dataset.n_samples=500", "trainer=gpu"],
        tmp_path / "run",
    )  # fmt: skip
    assert_finite_metrics(run.metrics, "classification")
