"""nnlab's Kernel SHAP (captum's KernelShap, as `nnlab-explain` runs it) against the reference
`shap` library's KernelExplainer, on the same model, rows, class and background.

    python -m benchmarks.shap_agreement [--rows 5] [--n-samples 4096] [--shap-samples 16384] [--json out.json]

(from the root of a checkout). Two tabular classifiers, each an MLP (one hidden layer of 32 ReLUs)
trained here with 300 full-batch Adam steps (seed 0) on the standardized training split that
`nnlab-train data=<name>` builds: breast_cancer (30 features, 2 classes) and wine (13 features, 3
classes). For the first --rows test rows, both explain the score (logit) of the predicted class,
with two backgrounds:

    zero        the single all-zero row (the training mean: the inputs are standardized)
    train_8     8 training rows drawn with seed 0; nnlab averages the SHAP values of each single
                reference row, shap takes the set (its value function is the mean over the rows,
                and Shapley values are linear in it, so the two are the same quantity)

Both are estimates: nnlab regresses on --n-samples sampled coalitions per row and reference
row; shap on --shap-samples (it enumerates every coalition when 2^M - 2 fit, i.e. exactly for
M <= 13 with the default, so on wine shap is exact and on breast_cancer (2^30) it samples).
shap runs with l1_reg=False, Kernel SHAP's plain weighted regression: its default ("auto")
first selects features with a penalized fit when it samples under 20% of the coalitions, which
zeroes some values and makes them jump with the sample count: a different estimate.
Printed per model and background: the largest and mean |nnlab - shap| over rows x features, the
largest relative to the range of shap's values, and Pearson's r over all values.

shap is in the `dev` extra (never imported by nnlab itself); without it this prints a note and
exits 0. tests/analysis/test_shap_agreement.py runs `agreement` on a small fixed model.
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra import compose, initialize_config_module

from nnlab.analysis.attribution import attribute
from nnlab.models.mlp import MLP
from nnlab.runs.build import build_data

DATASETS = ("breast_cancer", "wine")


def tabular_model(name: str, steps: int = 300, seed: int = 0) -> tuple[torch.nn.Module, np.ndarray, np.ndarray]:
    """An MLP trained on `data=<name>` (standardized as nnlab-train does), with the test and
    training rows (float32 arrays) it is explained on and against."""
    with initialize_config_module("nnlab.configs", version_base="1.3"):
        cfg = compose("train", overrides=[f"data={name}", f"seed={seed}"])
    data = build_data(cfg, augment=False)
    data.setup(torch.device("cpu"))
    x_train, y_train = data.arrays("train")
    torch.manual_seed(seed)
    model = MLP(data.input_shape, data.num_outputs, hidden_sizes=[32])
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    x, y = torch.as_tensor(x_train), torch.as_tensor(y_train).long()
    for _ in range(steps):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    return model.eval(), data.arrays("test")[0], x_train


def shap_values(
    model: torch.nn.Module, x: np.ndarray, target: np.ndarray, background: np.ndarray, samples: int
) -> np.ndarray:
    """shap.KernelExplainer's values (rows, features) of the score of class target[i] for row i
    (plain Kernel SHAP: no l1 feature selection)."""
    import shap

    rows = []
    for row, c in zip(x, target):

        def score(z: np.ndarray, c: int = int(c)) -> np.ndarray:
            with torch.no_grad():
                return model(torch.as_tensor(z, dtype=torch.float32))[:, c].numpy()

        explainer = shap.KernelExplainer(score, background)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rows.append(explainer.shap_values(row[None], nsamples=samples, l1_reg=False, silent=True)[0])
    return np.array(rows)


def agreement(
    model: torch.nn.Module,
    x: np.ndarray,
    background: np.ndarray | None,
    n_samples: int = 4096,
    shap_samples: int = 16384,
    method: str = "kernel_shap",
) -> dict[str, float]:
    """nnlab's kernel_shap (or another `method`, as a control) against shap's KernelExplainer on
    rows x, for the predicted class, with `background` rows (None: the single zero row): max/mean
    |difference|, the max relative to the range of shap's values, and Pearson's r over all values."""
    xt = torch.as_tensor(x, dtype=torch.float32)
    with torch.no_grad():
        target = model(xt).argmax(1)
    ref = None if background is None else torch.as_tensor(background, dtype=torch.float32)
    ours = attribute(model, method, xt, target, n_samples=n_samples, background=ref)[0].numpy()
    theirs = shap_values(
        model, x, target.numpy(), np.zeros((1, x.shape[1])) if ref is None else background, shap_samples
    )
    diff = np.abs(ours - theirs)
    return {
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
        "max_diff_over_range": float(diff.max() / np.ptp(theirs)),
        "pearson_r": float(np.corrcoef(ours.ravel(), theirs.ravel())[0, 1]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5, help="test rows explained per model")
    parser.add_argument("--n-samples", type=int, default=4096, help="nnlab: coalitions per row and reference row")
    parser.add_argument("--shap-samples", type=int, default=16384, help="shap: nsamples (exact when >= 2^M - 2)")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    try:
        import shap
    except ImportError:
        print('shap is not installed (pip install "nnlab[dev]"): nothing to compare.')
        return
    torch.set_num_threads(1)
    results: list[dict[str, Any]] = []
    print(f"shap {shap.__version__}; nnlab n_samples={args.n_samples}, shap nsamples={args.shap_samples}")
    print("| model | features | background | max abs diff | mean abs diff | max diff / range | Pearson r |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for name in DATASETS:
        model, x_test, x_train = tabular_model(name)
        draw = np.random.default_rng(0).choice(len(x_train), size=8, replace=False)
        for label, background in (("zero", None), ("train_8", x_train[np.sort(draw)])):
            row = {"model": name, "features": x_test.shape[1], "background": label}
            row |= agreement(model, x_test[: args.rows], background, args.n_samples, args.shap_samples)
            results.append(row)
            print(
                f"| {name} | {row['features']} | {label} | {row['max_abs_diff']:.4f} | {row['mean_abs_diff']:.4f} "
                f"| {row['max_diff_over_range']:.4f} | {row['pearson_r']:.6f} |",
                flush=True,
            )
    if args.json:
        args.json.write_text(json.dumps({"settings": vars(args) | {"json": str(args.json)}, "rows": results}, indent=2))


if __name__ == "__main__":
    main()
