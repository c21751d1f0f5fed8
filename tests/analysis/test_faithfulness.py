"""nnlab.analysis.faithfulness: deletion curves and infidelity on models whose answer is known."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nnlab.analysis import attribution as A
from nnlab.analysis import faithfulness as F
from nnlab.errors import UserError

pytest.importorskip("captum")


def only_feature_2() -> nn.Linear:
    """5 features, 2 classes: class 0's score is 2 * x2, class 1's is -2 * x2; nothing else matters."""
    model = nn.Linear(5, 2)
    with torch.no_grad():
        model.weight.zero_()
        model.bias.zero_()
        model.weight[0, 2], model.weight[1, 2] = 2.0, -2.0
    return model.eval()


def rows(n: int = 6) -> torch.Tensor:
    """Rows whose feature 2 is 1.5 (class 0 predicted with p = sigmoid(6)), the rest noise."""
    x = torch.randn(n, 5, generator=torch.Generator().manual_seed(0))
    x[:, 2] = 1.5
    return x


def test_feature_groups_tile_the_input() -> None:
    digits = A.feature_mask((1, 8, 8))
    assert digits.shape == (1, 1, 8, 8) and int(digits.max()) == 15  # 2x2 patches: 16 groups
    assert digits[0, 0, :2, :2].unique().tolist() == [0] and digits[0, 0, 6:, 6:].unique().tolist() == [15]
    signal = A.feature_mask((2, 40))  # eighths, each across both channels
    assert int(signal.max()) == 7 and torch.equal(signal[0, 0], signal[0, 1]) and signal[0, 0, 5].item() == 1
    assert A.feature_mask((4,)).tolist() == [[0, 1, 2, 3]]  # a table: one group per column
    cut = A.feature_mask((1, 5, 5), (1, 2, 2))  # the last windows cut at the edges: 3 x 3 groups
    assert int(cut.max()) == 8 and cut[0, 0, 4].tolist() == [6, 6, 7, 7, 8]
    with pytest.raises(UserError, match=r"explain.feature_window=\[2, 2\] does not fit the input \(1, 8, 8\)"):
        A.feature_mask((1, 8, 8), (2, 2))


def test_group_sums_and_ranking() -> None:
    attr = torch.tensor([[[1.0, 2.0, -5.0, 0.5]]])  # (1, 1, 4)
    mask = torch.tensor([[[0, 0, 1, 2]]])
    assert F.group_sums(attr, mask).tolist() == [[3.0, -5.0, 0.5]]
    assert F.ranking(attr, mask).tolist() == [[0, 2, 1]]  # signed: the strongest evidence *against* goes last


def test_the_true_feature_first_beats_random_and_last_loses() -> None:
    model, x = only_feature_2(), rows()
    target, mask = torch.zeros(len(x), dtype=torch.long), A.feature_mask((5,))
    forward = A.scores(model)
    oracle = torch.zeros_like(x)
    oracle[:, 2] = 1.0  # knows the answer
    backwards = 1.0 - oracle  # feature 2 last
    first = F.deletion_curves(forward, x, target, F.ranking(oracle, mask), mask, steps=5)
    assert first[:, 0] == pytest.approx(torch.sigmoid(torch.tensor(6.0)).item())  # nothing removed yet
    assert torch.allclose(first[:, 1:], torch.full_like(first[:, 1:], 0.5))  # x2 gone: both scores 0
    last = F.deletion_curves(forward, x, target, F.ranking(backwards, mask), mask, steps=5)
    random = F.random_deletion(forward, x, target, mask, steps=5, repeats=16)
    auc_first, auc_last, auc_random = (F.deletion_auc(c, 5) for c in (first, last, random))
    assert auc_first == pytest.approx(0.5 + (first[0, 0].item() - 0.5) * 0.1)  # the trapezoid of [p, .5, .5, ...]
    assert auc_first < auc_random < auc_last
    # Every method that sees the model finds it; saliency also, since only x2 has a gradient.
    for method in ("integrated_gradients", "occlusion", "kernel_shap", "lime", "saliency"):
        attr, _ = A.attribute(model, method, x, target, n_samples=64)
        curve = F.deletion_curves(forward, x, target, F.ranking(attr, mask), mask, steps=5)
        assert F.deletion_auc(curve, 5) == pytest.approx(auc_first, abs=1e-6), method


def test_a_regressor_reads_its_output_itself() -> None:
    model, x = only_feature_2(), rows(3)
    target, mask = torch.zeros(3, dtype=torch.long), A.feature_mask((5,))
    oracle = torch.zeros_like(x)
    oracle[:, 2] = 1.0
    curve = F.deletion_curves(A.scores(model), x, target, F.ranking(oracle, mask), mask, steps=5, probability=False)
    assert curve[:, 0].tolist() == pytest.approx([3.0] * 3) and curve[:, 1:].abs().max() == 0


def test_fewer_groups_than_steps_repeat_points_of_the_curve() -> None:
    assert F.fractions(4, 8).tolist() == [0, 0.25, 0.25, 0.5, 0.5, 0.75, 0.75, 1.0, 1.0]
    curves = torch.tensor([[1.0, 0.5, 0.0]])
    assert F.deletion_auc(curves, 2) == pytest.approx(0.5)


def test_infidelity_is_zero_for_exact_linear_attributions() -> None:
    """For a linear score w.x + b and the baseline 0, w * x is exact: removing any subset S moves
    the score by the sum of its attributions, so infidelity is 0; a map on the wrong feature
    explains nothing (1), and a rescaled exact map is as good (captum's normalize=True)."""
    torch.manual_seed(0)
    model = nn.Linear(6, 3).eval()
    x = torch.randn(5, 6)
    target = torch.tensor([0, 1, 2, 0, 1])
    mask, forward = A.feature_mask((6,)), A.scores(model)
    exact = model.weight[target].detach() * x
    assert F.infidelity(forward, x, exact, target, mask) == pytest.approx(0.0, abs=1e-6)
    assert F.infidelity(forward, x, 7.0 * exact, target, mask) == pytest.approx(0.0, abs=1e-6)
    ig, _ = A.attribute(model, "integrated_gradients", x, target)  # exact too, for a linear model
    assert F.infidelity(forward, x, ig, target, mask) == pytest.approx(0.0, abs=1e-6)
    assert F.infidelity(forward, x, torch.zeros_like(x), target, mask) == pytest.approx(1.0)
    saliency, _ = A.attribute(model, "saliency", x, target)  # |w|: ignores x, so it misses
    assert F.infidelity(forward, x, saliency, target, mask) > 0.1


def test_the_same_seed_draws_the_same_subsets() -> None:
    mask = A.feature_mask((1, 4, 4), (1, 2, 2))
    x = torch.randn(6, 1, 4, 4)
    (removed_a, perturbed_a), (removed_b, _) = F.subset_removal(mask, 3)(x), F.subset_removal(mask, 3)(x)
    assert torch.equal(removed_a, removed_b) and torch.equal(perturbed_a, x * (1 - removed_a))
    per_group = F.group_sums(removed_a, mask)  # a removed group is removed whole: all its 4 values
    assert set(per_group.unique().tolist()) <= {0.0, 4.0} and (per_group.sum(1) > 0).all()  # at least one group


def test_deletion_figure_draws_every_curve() -> None:
    curves = {"random": torch.rand(3, 6), "saliency": torch.rand(3, 6)}
    import matplotlib.pyplot as plt

    fig = F.deletion_figure(curves, 5, "probability")
    try:
        assert [line.get_label().split(" ")[0] for line in fig.axes[0].lines] == ["random", "saliency"]
    finally:
        plt.close(fig)  # (the Report closes the figures it saves; a test that keeps one must close it)
