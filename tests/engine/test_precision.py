"""trainer.precision: bf16 autocast on the CPU; fp32, bf16 and fp16 with loss scaling on CUDA."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from helpers import assert_finite_metrics
from nnlab.engine.precision import Precision
from nnlab.errors import ConfigValueError

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_bf16_on_cpu_trains(train_run, tmp_path: Path) -> None:
    fp32 = train_run(["trainer.device=cpu", "trainer.precision=32"], tmp_path / "fp32")
    bf16 = train_run(["trainer.device=cpu", "trainer.precision=bf16"], tmp_path / "bf16")
    assert_finite_metrics(bf16.metrics, "classification")
    # Same seed, same batches: only the arithmetic differs, and bfloat16 keeps ~3 significant digits.
    assert bf16.metrics["train/loss"] != fp32.metrics["train/loss"]
    assert bf16.metrics["train/loss"] == pytest.approx(fp32.metrics["train/loss"], rel=0.05)
    # Autocast leaves the weights in float32; only the matmuls ran in bfloat16.
    assert all(t.dtype == torch.float32 for t in bf16.checkpoint()["model"].values() if t.is_floating_point())


def test_bf16_autocast_computes_in_bfloat16() -> None:
    precision = Precision("bf16", torch.device("cpu"))
    with precision.autocast():
        out = torch.nn.Linear(4, 2)(torch.randn(3, 4))
    assert out.dtype == torch.bfloat16
    assert not precision.grad_scaler().is_enabled()  # bf16 has fp32's range: no loss scaling


def test_fp32_is_plain() -> None:
    precision = Precision(32, torch.device("cpu"))  # YAML may give the number
    assert precision.name == "32"
    with precision.autocast():
        assert torch.nn.Linear(4, 2)(torch.randn(3, 4)).dtype == torch.float32


def test_16_mixed_needs_cuda() -> None:
    with pytest.raises(ConfigValueError, match="trainer.precision=16-mixed") as info:
        Precision("16-mixed", torch.device("cpu"))
    assert "bf16" in str(info.value)  # the fix: bf16 on the CPU


def test_unknown_precision_lists_the_choices() -> None:
    with pytest.raises(ConfigValueError, match="trainer.precision") as info:
        Precision("fp8", torch.device("cpu"))
    assert all(choice in str(info.value) for choice in ("32", "bf16", "16-mixed"))


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("precision", ["32", "bf16", "16-mixed"])
def test_cuda_run(precision: str, train_run, tmp_path: Path) -> None:
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    run = train_run(["trainer.device=cuda", f"trainer.precision={precision}"], tmp_path)
    assert_finite_metrics(run.metrics, "classification")
    optim = run.checkpoint()["task"]["optim"]
    # Only 16-mixed scales the loss, and its scaler state is checkpointed.
    assert (optim["scaler"] is not None) == (precision == "16-mixed")
    if precision == "16-mixed":
        assert math.isfinite(optim["scaler"]["scale"]) and optim["scaler"]["scale"] > 0


@pytest.mark.gpu
@cuda
def test_cuda_and_cpu_agree(train_run, tmp_path: Path) -> None:
    """Same seed on CPU and GPU in fp32: the same run up to float reordering."""
    cpu = train_run(["trainer.device=cpu"], tmp_path / "cpu")
    gpu = train_run(["trainer.device=cuda"], tmp_path / "gpu")
    for key, value in cpu.metrics.items():
        assert gpu.metrics[key] == pytest.approx(value, rel=1e-3, abs=1e-4), key
