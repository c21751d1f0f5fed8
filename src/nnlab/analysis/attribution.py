"""Which parts of an input a trained classifier's score depends on: attribution maps with captum.

Each method answers "how much did each input value contribute to the score of class c?" for a
batch x of shape (B, *input_shape), and returns a map of that same shape:

    saliency              |d score_c / d x| (Simonyan et al., 2014): where a small change moves the
                          score most. Cheap (one backward pass) and noisy.
    integrated_gradients  (x - x0) * the mean gradient on the straight path from a baseline x0 to x
                          (Sundararajan et al., 2017), with `n_steps` points of a Gauss-Legendre rule.
                          Signed, and complete: the attributions sum to score(x) - score(x0), so
                          captum's "convergence delta" (the gap) measures how well n_steps did.
                          The baseline is zeros *in the model's input space*: with standardized
                          data that is the training mean of every feature, i.e. "an average input".
    gradcam               Grad-CAM (Selvaraju et al., 2017), CNNs only: the last conv layer's maps,
                          weighted by the mean gradient of the score per channel, summed and ReLU'd,
                          then upsampled to the input's size. Coarse (the layer's resolution), but
                          class-discriminative.
    occlusion             score(x) - score(x with a window set to the baseline) (Zeiler & Fergus,
                          2014), slid over the input: a direct, model-agnostic "what if this part
                          were missing". One forward pass per window position.
    kernel_shap           Kernel SHAP (Lundberg & Lee, 2017): the Shapley values of the features
                          (the groups of `feature_mask`: a table's columns, an image's patches),
                          estimated by a weighted linear regression on `n_samples` random
                          coalitions, each a forward pass with the absent features set to the
                          reference. With a background set B of reference rows the value of a
                          coalition S is the mean over b in B of score(x_S, b_rest); Shapley values
                          are linear in that value function, so the SHAP values with B are the mean
                          over b of the SHAP values with the single reference b, which is how they
                          are computed here. Signed; they sum to score(x) - mean_b score(b).
    gradient_shap         Gradient SHAP (Lundberg & Lee, 2017; "expected gradients"): the gradient
                          at a random point on the path from a random background row b to x, times
                          (x - b), averaged over `n_steps` draws: integrated gradients with the
                          baseline averaged over a distribution of training rows.
    lime                  LIME (Ribeiro et al., 2016): a linear model fitted to the scores of
                          `n_samples` random on/off patterns of the same feature groups (each on
                          with probability 1/2, absent = 0), weighted by captum's default kernel,
                          exp(-d^2 / 2) of the cosine distance d to x; its coefficients are the
                          attributions. The surrogate is ridge regression (alpha 1), as in the
                          reference `lime` package, not captum's default Lasso (alpha 0.01), which
                          zeroes every coefficient of a model whose score barely moves (as a barely
                          trained or randomly initialised one's), leaving no map to compare.

The perturbation methods (kernel_shap, lime) give each feature group one value, spread evenly
over the group's input values (so a map sums to the groups' total, as integrated gradients'
does, and a table's column holds its own value). The sampling methods (kernel_shap,
gradient_shap, lime) draw from generators seeded by `seed` inside the call (`seeded`), so the
same call gives the same map, and the sanity check's random model sees the same samples.

`model_randomization` is the sanity check of Adebayo et al. (2018): a method whose maps barely
change when the trained weights are replaced by random ones shows the input (edges, bright
pixels), not what the model learned.

captum is an optional dependency (`pip install "nnlab[explain]"`), imported inside functions.
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from nnlab.errors import UserError, check_choice, did_you_mean

log = logging.getLogger(__name__)

METHODS = ("saliency", "integrated_gradients", "gradcam", "occlusion", "kernel_shap", "gradient_shap", "lime")
PERTURBATION = ("kernel_shap", "lime")  # fit a surrogate on n_samples forward passes of on/off feature groups
TARGETS = ("predicted", "true")


def require_captum() -> None:
    """Raise a UserError with the install command when captum is missing."""
    try:
        import captum  # noqa: F401
    except ImportError as e:
        raise UserError(
            'nnlab-explain needs captum, which is not installed. Install it with: pip install "nnlab[explain]"'
        ) from e


def check_methods(methods: Sequence[str]) -> list[str]:
    """The method names, checked: an unknown one names `explain.methods` and the valid choices."""
    methods = [str(m) for m in methods]
    if not methods:
        raise UserError(f"explain.methods is empty. Name one or more of: {', '.join(METHODS)}.")
    for m in methods:
        if m not in METHODS:
            raise UserError(
                f"explain.methods: unknown method '{m}'.{did_you_mean(m, METHODS)} Choose from: {', '.join(METHODS)}."
            )
    return methods


def scores(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """model as a function x -> (B, outputs), so a regression model's (B,) output is indexed alike."""

    def forward(x: torch.Tensor) -> torch.Tensor:
        out = model(x)
        return out.unsqueeze(1) if out.ndim == 1 else out  # (B,) -> (B, 1)

    return forward


def last_conv_layer(model: nn.Module, name: str | None = None) -> tuple[str, nn.Module] | None:
    """The layer Grad-CAM reads: the module called `name`, or else the model's last Conv1d/Conv2d
    (its maps are the most semantic that still have a spatial layout); None when there is none."""
    modules = dict(model.named_modules())
    if name is not None:
        if name not in modules or name == "":
            names = [n for n in modules if n]
            raise UserError(
                f"explain.layer='{name}' is not a module of {type(model).__name__}.{did_you_mean(name, names)} "
                f"Conv layers: {', '.join(n for n, m in modules.items() if isinstance(m, nn.modules.conv._ConvNd))}."
            )
        return name, modules[name]
    convs = [(n, m) for n, m in modules.items() if isinstance(m, (nn.Conv1d, nn.Conv2d))]
    return convs[-1] if convs else None


def default_occlusion_window(input_shape: Sequence[int]) -> tuple[int, ...]:
    """A window of all channels and about a quarter of each spatial side (2x2 on 8x8 digits, 7x7
    on 28x28 MNIST, 10 steps of a 40-long signal); one feature at a time for tabular inputs."""
    if len(input_shape) == 1:
        return (1,)
    return (input_shape[0], *(max(1, round(s / 4)) for s in input_shape[1:]))


def default_feature_window(input_shape: Sequence[int]) -> tuple[int, ...]:
    """The patch that is one feature of Kernel SHAP, LIME and the faithfulness scores: a column of
    a table; for an image, the occlusion window (all channels x a quarter of each side: 16 patches,
    few enough for Kernel SHAP to estimate well); for a signal (C, L), all channels x an eighth of
    its length (8 segments: a quarter would leave 4, too few to rank in a deletion curve)."""
    if len(input_shape) == 2:
        return (input_shape[0], max(1, round(input_shape[1] / 8)))
    return default_occlusion_window(input_shape)


def feature_mask(input_shape: Sequence[int], window: Sequence[int] | None = None) -> torch.Tensor:
    """(1, *input_shape) long: the index of each input value's feature group. Windows of `window`
    (default `default_feature_window`) tile the input, the last ones cut at its edges, numbered in
    row-major order, so an 8x8 digit with 2x2 windows has groups 0..15."""
    window = window or default_feature_window(input_shape)
    sizes = list(window) if isinstance(window, Sequence) and not isinstance(window, str) else [window]
    if len(sizes) != len(input_shape) or not all(isinstance(w, int) and w >= 1 for w in sizes):
        raise UserError(
            f"explain.feature_window={sizes} does not fit the input {tuple(input_shape)}: give one positive "
            f"whole size per input dimension ({len(input_shape)}), e.g. {list(default_feature_window(input_shape))}, "
            "or null for that default."
        )
    ids = torch.zeros((), dtype=torch.long)
    for size, w in zip(input_shape, sizes):
        blocks = -(-size // w)  # windows along this dimension
        ids = ids[..., None] * blocks + torch.arange(size) // w  # mixed radix: (..., size)
    return ids[None]


@contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Run the block with torch's and numpy's global generators seeded by `seed` (captum draws
    Gradient SHAP's baselines and path points with numpy, coalitions with torch), and restore
    them after: the sampling methods give the same map on every call, and the caller's random
    state is untouched."""
    import numpy as np

    devices = [device] if device.type == "cuda" else []
    state = np.random.get_state()
    try:
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            np.random.seed(seed)
            yield
    finally:
        np.random.set_state(state)


def attribute(
    model: nn.Module,
    method: str,
    x: torch.Tensor,
    target: torch.Tensor,
    n_steps: int = 64,
    layer: nn.Module | None = None,
    occlusion_window: Sequence[int] | None = None,
    occlusion_stride: Sequence[int] | None = None,
    n_samples: int = 512,
    mask: torch.Tensor | None = None,
    background: torch.Tensor | None = None,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The attributions of `method` for inputs x (B, *input_shape) towards class indices `target`
    (B,), with x's shape, and the convergence delta (B,) for integrated_gradients (else None).

    `layer` is Grad-CAM's conv layer; the occlusion window and stride default to
    `default_occlusion_window` (stride = window: the windows tile the input). `n_samples` is the
    forward passes per row of kernel_shap (per background row) and lime, `mask` their feature
    groups (`feature_mask`, default windows), `background` the reference rows (K, *input_shape)
    that stand for "feature absent": kernel_shap averages its values over them, gradient_shap
    draws its baselines from them; None is the single all-zero row (the training mean of
    standardized inputs). `seed` seeds the sampling of kernel_shap, gradient_shap and lime.
    """
    from captum._utils.models.linear_model import SkLearnRidge
    from captum.attr import (
        GradientShap,
        IntegratedGradients,
        KernelShap,
        LayerAttribution,
        LayerGradCam,
        Lime,
        Occlusion,
        Saliency,
    )

    check_choice("explain.methods", method, METHODS)
    forward = scores(model)
    x = x.detach().clone().requires_grad_(True)
    target = target.long()
    reference = torch.zeros_like(x[:1]) if background is None else background.detach().to(x.device, x.dtype)
    if method == "saliency":
        return Saliency(forward).attribute(x, target=target, abs=True).detach(), None
    if method == "integrated_gradients":
        ig = IntegratedGradients(forward)
        attr, delta = ig.attribute(
            x, baselines=torch.zeros_like(x), target=target, n_steps=n_steps, return_convergence_delta=True
        )
        return attr.detach(), delta.detach()
    if method == "gradcam":
        if layer is None:
            raise UserError("explain.methods has gradcam, but the model has no conv layer to read: remove gradcam.")
        cam = LayerGradCam(forward, layer).attribute(x, target=target, relu_attributions=True)  # (B, 1, *map)
        size = tuple(x.shape[2:])
        mode = "bilinear" if len(size) == 2 else "linear"
        cam = LayerAttribution.interpolate(cam.detach(), size, interpolate_mode=mode)  # (B, 1, *spatial)
        return cam.expand_as(x).contiguous(), None  # the same map for every channel
    if method == "gradient_shap":
        with seeded(seed, x.device):
            attr = GradientShap(forward).attribute(x, baselines=reference, n_samples=n_steps, target=target)
        return attr.detach(), None
    if method in PERTURBATION:
        mask = (feature_mask(tuple(x.shape[1:])) if mask is None else mask).to(x.device)
        x = x.detach()
        batch = min(n_samples, 256)  # coalitions per forward pass
        with warnings.catch_warnings():  # captum advises one row per call; its loop over the rows is what we want
            warnings.filterwarnings("ignore", message="You are providing multiple inputs for Lime")
            if method == "lime":
                # Ridge (alpha 1), the surrogate of the reference `lime` package: captum's default Lasso
                # (alpha 0.01) zeroes every coefficient of a model whose score moves by less than ~0.01.
                with seeded(seed, x.device):
                    attr = Lime(forward, interpretable_model=SkLearnRidge(alpha=1.0)).attribute(
                        x, target=target, feature_mask=mask, n_samples=n_samples, perturbations_per_eval=batch
                    )
            else:
                attr = torch.zeros_like(x)
                # The SHAP values with a set of references: the mean of those with each one (own coalitions).
                for k, b in enumerate(reference):
                    with seeded(seed + k, x.device):
                        attr += KernelShap(forward).attribute(
                            x, baselines=b[None], target=target, feature_mask=mask, n_samples=n_samples,
                            perturbations_per_eval=batch,
                        ) / len(reference)  # fmt: skip
        # captum repeats a group's value on each of its input values; spread it over them instead, so
        # the map sums to the groups' total (for Kernel SHAP: score(x) - score(reference)), as IG's does.
        size = torch.bincount(mask.flatten())[mask].to(x.dtype)  # (1, *input_shape): the size of each value's group
        return (attr / size).detach(), None
    window = tuple(occlusion_window or default_occlusion_window(tuple(x.shape[1:])))
    stride = tuple(occlusion_stride or window)
    attr = Occlusion(forward).attribute(
        x, sliding_window_shapes=window, strides=stride, baselines=0.0, target=target, perturbations_per_eval=16
    )
    return attr.detach(), None


def randomized_copy(model: nn.Module, seed: int = 0) -> nn.Module:
    """A copy of `model` with freshly initialised weights (`reset_parameters` of every module
    that has one, seeded): the "randomized model" of the sanity check; `model` is untouched."""
    fresh = copy.deepcopy(model)
    torch.manual_seed(seed)
    for module in fresh.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
    return fresh.eval()


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation of |a| and |b| per sample ((B, ...) -> (B,)), ties given their
    mean rank; NaN for a sample whose map is constant (no ranking to compare)."""
    from scipy.stats import rankdata

    ra = torch.from_numpy(rankdata(a.abs().flatten(1).cpu().double().numpy(), axis=1))
    rb = torch.from_numpy(rankdata(b.abs().flatten(1).cpu().double().numpy(), axis=1))
    ra, rb = ra - ra.mean(1, keepdim=True), rb - rb.mean(1, keepdim=True)
    denom = ra.norm(dim=1) * rb.norm(dim=1)
    return torch.where(denom > 0, (ra * rb).sum(1) / denom.clamp_min(1e-30), torch.nan)


def model_randomization(trained: torch.Tensor, randomized: torch.Tensor) -> float | None:
    """The mean over samples of `spearman(trained, randomized)`; samples where it is undefined
    (a constant map, e.g. an all-zero Grad-CAM) are left out, and None when all are."""
    rho = spearman(trained, randomized)
    rho = rho[~rho.isnan()]
    return float(rho.mean()) if len(rho) else None
