"""`nnlab-explain ckpt_path=<run>/checkpoints/best.ckpt` (also `python -m nnlab.commands.explain`): which parts
of its inputs a trained model's predictions rest on, with captum (`pip install "nnlab[explain]"`), and how
faithful each answer is.

    checkpoint -> the run's data and model (nnlab.runs.restore) -> the first `num_samples` test rows
    -> attention maps, for a model with attention (Transformer, ViT, GPT; the only view of a text run)
    -> saliency, integrated gradients, Grad-CAM (CNNs), occlusion, Kernel SHAP, Gradient SHAP, LIME
       (nnlab.analysis.attribution), on feature groups: a table's columns, an image's patches
    -> images and signals: a grid figure, rows = samples, columns = the input and each method
       tabular rows:       features ranked by mean |attribution| (table and bar chart), the SHAP values
                           per sample and their mean |value|, every method's attributions as CSV
    -> the sanity check: the same maps from a randomly re-initialised copy of the model, compared
       by Spearman rank correlation (high = the map does not depend on what was learned)
    -> faithfulness (nnlab.analysis.faithfulness): deletion AUC against a random order, and
       infidelity, per method, in one table sorted by deletion AUC
    -> metrics.json, figures/, TensorBoard, in outputs/explain/<time>/

    nnlab-explain ckpt_path=outputs/runs/<run>/checkpoints/best.ckpt
    nnlab-explain ckpt_path=... explain.methods=[integrated_gradients,occlusion] explain.target=true
    nnlab-explain ckpt_path=... explain.methods=[kernel_shap,lime] explain.n_samples=2048 explain.background=train
"""

from __future__ import annotations

import logging
from typing import Any

import hydra
from omegaconf import DictConfig

from nnlab.cli import app
from nnlab.cli.app import guarded
from nnlab.cli.overrides import explain as explain_override
from nnlab.errors import ConfigValueError, UserError, check_choice, check_range

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
BACKGROUNDS = ("zeros", "train")
SHORT = {"integrated_gradients": "ig"}  # a method's name in the sanity metrics, where it differs
SHAP = ("kernel_shap", "gradient_shap")  # the tabular SHAP figures show the first of these that ran


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
    check_choice("explain.background", opts.background, BACKGROUNDS)
    check_choice("split", cfg.split, SPLITS)
    check_count("explain.num_samples", opts.num_samples, 1)
    check_count("explain.n_steps", opts.n_steps, 2)
    check_count("explain.n_samples", opts.n_samples, 3)
    check_count("explain.background_rows", opts.background_rows, 1)
    check_count("explain.deletion_steps", opts.deletion_steps, 1)
    check_count("explain.infidelity_samples", opts.infidelity_samples, 1)
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

    # The feature groups of Kernel SHAP, LIME and the faithfulness scores; the training rows that
    # stand for "feature absent" in Gradient SHAP (always) and Kernel SHAP (explain.background=train).
    mask = A.feature_mask(tuple(x.shape[1:]), opts.feature_window).to(x.device)
    groups = int(mask.max()) + 1
    check_enough_samples(methods, opts.n_samples, groups)
    train_rows = background_rows(run.data, opts.background_rows, cfg.seed, x)
    background = {"gradient_shap": train_rows, "kernel_shap": train_rows if opts.background == "train" else None}
    log.info("Kernel SHAP, LIME and the faithfulness scores see %d feature groups", groups)

    kwargs = dict(
        n_steps=opts.n_steps,
        occlusion_window=opts.occlusion_window,
        occlusion_stride=opts.occlusion_stride,
        n_samples=opts.n_samples,
        mask=mask,
        seed=cfg.seed,
    )
    randomized = A.randomized_copy(run.model, cfg.seed) if opts.sanity_check else None
    # The randomized copy's Grad-CAM reads the same layer, by name.
    random_layer = dict(randomized.named_modules())[layer_name] if randomized is not None and layer_name else None
    maps: dict[str, torch.Tensor] = {}
    metrics: dict[str, float] = {}
    sanity_rows, rhos = [], {}
    for method in methods:
        ref = background.get(method)
        attr, delta = A.attribute(run.model, method, x, target, layer=layer, background=ref, **kwargs)
        maps[method] = attr
        if delta is not None:  # completeness: sum(attr) = F(x) - F(baseline) up to delta
            with torch.no_grad():
                gap = (out - A.scores(run.model)(torch.zeros_like(x))).gather(1, target[:, None]).squeeze(1)
            metrics["ig/completeness_error"] = float(delta.abs().max())
            metrics["ig/completeness_error_relative"] = float((delta.abs() / gap.abs().clamp_min(1e-8)).max())
        if randomized is not None:
            rand_attr, _ = A.attribute(randomized, method, x, target, layer=random_layer, background=ref, **kwargs)
            rho = rhos[method] = A.model_randomization(attr, rand_attr)
            verdict = "n/a (constant maps)"
            if rho is not None:
                metrics[f"sanity/{SHORT.get(method, method)}/spearman"] = rho
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
        names = feature_names(run.data)
        ranking = feature_ranking(maps, names)
        report.table("feature_ranking", ranking, title=f"Features by mean |attribution| over {len(x)} samples")
        report.figure("feature_ranking", ranking_figure(ranking, list(maps)))
        info = row_info(run.data, y, out, target, classify)
        for method, attr in maps.items():
            report.csv(f"attributions/{method}", [{**i, **dict(zip(names, a.tolist()))} for i, a in zip(info, attr)])
        shap = next((m for m in SHAP if m in maps), None)
        if shap is not None:
            report.figure("shap_samples", shap_samples_figure(maps[shap], names, labels, shap))
            report.figure("shap_importance", shap_importance_figure(maps[shap], names, shap))
    else:
        report.figure("attributions", attribution_grid(raw_inputs(run.data, x), maps, labels))
    if sanity_rows:
        report.table("sanity_check", sanity_rows, title="Model randomization test (Adebayo et al., 2018)")
    if opts.faithfulness:
        metrics |= faithfulness(run.model, x, target, maps, mask, classify, rhos, opts, cfg.seed, report)
    return report.finish(metrics)


def check_count(key: str, value: Any, low: int) -> None:
    """Raise a ConfigValueError naming `key` unless `value` is a whole number >= `low`."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigValueError(f"{key}={value!r} is not a whole number: set it to an integer >= {low}.")
    check_range(key, value, low)


def check_enough_samples(methods: list[str], n_samples: int, groups: int) -> None:
    """Kernel SHAP and LIME fit one coefficient per feature group (and an intercept) to n_samples
    model evaluations: fewer evaluations than that leave the fit undetermined."""
    from nnlab.analysis.attribution import PERTURBATION

    fitted = [m for m in methods if m in PERTURBATION]
    if fitted and groups < 2:
        raise ConfigValueError(
            f"explain.feature_window makes the whole input one feature group, and {' and '.join(fitted)} need at "
            "least 2 to share the score between. Use a smaller window, or null for the default."
        )
    if fitted and n_samples < groups + 2:
        raise ConfigValueError(
            f"explain.n_samples={n_samples} is too few for {' and '.join(fitted)} on {groups} feature groups: their "
            f"linear fit needs at least {groups + 2} model evaluations per row (a few times more for a stable "
            f"estimate, e.g. explain.n_samples={max(512, 8 * groups)}), or coarser groups (explain.feature_window)."
        )


def background_rows(data: Any, n: int, seed: int, like: Any) -> Any:
    """`n` rows of the training split (all of them when it has fewer), drawn with `seed`, as the
    model sees them (standardized), on `like`'s device and dtype."""
    import numpy as np
    import torch

    x_train, _ = data.arrays("train")
    pick = np.random.default_rng(seed).choice(len(x_train), size=min(n, len(x_train)), replace=False)
    return torch.as_tensor(x_train[np.sort(pick)]).to(like.device, like.dtype)


def faithfulness(
    model: Any,
    x: Any,
    target: Any,
    maps: dict[str, Any],
    mask: Any,
    classify: bool,
    rhos: dict[str, float | None],
    opts: DictConfig,
    seed: int,
    report: Any,
) -> dict[str, float]:
    """The deletion AUC and infidelity of every method's maps (and the deletion AUC of a random
    order), as the `faithfulness` table, sorted most faithful first, and the `deletion_curves`
    figure; returns their metrics `faithfulness/<method>/deletion_auc` and `/infidelity`."""
    from nnlab.analysis import attribution as A
    from nnlab.analysis import faithfulness as F

    forward, groups, steps = A.scores(model), int(mask.max()) + 1, opts.deletion_steps
    curves = {"random": F.random_deletion(forward, x, target, mask, steps, classify, seed=seed)}
    metrics = {"faithfulness/random/deletion_auc": F.deletion_auc(curves["random"], groups)}
    rows = []
    for method, attr in maps.items():
        curves[method] = F.deletion_curves(forward, x, target, F.ranking(attr, mask), mask, steps, classify)
        auc = metrics[f"faithfulness/{method}/deletion_auc"] = F.deletion_auc(curves[method], groups)
        infid = F.infidelity(forward, x, attr, target, mask, opts.infidelity_samples, seed)
        if infid == infid:  # NaN: no perturbation moved the score of any row
            metrics[f"faithfulness/{method}/infidelity"] = infid
        rho = rhos.get(method)
        rows.append({"method": method, "deletion_auc": auc, "infidelity": infid, "sanity_spearman": rho})
    rows.sort(key=lambda r: r["deletion_auc"])
    rows.append({"method": "random", "deletion_auc": metrics["faithfulness/random/deletion_auc"]})
    for row in rows:
        row.setdefault("infidelity", None)
        row.setdefault("sanity_spearman", None)
        row.update({k: "n/a" if v is None or v != v else v for k, v in row.items()})
    read = "the explained class's probability" if classify else "output 0"
    report.table(
        "faithfulness",
        rows,
        title=f"Faithfulness over {len(x)} rows, {groups} feature groups: deletion AUC of {read} (lower = more "
        "faithful; random order for reference), infidelity (lower = better), sanity Spearman (lower = better)",
    )
    report.figure("deletion_curves", F.deletion_figure(curves, groups, read))
    return metrics


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


def row_info(data: Any, y: Any, out: Any, target: Any, classify: bool) -> list[dict[str, Any]]:
    """Per explained row, the columns before its attributions in attributions/<method>.csv: its
    index in the split, its true and predicted class (or value), and the explained score."""
    rows = []
    for i in range(len(y)):
        score = float(out[i, target[i]])
        if classify:
            names = data.class_names
            true, pred, explained = names[int(y[i])], names[int(out[i].argmax())], names[int(target[i])]
        else:
            true, pred, explained = float(y[i].flatten()[0]), score, "output 0"
        rows.append({"row": i, "true": true, "predicted": pred, "explained": explained, "score": score})
    return rows


def shap_samples_figure(attr: Any, names: list[str], labels: list[str], method: str, top: int = 10) -> Any:
    """One panel per explained row (the first 4): its `top` features by |SHAP value|, as signed
    bars (red raises the explained score, blue lowers it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    n, top = min(4, len(attr)), min(top, len(names))
    fig, axes = plt.subplots(1, n, figsize=(3.6 * n, 0.32 * top + 1.4), squeeze=False)
    for i, ax in enumerate(axes[0]):
        values = attr[i].detach().cpu().float().numpy()
        order = np.argsort(-np.abs(values))[:top][::-1]  # the largest on top
        ax.barh(range(top), values[order], color=["tab:red" if v > 0 else "tab:blue" for v in values[order]])
        ax.set_yticks(range(top), [names[j] for j in order], fontsize=7)
        ax.axvline(0, color="black", lw=0.6)
        ax.set_title(f"row {i}: {labels[i]}", fontsize=8)
        ax.set_xlabel(f"{method.replace('_', ' ')} value", fontsize=8)
    fig.tight_layout()
    return fig


def shap_importance_figure(attr: Any, names: list[str], method: str, top: int = 30) -> Any:
    """Global importance: each feature's mean |SHAP value| over the explained rows, largest on top."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    mean_abs = attr.detach().abs().mean(0).cpu().float().numpy()
    order = np.argsort(-mean_abs)[: min(top, len(names))][::-1]
    fig, ax = plt.subplots(figsize=(6, 0.3 * len(order) + 1.2))
    ax.barh(range(len(order)), mean_abs[order], color="tab:purple")
    ax.set_yticks(range(len(order)), [names[j] for j in order], fontsize=8)
    ax.set_xlabel(f"mean |{method.replace('_', ' ')} value| over {len(attr)} rows (score units)")
    fig.tight_layout()
    return fig


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


def attribution_grid(x: Any, maps: dict[str, Any], labels: list[str], max_rows: int = 8) -> Any:
    """Rows = samples (the first `max_rows`: a taller grid is hard to read and slower to draw than
    the attributions; the scores use every row); columns = the input, then each method's map
    (summed over channels) over it: red raises the explained score, blue lowers it (saliency and
    Grad-CAM are non-negative)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n, cols = min(len(x), max_rows), 1 + len(maps)
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
