"""How faithful an attribution map is to the model it explains: do the parts it ranks first
really move the model's output the most?

Both scores see a map through the same feature groups (`nnlab.analysis.attribution.feature_mask`:
a table's columns, an image's patches, a signal's segments), its values summed within each group,
so methods of different resolutions (a pixel-wise saliency map, a patch-wise Kernel SHAP) are
ranked on the same units. A removed group is set to the baseline 0: with standardized inputs,
the training mean.

    deletion     (Samek et al., 2017; Petsiuk et al., 2018) per row, the groups are removed most
                 important first (the largest summed attribution: a signed map's strongest
                 evidence *for* the explained output) in `steps` equal fractions 0, 1/steps, ..., 1,
                 and the explained output is read after each step: the predicted (or true) class's
                 softmax probability for a classifier, output 0 itself for a regressor. The area
                 under that curve (trapezoid over the fraction removed, 0..1), averaged over rows:
                 LOWER = more faithful, since the output collapses sooner. Removing the groups in a
                 random order gives the reference every method must beat.
    infidelity   (Yeh et al., 2019; captum.metrics.infidelity) E_S[(sum_{i in S} attr_i -
                 (f(x) - f(x without S)))^2] over random subsets S of the groups, removed: a subset
                 size n uniform on 1..G, then n groups uniformly at random (Sensitivity-n for every
                 n). So it asks: does the sum of the attributions of the removed groups predict the
                 change of the explained score? With captum's `normalize=True` the attributions are
                 first rescaled by the best factor (scale-free in the map); the result is then
                 divided by E_S[(f(x) - f(x without S))^2], so it is scale-free in the model's
                 output too: the share of
                 the score's change that the best rescaled map leaves unexplained, in [0, 1]. LOWER
                 = better; 0 for exact attributions of a linear model, 1 for a map no better than
                 all zeros. It reads the score the maps explain (the logit, not the probability).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

Forward = Callable[[torch.Tensor], torch.Tensor]  # x (B, *input_shape) -> (B, outputs)


def group_sums(attr: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, G): the attributions (B, *input_shape) summed within each group of `mask` (1, *input_shape)."""
    flat = attr.detach().flatten(1).float()
    ids = mask.to(attr.device).flatten(1).expand_as(flat)
    groups = int(mask.max()) + 1
    return torch.zeros(len(flat), groups, device=flat.device).scatter_add_(1, ids, flat)


def ranking(attr: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, G): each row's group indices, the largest summed attribution first (ties by index)."""
    return group_sums(attr, mask).argsort(dim=1, descending=True, stable=True)


def deletion_curves(
    forward: Forward,
    x: torch.Tensor,
    target: torch.Tensor,
    order: torch.Tensor,
    mask: torch.Tensor,
    steps: int = 10,
    probability: bool = True,
) -> torch.Tensor:
    """(B, steps + 1): the explained output of each row of x after removing (setting to 0) the
    first `removed_counts` groups of its `order` (B, G); `probability` reads the softmax
    probability of class `target`, else the output `target` itself."""
    groups = order.shape[1]
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(groups, device=order.device).expand_as(order))  # (B, G): a group's place
    place = rank.gather(1, mask.to(order.device).flatten(1).expand(len(x), -1)).view_as(x)  # per input value
    curve = []
    with torch.no_grad():
        for removed in removed_counts(groups, steps):
            out = forward(x * (place >= removed))  # (B, outputs)
            if probability:
                out = out.softmax(1)
            curve.append(out.gather(1, target.long()[:, None]).squeeze(1))
    return torch.stack(curve, 1)


def removed_counts(groups: int, steps: int) -> list[int]:
    """The groups removed at each point of a deletion curve: ceil(j / steps * G) for j = 0..steps
    (whole numbers: with fewer groups than steps, points repeat)."""
    return [-(-j * groups // steps) for j in range(steps + 1)]


def fractions(groups: int, steps: int) -> torch.Tensor:
    """(steps + 1,): the share of the groups removed at each point of a deletion curve."""
    return torch.tensor([n / groups for n in removed_counts(groups, steps)])


def deletion_auc(curves: torch.Tensor, groups: int) -> float:
    """The area under deletion curves (B, steps + 1) over the fraction removed, mean over rows."""
    steps = curves.shape[1] - 1
    return float(torch.trapezoid(curves.cpu().float(), fractions(groups, steps)[None], dim=1).mean())


def random_orders(rows: int, groups: int, repeats: int, seed: int = 0) -> list[torch.Tensor]:
    """`repeats` random orders (rows, G) of the groups, seeded: the reference deletion."""
    generator = torch.Generator().manual_seed(seed)
    return [torch.rand(rows, groups, generator=generator).argsort(1) for _ in range(repeats)]


def random_deletion(
    forward: Forward,
    x: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    steps: int = 10,
    probability: bool = True,
    repeats: int = 8,
    seed: int = 0,
) -> torch.Tensor:
    """(B, steps + 1): deletion curves of random orders, averaged over `repeats` of them."""
    groups = int(mask.max()) + 1
    orders = random_orders(len(x), groups, repeats, seed)
    curves = [deletion_curves(forward, x, target, o.to(x.device), mask, steps, probability) for o in orders]
    return torch.stack(curves).mean(0)


def subset_removal(mask: torch.Tensor, seed: int = 0) -> Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """captum's `perturb_func` for infidelity: for each row of its (rows, *input_shape) batch,
    remove n groups (n uniform on 1..G, the groups uniformly at random), i.e. set them to 0.
    Returns (I, the perturbed rows): I is 1 on the removed values and 0 elsewhere, so I . attr is
    the sum of the removed values' attributions (the maps are "global": they already multiply by
    x - 0, so a binary I is the perturbation that matches them, as captum's docs advise)."""
    groups = int(mask.max()) + 1
    generator = torch.Generator().manual_seed(seed)

    def perturb(inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = torch.randint(1, groups + 1, (len(inputs), 1), generator=generator)
        places = torch.rand(len(inputs), groups, generator=generator).argsort(1).argsort(1)  # a random rank per group
        dropped = (places < n).to(inputs.device)  # (rows, G)
        ids = mask.to(inputs.device).flatten(1).expand(len(inputs), -1)
        removed = dropped.gather(1, ids).view_as(inputs).to(inputs.dtype)  # 1 where a value is removed
        return removed, inputs * (1 - removed)

    return perturb


def infidelity(
    forward: Forward,
    x: torch.Tensor,
    attr: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    samples: int = 64,
    seed: int = 0,
) -> float:
    """The relative infidelity (module docstring) of `attr` for the rows x, mean over rows; rows
    whose score no perturbation moves (nothing to explain) are left out, NaN when all are."""
    from captum.metrics import infidelity as captum_infidelity

    x, attr, target = x.detach(), attr.detach().to(x.dtype), target.long()
    # The same seed: the same perturbations for the score and for its reference, E[(f(x) - f(x - I))^2]
    # (the infidelity of an all-zero map, unnormalized).
    kwargs = dict(target=target, n_perturb_samples=samples)
    score = captum_infidelity(forward, subset_removal(mask, seed), x, attr, normalize=True, **kwargs)
    scale = captum_infidelity(forward, subset_removal(mask, seed), x, torch.zeros_like(x), **kwargs)
    moved = scale > 1e-12
    return float((score[moved] / scale[moved]).mean()) if moved.any() else float("nan")


def deletion_figure(curves: dict[str, torch.Tensor], groups: int, ylabel: str) -> Any:
    """Every method's mean deletion curve (and the random order's, dashed) against the fraction of
    the feature groups removed, the area under each in the legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for name, c in curves.items():
        steps = c.shape[1] - 1
        style = dict(color="black", linestyle="--") if name == "random" else dict(marker="o", markersize=3)
        label = f"{name} (AUC {deletion_auc(c, groups):.3g})"
        ax.plot(fractions(groups, steps).numpy(), c.float().mean(0).cpu().numpy(), label=label, **style)
    ax.set(xlabel=f"fraction of the {groups} feature groups removed (most important first)", ylabel=ylabel)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
