"""nnlab.data.adding: the adding problem's sequences, markers and targets."""

from __future__ import annotations

import numpy as np
import pytest

from nnlab.data.adding import CONSTANT_MSE, adding_problem
from nnlab.errors import ConfigValueError


def test_two_markers_one_per_half_and_the_target_is_their_sum() -> None:
    ds = adding_problem(n_samples=500, seq_len=20, seed=1)
    assert ds.kind == "regression" and ds.x.shape == (500, 2, 20) and ds.x.dtype == np.float32
    values, markers = ds.x[:, 0], ds.x[:, 1]
    assert ((values >= 0) & (values <= 1)).all()
    assert set(np.unique(markers)) == {0.0, 1.0}
    assert (markers[:, :10].sum(1) == 1).all() and (markers[:, 10:].sum(1) == 1).all()
    np.testing.assert_allclose(ds.y, (values * markers).sum(1), rtol=1e-6)
    # Every step of each half gets the marker sometimes: the distance varies.
    assert (markers.sum(0) > 0).all()


def test_predicting_one_scores_the_documented_baseline() -> None:
    ds = adding_problem(n_samples=20_000, seed=0)
    assert float(np.mean((ds.y - 1.0) ** 2)) == pytest.approx(CONSTANT_MSE, rel=0.03)


def test_seeded_and_checked() -> None:
    a, b, c = adding_problem(100, seed=3), adding_problem(100, seed=3), adding_problem(100, seed=4)
    assert (a.x == b.x).all() and (a.y == b.y).all() and not (a.x == c.x).all()
    with pytest.raises(ConfigValueError, match="data.dataset.seq_len=1"):
        adding_problem(seq_len=1)
