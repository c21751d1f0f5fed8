"""`nnlab-explain ckpt_path=<run>/checkpoints/best.ckpt` (also `python -m nnlab.commands.explain`): which parts
of its inputs a trained model's predictions rest on, with captum (`pip install "nnlab[explain]"`).

    checkpoint -> the run's data and model (nnlab.runs.restore) -> the first `num_samples` test rows
    -> attention maps, for a model with attention (Transformer, ViT, GPT; the only view of a text run)
    -> saliency, integrated gradients, Grad-CAM (CNNs), occlusion (nnlab.analysis.attribution)
    -> images and signals: a grid figure, rows = samples, columns = the input and each method
       tabular rows:       features ranked by mean |attribution| (table and bar chart)
    -> the sanity check: the same maps from a randomly re-initialised copy of the model, compared
       by Spearman rank correlation (high = the map does not depend on what was learned)
    -> metrics.json, figures/, TensorBoard, in outputs/explain/<time>/

    nnlab-explain ckpt_path=outputs/runs/<run>/checkpoints/best.ckpt
    nnlab-explain ckpt_path=... explain.methods=[integrated_gradients,occlusion] explain.target=true
"""

from __future__ import annotations

import logging
from typing import Any

import hydra
from omegaconf import DictConfig

from nnlab.cli import app
from nnlab.cli.app import guarded
from nnlab.cli.overrides import explain as explain_override
from nnlab.errors import UserError, check_choice, check_range

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
SHORT = {"saliency": "saliency", "integrated_gradients": "ig", "gradcam": "gradcam", "occlusion": "occlusion"}


def explain_run(cfg: DictConfig) -> dict[str, float]:
    """Attributions of the checkpoint `cfg.ckpt_path` on `cfg.explain.num_samples` rows of `cfg.split`."""
    import torch

    from nnlab.analysis import attribution as A
    from nnlab.runs.posthoc import Report
    from nnlab.runs.restore import checkpoint_of, load_run

    ckpt_path = checkpoint_of(cfg)
    A.require_captum()
    opts = cfg.explain
    methods = A.check_methods(opts.methods)
    check_choice("explain.target", opts.target, A.TARGETS)
    check_choice("split", cfg.split, SPLITS)
    check_range("explain.num_samples", opts.num_samples, 1)
    check_range("explain.n_steps", opts.n_steps, 2)
    run = load_run(ckpt_path, device=cfg.device, trust_config=cfg.trust_config)
    report = Report(cfg.paths.output_dir, cfg)
    x, y = first_rows(run.data.eval_batches(cfg.split), opts.num_samples)
    shown = attention(run, x, opts.get("attention_head"), report)
    if run.data.tokenizer is not None:  # token ids are not a continuous input: no gradient, no occlusion
        if not shown:
            raise UserError(
                f"{run.ckpt_path} reads text (token ids), whose attributions need a gradient through an embedding "
                "that nnlab-explain does not take yet; its model has no attention to show. Explain a Transformer "
                "(model=transformer, model=gpt) for attention maps."
            )
        log.info("Text run: attention maps only (attributions of token ids need a continuous input)")
        return report.finish({"attention/layers": float(shown)})
    check_supported(run)
    classify = run.data.kind == "classification"
    with torch.no_grad():
        out = A.scores(run.model)(x)
    predicted = out.argmax(1) if classify else torch.zeros(len(x), dtype=torch.long, device=x.device)
    # Regression explains output 0 (the first target); "true" only means something for classes.
    target = y.long() if classify and opts.target == "true" else predicted
    log.info(
        "Explaining %d %s rows: the score of the %s",
        len(x),
        cfg.split,
        f"{opts.target} class" if classify else "output 0",
    )

    layer, layer_name = None, None
    if "gradcam" in methods:
        found = A.last_conv_layer(run.model, opts.layer)
        if found is None:
            log.info("Skipping gradcam: %s has no conv layer (Grad-CAM needs a CNN)", type(run.model).__name__)
            methods.remove("gradcam")
        else:
            log.info("Grad-CAM reads layer '%s' (%s)", found[0], type(found[1]).__name__)
            layer_name, layer = found
    if not methods:
        raise UserError("explain.methods has only gradcam, and the model has no conv layer. Add another method.")

    kwargs = dict(n_steps=opts.n_steps, occlusion_window=opts.occlusion_window, occlusion_stride=opts.occlusion_stride)
    randomized = A.randomized_copy(run.model, cfg.seed) if opts.sanity_check else None
    # The randomized copy's Grad-CAM reads the same layer, by name.
    random_layer = dict(randomized.named_modules())[layer_name] if randomized is not None and layer_name else None
    maps: dict[str, torch.Tensor] = {}
    metrics: dict[str, float] = {}
    sanity_rows = []
    for method in methods:
        attr, delta = A.attribute(run.model, method, x, target, layer=layer, **kwargs)
        maps[method] = attr
        if delta is not None:  # completeness: sum(attr) = F(x) - F(baseline) up to delta
            with torch.no_grad():
                gap = (out - A.scores(run.model)(torch.zeros_like(x))).gather(1, target[:, None]).squeeze(1)
            metrics["ig/completeness_error"] = float(delta.abs().max())
            metrics["ig/completeness_error_relative"] = float((delta.abs() / gap.abs().clamp_min(1e-8)).max())
        if randomized is not None:
            rand_attr, _ = A.attribute(randomized, method, x, target, layer=random_layer, **kwargs)
            rho = A.model_randomization(attr, rand_attr)
            verdict = "n/a (constant maps)"
            if rho is not None:
                metrics[f"sanity/{SHORT[method]}/spearman"] = rho
                verdict = "ok" if rho <= opts.sanity_threshold else "HIGH: may show the input, not the model"
                if rho > opts.sanity_threshold:
                    log.warning(
                        "Sanity check: %s maps of the trained and of a randomly initialised model agree "
                        "(Spearman %.2f > %.2f): they may show the input rather than what the model learned.",
                        method, rho, opts.sanity_threshold,
                    )  # fmt: skip
            sanity_rows.append(
                {"method": method, "spearman_vs_random": rho if rho is not None else "n/a", "verdict": verdict}
            )

    if classify:
        metrics["explained/acc"] = float((predicted == y).float().mean())
    labels = row_labels(run.data, y, predicted, classify)
    if len(run.data.input_shape) == 1:
        ranking = feature_ranking(maps, feature_names(run.data))
        report.table("feature_ranking", ranking, title=f"Features by mean |attribution| over {len(x)} samples")
        report.figure("feature_ranking", ranking_figure(ranking, list(maps)))
    else:
        report.figure("attributions", attribution_grid(raw_inputs(run.data, x), maps, labels))
    if sanity_rows:
        report.table("sanity_check", sanity_rows, title="Model randomization test (Adebayo et al., 2018)")
    return report.finish(metrics)


def attention(run: Any, x: Any, head: int | None, report: Any) -> int:
    """figures/attention.png: the attention maps of the model on the rows x (heads averaged, or
    head `head`), for a model with attention; returns its number of layers (0: none)."""
    from nnlab.analysis.attention import probe_figure

    try:
        figure = probe_figure(run.model, x[:3], run.data.tokenizer, head)
    except ValueError as e:  # a head that does not exist
        raise UserError(f"explain.attention_head={head}: {e}.") from None
    if figure is None:
        return 0
    log.info("Saved %s", report.figure("attention", figure))
    return len(run.model.attention_maps(x[:1]))


def check_supported(run: Any) -> None:
    """Refuse, in one paragraph, a run whose model does not output class scores or targets."""
    from nnlab.tasks.perceptron import PerceptronRule
    from nnlab.tasks.supervised import Supervised

    if not isinstance(run.task, (Supervised, PerceptronRule)):
        raise UserError(
            f"nnlab-explain explains supervised models, but {run.ckpt_path} holds model "
            f"{type(run.model).__name__}, trained with the {type(run.task).__name__} task, whose output is not "
            "a score per class or target (an autoencoder reconstructs, a GAN generates, a SOM maps to a grid). "
            "Use a checkpoint of a classifier or regressor: model=mlp, cnn, lenet5, cnn1d, rnn, lstm, gru, "
            "linear or perceptron."
        )


def first_rows(batches: Any, n: int) -> tuple[Any, Any]:
    """The first `n` rows of a split, in its fixed order (fewer if the split is smaller)."""
    import torch

    xs, ys, have = [], [], 0
    for x, y in batches:
        xs.append(x[: n - have])
        ys.append(y[: n - have])
        have += len(xs[-1])
        if have >= n:
            break
    return torch.cat(xs), torch.cat(ys)


def raw_inputs(data: Any, x: Any) -> Any:
    """x in the dataset's own units (standardization undone), for display: a z-scored digit shows
    every pixel's deviation from the mean digit, which is hard to read."""
    import torch

    if data.x_scale is None:
        return x
    mean, std = (torch.as_tensor(a, dtype=x.dtype, device=x.device) for a in data.x_scale)
    return x * std + mean


def row_labels(data: Any, y: Any, predicted: Any, classify: bool) -> list[str]:
    if not classify:
        return [f"true {float(t.flatten()[0]):.3g}" for t in y]
    names = data.class_names
    return [f"true {names[int(t)]}, pred {names[int(p)]}" for t, p in zip(y, predicted)]


def feature_names(data: Any) -> list[str]:
    """The dataset's feature names when it has any, else x0, x1, ..."""
    names = getattr(data, "feature_names", None)
    n = data.input_shape[0]
    return list(names) if names and len(names) == n else [f"x{i}" for i in range(n)]


def feature_ranking(maps: dict[str, Any], names: list[str]) -> list[dict[str, Any]]:
    """Rows of (rank, feature, share of each method's total mean |attribution|), most important
    first by the average share over methods: shares put methods of different units side by side."""
    shares = {}
    for method, attr in maps.items():
        mean_abs = attr.abs().mean(0).cpu()  # (F,)
        shares[method] = mean_abs / mean_abs.sum().clamp_min(1e-12)
    order = sorted(range(len(names)), key=lambda i: -sum(float(s[i]) for s in shares.values()))
    return [
        {"rank": r + 1, "feature": names[i], **{m: float(s[i]) for m, s in shares.items()}} for r, i in enumerate(order)
    ]


def ranking_figure(rows: list[dict[str, Any]], methods: list[str]) -> Any:
    """Horizontal bars: each feature's share of each method's attribution, most important on top."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows = rows[:30]  # beyond 30 features the chart is unreadable; the table has them all
    fig, ax = plt.subplots(figsize=(6, 0.3 * len(rows) * max(1, len(methods) / 2) + 1.2))
    pos = np.arange(len(rows))[::-1]
    height = 0.8 / len(methods)
    for k, m in enumerate(methods):
        ax.barh(pos + (len(methods) / 2 - k - 0.5) * height, [r[m] for r in rows], height, label=m)
    ax.set_yticks(pos, [r["feature"] for r in rows])
    ax.set_xlabel("share of mean |attribution|")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def attribution_grid(x: Any, maps: dict[str, Any], labels: list[str]) -> Any:
    """Rows = samples; columns = the input, then each method's map (summed over channels) over it:
    red raises the explained score, blue lowers it (saliency and Grad-CAM are non-negative)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n, cols = len(x), 1 + len(maps)
    image = x.dim() == 4
    fig, axes = plt.subplots(n, cols, figsize=(1.9 * cols if image else 2.6 * cols, 1.9 * n), squeeze=False)
    for i in range(n):
        shown = x[i].detach().cpu().float()
        for j, name in enumerate(["input", *maps]):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(name.replace("_", " "), fontsize=8)
            if image:
                gray = shown.mean(0) if shown.shape[0] != 3 else None
                rgb = (shown - shown.min()) / (shown.max() - shown.min()).clamp_min(1e-8)
                # Under a map the input is faded, so the map's colours stay readable.
                ax.imshow(gray if gray is not None else rgb.permute(1, 2, 0), cmap="gray", alpha=1.0 if j == 0 else 0.4)
            else:  # a signal: one line per channel
                for c in shown:
                    ax.plot(c.numpy(), color="black", lw=0.8)
            if j == 0:
                ax.set_ylabel(labels[i], fontsize=7)
                continue
            heat = maps[name][i].detach().cpu().float().sum(0)  # (H, W) or (L,)
            lim = float(heat.abs().max()) or 1.0
            # Non-negative maps on a white-to-red scale, signed ones on blue-white-red around 0.
            scale = dict(cmap="Reds", vmin=0, vmax=lim) if heat.min() >= 0 else dict(cmap="bwr", vmin=-lim, vmax=lim)
            if image:
                ax.imshow(heat, alpha=0.7, **scale)
            else:
                low, high = float(shown.min()), float(shown.max())
                ax.imshow(heat[None], alpha=0.7, aspect="auto", extent=(0, len(heat) - 1, low, high), **scale)
    fig.tight_layout()
    return fig


@hydra.main(version_base="1.3", config_path="pkg://nnlab.configs", config_name="explain")
def main(cfg: DictConfig) -> None:
    guarded(lambda: explain_run(cfg), output_dir=cfg.paths.output_dir)


def cli() -> None:
    """The `nnlab-explain` command."""
    app.cli(main, explain_override)


if __name__ == "__main__":
    cli()
