"""MNIST-1D (Greydanus & Kobak, 2020): ten 1-D digit templates turned into 40-sample signals.

Each signal is one of ten hand-made templates, padded, stretched, shifted, sheared and noised at
random, then resampled to 40 points. It trains on a CPU in seconds, yet it separates models that
all score 99% on MNIST: logistic regression 32%, MLP 68%, CNN 94%, GRU 91% test accuracy (the
project's README), which makes it a good probe of spatial inductive biases.

The `mnist1d` package generates it offline; the result is cached as a plain .npz under
`<root>/mnist1d/` (never a pickle), so later runs load it in milliseconds without importing the
package (which pulls in matplotlib and scipy: about a second).
"""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path

import numpy as np

from nnlab.data.arrays import ArrayDataset
from nnlab.errors import UserError, check_range

log = logging.getLogger(__name__)

SIGNAL_LENGTH = 40  # the package's final_seq_length


def mnist1d(root: str = "data", num_samples: int = 5000, train_split: float = 0.8, seed: int = 42) -> ArrayDataset:
    """The MNIST-1D benchmark: x (num_samples, 1, 40) float32, 10 classes, its own test split.

    The defaults are the package's own (`mnist1d.data.get_dataset_args`): 5000 signals with seed
    42, the first 80% (4000) for training and the last 1000 as the official test split, marked by
    `test_mask`. The signals are already centred and scaled to unit variance over the whole set.

    root: the data folder; the cache is `<root>/mnist1d/mnist1d_n<N>_split<S>_seed<seed>.npz`.
        Delete it to regenerate.
    num_samples: signals in all, split evenly over the 10 digits (rounded down to a multiple of 10).
    train_split: fraction of the signals before the test split, in (0, 1).
    seed: the generator's seed. 42 is the benchmark; another seed gives another draw of the same
        distribution.
    """
    check_range("data.dataset.num_samples", num_samples, 20)
    check_range("data.dataset.train_split", train_split, 0.0, 1.0, low_inclusive=False, high_inclusive=False)
    check_range("data.dataset.seed", seed, 0, 2**32 - 1)
    path = Path(root) / "mnist1d" / f"mnist1d_n{num_samples}_split{train_split:g}_seed{seed}.npz"
    arrays = _load_cache(path)
    if arrays is None:
        arrays = _generate(num_samples, train_split, seed)
        _save_cache(path, arrays)
    x = np.concatenate([arrays["x"], arrays["x_test"]])[:, None, :]  # (N, 1, 40)
    y = np.concatenate([arrays["y"], arrays["y_test"]])
    test_mask = np.arange(len(y)) >= len(arrays["y"])
    return ArrayDataset(x, y, "classification", [str(d) for d in range(10)], test_mask=test_mask)


def _generate(num_samples: int, train_split: float, seed: int) -> dict[str, np.ndarray]:
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples, args.train_split, args.seed = num_samples, train_split, seed
    log.info("Generating MNIST-1D: %d signals, seed %d (once; later runs load the cache)", num_samples, seed)
    # make_dataset reseeds Python's and NumPy's global generators (mnist1d.utils.set_seed); put them
    # back so a run draws the same numbers after this whether the data came from the cache or not.
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        data = make_dataset(args)
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    return {k: np.asarray(data[k]) for k in ("x", "y", "x_test", "y_test")}


def _load_cache(path: Path) -> dict[str, np.ndarray] | None:
    """The cached arrays, or None when there is no cache or it is unreadable (then regenerated)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in ("x", "y", "x_test", "y_test")}
    except (OSError, ValueError, KeyError) as e:  # truncated or foreign file
        log.warning("Ignoring the unreadable MNIST-1D cache %s (%s); regenerating it", path, e)
        return None
    if arrays["x"].shape[1:] != (SIGNAL_LENGTH,) or len(arrays["x"]) != len(arrays["y"]):
        log.warning("Ignoring the MNIST-1D cache %s: unexpected shapes; regenerating it", path)
        return None
    log.info("Loaded MNIST-1D from %s", path)
    return arrays


def _save_cache(path: Path, arrays: dict[str, np.ndarray]) -> None:
    # Written under a temporary name and renamed, so an interrupted run never leaves half a cache.
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise UserError(
            f"Cannot write the MNIST-1D cache {path.resolve()}: {e.strerror or e}. Point data.dataset.root "
            "(by default paths.data_dir, which follows NNLAB_ROOT) at a folder you can write to."
        ) from None
    log.info("Cached MNIST-1D in %s", path)
