"""The adding problem (Hochreiter & Schmidhuber, 1997): add the two marked numbers of a sequence.

Each sequence has `seq_len` steps of two inputs: a random number in [0, 1], and a marker that is
1 at exactly two steps (one in each half of the sequence) and 0 elsewhere. The target is the sum
of the two marked numbers. A recurrent model reading in order must notice the first marked number,
keep it unchanged through about seq_len / 2 steps of distracting numbers, and add the second; the
gradient that teaches it to keep the first crosses those steps, so the task measures how far back
a model can carry information (vanilla RNNs fail from ~T = 50 to 100; LSTMs and GRUs succeed at
hundreds of steps, given enough training).

The baseline to beat: the sum of two independent U(0, 1) numbers has mean 1 and variance
2 x 1/12 = 1/6, so always answering 1.0 scores MSE ~ 0.167. A model below that has learnt to use
the markers; solving it means an MSE near 0 (e.g. < 0.01).
"""

from __future__ import annotations

import numpy as np

from nnlab.data.arrays import ArrayDataset
from nnlab.errors import check_range

CONSTANT_MSE = 1.0 / 6.0  # MSE of always predicting the mean, 1.0: Var(U1 + U2) = 2/12


def adding_problem(n_samples: int = 5000, seq_len: int = 50, seed: int = 0) -> ArrayDataset:
    """x float32 (N, 2, seq_len): channel 0 the numbers, channel 1 the two markers; y (N,) their sum.

    The first marker is at a uniform step of the first half [0, seq_len // 2), the second at a
    uniform step of the second half. Regression; compare test/mse (in raw units: set
    data.standardize_target=false) with `CONSTANT_MSE` = 1/6.

    n_samples: sequences in all (before the train/val/test split).
    seq_len: steps per sequence (>= 2); the marked numbers are ~seq_len / 2 steps apart on average.
    seed: the generator's seed.
    """
    check_range("data.dataset.n_samples", n_samples, 3)
    check_range("data.dataset.seq_len", seq_len, 2)
    rng = np.random.default_rng(seed)
    half = seq_len // 2
    values = rng.uniform(0.0, 1.0, (n_samples, seq_len))
    first = rng.integers(0, half, n_samples)
    second = rng.integers(half, seq_len, n_samples)
    rows = np.arange(n_samples)
    markers = np.zeros((n_samples, seq_len))
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    x = np.stack([values, markers], axis=1).astype(np.float32)  # (N, 2, T)
    y = x[rows, 0, first] + x[rows, 0, second]  # from the float32 values, so y is exactly their sum
    return ArrayDataset(x, y, "regression", source="adding_problem")
