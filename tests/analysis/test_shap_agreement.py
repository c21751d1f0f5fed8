"""nnlab's kernel_shap (captum's KernelShap) against the reference `shap` library, which nnlab itself
never imports: the same model, rows, class and background give the same SHAP values.

benchmarks/shap_agreement.py prints the same comparison on trained breast_cancer and wine models.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from torch import nn

from nnlab.analysis import attribution as A

pytest.importorskip("captum")
pytest.importorskip("shap")

from benchmarks.shap_agreement import agreement  # noqa: E402  (imports shap's users only after the skip)

FEATURES = 8  # shap enumerates all 2^8 - 2 coalitions with nsamples=256: its values are exact
SRC = Path(__file__).resolve().parents[2] / "src" / "nnlab"


def interacting_model() -> nn.Module:
    """A fixed ReLU network with large weights: its score is far from additive in the features,
    so the Shapley values differ from simpler attributions such as occlusion's."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(FEATURES, 32), nn.ReLU(), nn.Linear(32, 3))
    with torch.no_grad():
        model[0].weight.mul_(3)
        model[2].weight.mul_(3)
    return model.eval()


@pytest.mark.parametrize("background_rows", [0, 4])
def test_kernel_shap_agrees_with_the_shap_library(background_rows: int) -> None:
    """Tolerance: the largest difference within 4% of the range of the values and r > 0.998
    (measured: 1.6% and 0.9996 with the zero row, 1.1% and 0.9999 with 4 rows, at 1024 samples)."""
    model = interacting_model()
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(4, FEATURES, generator=generator).numpy()
    background = torch.randn(background_rows, FEATURES, generator=generator).numpy() if background_rows else None
    found = agreement(model, x, background, n_samples=1024, shap_samples=2**FEATURES)
    assert found["max_diff_over_range"] < 0.04, found
    assert found["pearson_r"] > 0.998, found
    if background is None:  # the tolerance separates methods: occlusion (one feature at a time) fails it
        control = agreement(model, x, None, shap_samples=2**FEATURES, method="occlusion")
        assert control["max_diff_over_range"] > 0.1 and control["pearson_r"] < 0.99, control


def test_a_background_set_averages_the_values_of_its_rows() -> None:
    """SHAP values are linear in the value function, so those with a set of references are the mean of
    those with each one; nnlab computes them that way (row k's coalitions seeded with seed + k)."""
    model = interacting_model()
    x = torch.randn(3, FEATURES)
    target = torch.tensor([0, 1, 2])
    refs = torch.randn(2, FEATURES)
    both, _ = A.attribute(model, "kernel_shap", x, target, n_samples=128, background=refs, seed=5)
    each = [A.attribute(model, "kernel_shap", x, target, n_samples=128, background=refs[k : k + 1], seed=5 + k)[0]
            for k in range(2)]  # fmt: skip
    assert torch.allclose(both, (each[0] + each[1]) / 2, atol=1e-6)
    # Efficiency: the values add up to the score minus its mean over the references.
    with torch.no_grad():
        gap = model(x).gather(1, target[:, None]).squeeze(1) - model(refs)[:, target].mean(0)
    assert torch.allclose(both.sum(1), gap, atol=1e-3)


def test_nnlab_never_imports_shap() -> None:
    """shap is a test and benchmark reference only (the `dev` extra), never a dependency of the package."""
    found = [p for p in SRC.rglob("*.py") if re.search(r"^\s*(import shap|from shap\b)", p.read_text(), re.M)]
    assert found == []
