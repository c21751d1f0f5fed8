"""Synthetic sequences: forecasting (predict the next values of a series from its recent past) and
a memory task (recall the one marked token of a `length`-step sequence)."""

from __future__ import annotations

import logging

import numpy as np

from nnlab.data.arrays import ArrayDataset
from nnlab.errors import ConfigValueError, check_range

log = logging.getLogger(__name__)


def sine(
    n_series: int = 5000,
    window: int = 32,
    horizon: int = 8,
    n_components: int = 3,
    noise: float = 0.1,
    min_period: float = 8.0,
    max_period: float = 64.0,
    seed: int = 0,
) -> ArrayDataset:
    """Sums of sines plus noise: forecast the next `horizon` values from the last `window`.

    Each row is its own series of window + horizon steps,

        s_t = sum_k A_k sin(2 pi t / P_k + phi_k) + e_t,    t = 0 .. window + horizon - 1,

    with `n_components` sines of amplitude A_k ~ U(0.5, 1.5), period P_k log-uniform in
    [min_period, max_period] steps and phase phi_k ~ U(0, 2 pi), and Gaussian noise e_t of std
    `noise` on every observed value (targets included, so noise^2 is the lowest reachable MSE).
    x = s[:window] as (N, 1, window); y = s[window:] as (N, horizon), in raw units.

    Why one series per row: cutting many overlapping windows out of a few long series and splitting
    the windows at random (which is what the DataModule does) would put a test window's neighbours,
    which share all but one of its values and its frequencies, in the training split; the test score
    would then measure memory, not forecasting. Independent series make every row a fresh series,
    so any split is a clean one. (A variant with many windows per long series would need the
    DataModule to split by series, for validation as well as test; it cannot yet.)

    A model must infer each row's frequencies and phases from its window, so the task rewards
    models that extrapolate. `naive_last_value_mse` gives the baseline to beat: repeating the last
    observed value. Shorter periods (lower `min_period`) and more components make it harder.
    """
    check_range("data.dataset.n_series", n_series, 2)
    check_range("data.dataset.window", window, 1)
    check_range("data.dataset.horizon", horizon, 1)
    check_range("data.dataset.n_components", n_components, 1)
    check_range("data.dataset.noise", noise, 0.0)
    check_range("data.dataset.min_period", min_period, 2.0)  # 2 steps: the Nyquist limit
    if max_period < min_period:
        raise ConfigValueError(
            f"data.dataset.max_period={max_period} is below data.dataset.min_period={min_period}: "
            "set max_period >= min_period."
        )
    rng = np.random.default_rng(seed)
    shape = (n_series, n_components, 1)  # one (A, P, phi) per series and component
    amplitude = rng.uniform(0.5, 1.5, shape)
    period = np.exp(rng.uniform(np.log(min_period), np.log(max_period), shape))
    phase = rng.uniform(0.0, 2 * np.pi, shape)
    t = np.arange(window + horizon)
    series = (amplitude * np.sin(2 * np.pi * t / period + phase)).sum(axis=1)  # (N, window + horizon)
    series += rng.normal(0.0, noise, series.shape)
    data = ArrayDataset(series[:, None, :window], series[:, window:], "regression")
    log.info("sine: naive last-value forecast MSE %.4f (raw units, all rows)", naive_last_value_mse(data))
    return data


def marked_token(n_samples: int = 2000, length: int = 50, num_classes: int = 4, seed: int = 0) -> ArrayDataset:
    """Recall the marked token: `length` random tokens, one of them marked; the label is the marked
    token. A test of long-range memory, with `length` as its knob.

    Each step carries one of `num_classes` tokens, one-hot, plus a marker channel that is 1 at a
    single step p (uniform over the sequence) and 0 elsewhere. A many-to-one recurrent network
    that reads in order and answers from its final state (model.readout=last) must store the token
    when it sees the marker and keep it through the T - 1 - p tokens that follow, which look
    exactly like it (Hochreiter & Schmidhuber's 1997 tasks are of this kind).

    A vanilla RNN adds every step's input into the same state, h_t = tanh(W x_t + U h_{t-1}), so
    the later tokens overwrite the stored one, and the gradient that could teach it to protect
    the token shrinks by a factor at every step (vanishing gradients, Bengio et al., 1994). An
    LSTM or GRU multiplies its state by learned gates: it can write on the marker and hold
    otherwise (an input gate near 0, a forget gate near 1), and its additive state update
    passes the gradient back over many steps. Chance is 1 / num_classes.

    x: (N, num_classes + 1, length), i.e. `length` steps of num_classes + 1 features (the last
    one is the marker); y: (N,) the marked token.
    """
    check_range("data.dataset.n_samples", n_samples, num_classes)
    check_range("data.dataset.length", length, 1)
    check_range("data.dataset.num_classes", num_classes, 2)
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, num_classes, (n_samples, length))
    marked = rng.integers(0, length, n_samples)  # the position p of each row's marker
    rows = np.arange(n_samples)
    tokens[rows, marked] = rows % num_classes  # balanced classes
    x = np.zeros((n_samples, num_classes + 1, length), dtype=np.float32)
    x[rows[:, None], tokens, np.arange(length)] = 1.0  # one-hot token channels
    x[rows, num_classes, marked] = 1.0  # the marker channel
    return ArrayDataset(x, tokens[rows, marked], "classification")


def naive_last_value_mse(data: ArrayDataset, rows: np.ndarray | None = None) -> float:
    """MSE of the naive forecast that repeats the last observed value for every future step.

    The baseline any forecaster must beat. It is in the target's raw units: compare it with a run's
    test/mse when `data.standardize_target` is false (sine.yaml's default), and pass the test rows
    (e.g. from `nnlab.data.split.split_indices` with the run's seed) to compare on the same rows.
    x: (N, C, window), channel 0 is the forecast series; y: (N,) or (N, horizon).
    """
    x, y = (data.x, data.y) if rows is None else (data.x[rows], data.y[rows])
    last = x[:, 0, -1]
    y = y.reshape(len(y), -1)
    return float(np.mean((y - last[:, None]) ** 2))
