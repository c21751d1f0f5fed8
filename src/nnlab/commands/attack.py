"""`nnlab-attack ckpt_path=<run>/checkpoints/best.ckpt` (also `python -m nnlab.commands.attack`): how a
trained classifier's accuracy falls under FGSM and PGD attacks (L-infinity) of growing eps.

    checkpoint -> the run's data and model (nnlab.runs.restore) -> for each method and eps:
    attack every row of the split (nnlab.analysis.adversarial) -> accuracy
    -> robustness.md/.csv (a row per eps), figures/accuracy_vs_eps.png, figures/examples.png,
       metrics.json (clean/acc, pgd/eps_0.1/acc, ...), TensorBoard, in outputs/attack/<time>/

    nnlab-attack ckpt_path=outputs/runs/<run>/checkpoints/best.ckpt
    nnlab-attack ckpt_path=... attack.eps=[0,0.1,0.2] attack.methods=[pgd] attack.steps=40

eps is in the units of what the model sees (pixels for a run with data.standardize=false).
"""

from __future__ import annotations

import logging
from typing import Any

import hydra
from omegaconf import DictConfig

from nnlab.cli import app
from nnlab.cli.app import guarded
from nnlab.cli.overrides import explain
from nnlab.errors import UserError, check_choice, check_range

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


def attack(cfg: DictConfig) -> dict[str, float]:
    """Clean and adversarial accuracy of the checkpoint `cfg.ckpt_path`, per method and eps."""
    import torch

    from nnlab.analysis.adversarial import METHODS, adversarial_accuracy
    from nnlab.runs.posthoc import Report
    from nnlab.runs.restore import checkpoint_of, load_run
    from nnlab.tasks.supervised import Supervised

    a = cfg.attack
    check_choice("attack.split", a.split, SPLITS)
    for method in a.methods:
        check_choice("attack.methods", method, METHODS)
    eps_list = [float(e) for e in a.eps]
    for eps in eps_list:
        check_range("attack.eps", eps, 0.0)
    check_range("attack.steps", a.steps, 1)
    if a.step_size is not None:
        check_range("attack.step_size", a.step_size, 0.0, low_inclusive=False)

    run = load_run(checkpoint_of(cfg), device=cfg.device, trust_config=cfg.trust_config)
    if not isinstance(run.task, Supervised) or not run.classifier:
        raise UserError(
            f"nnlab-attack attacks classifiers trained with task=supervised, but {run.ckpt_path} is a "
            f"{run.data.kind} run of task {run.cfg.task._target_}: its model outputs no class logits "
            "whose cross-entropy an attack could raise. Point ckpt_path at a classification run."
        )
    clamp = valid_range(a.clamp, run.data)
    log.info("Attacking the %s split (%d rows), clamp=%s", a.split, run.data.size(a.split), clamp)

    report = Report(cfg.paths.output_dir, cfg)
    batches = list(run.data.eval_batches(a.split))
    with torch.no_grad():
        correct = sum((run.model(x).argmax(1) == y).sum().item() for x, y in batches)
    clean = correct / sum(len(y) for _, y in batches)
    metrics = {"clean/acc": clean}
    rows = []
    for eps in eps_list:
        row: dict[str, Any] = {"eps": eps, "clean": clean}
        for method in a.methods:
            acc = adversarial_accuracy(run.model, batches, method, eps, a.steps, a.step_size, clamp, cfg.seed)
            metrics[f"{method}/eps_{eps:g}/acc"] = row[method] = acc
        rows.append(row)
    report.table("robustness", rows, title=f"Accuracy under attack ({a.split} split, L-inf eps)")
    report.figure("accuracy_vs_eps", accuracy_figure(rows, list(a.methods)))
    if a.examples > 0 and len(run.data.input_shape) >= 2 and max(eps_list) > 0:
        report.figure("examples", examples_figure(run, batches[0], a, max(eps_list), clamp, cfg.seed))
    return report.finish(metrics)


def valid_range(clamp: Any, data: Any) -> tuple[float, float] | None:
    """`attack.clamp` as (lo, hi), or None. `auto`: the training inputs' min and max when they
    are unstandardized images (pixels), else None (z-scored features have no natural bound)."""
    if clamp is None:
        return None
    if clamp == "auto":
        if data.x_scale is not None or len(data.input_shape) < 2:
            return None
        xs = [x for x, _ in data.eval_batches("train")]
        return min(x.min().item() for x in xs), max(x.max().item() for x in xs)
    if isinstance(clamp, str) or len(clamp) != 2 or not clamp[0] < clamp[1]:
        raise UserError(f"attack.clamp={clamp!r} is not a valid range. Use [lo, hi] with lo < hi, null or auto.")
    return float(clamp[0]), float(clamp[1])


def accuracy_figure(rows: list[dict[str, Any]], methods: list[str]) -> Any:
    """Accuracy against eps: one line per method, the clean accuracy dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    eps = [r["eps"] for r in rows]
    ax.axhline(rows[0]["clean"], color="grey", linestyle="--", label="clean")
    for method in methods:
        ax.plot(eps, [r[method] for r in rows], marker="o", label=method)
    ax.set(xlabel="eps (L-inf, model input units)", ylabel="accuracy", ylim=(0, 1.02), title="Accuracy under attack")
    ax.legend()
    fig.tight_layout()
    return fig


def examples_figure(run: Any, batch: tuple[Any, Any], a: DictConfig, eps: float, clamp: Any, seed: int) -> Any:
    """A few inputs (top) and their adversarial versions at `eps` by the last method (bottom),
    each titled with the model's prediction."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from nnlab.analysis.adversarial import perturb

    method = a.methods[-1]
    x, y = batch[0][: a.examples], batch[1][: a.examples]
    g = torch.Generator(device=x.device).manual_seed(seed)
    x_adv = perturb(method, run.model, x, y, eps, a.steps, a.step_size, clamp, g)
    with torch.no_grad():
        preds = [run.model(v).argmax(1).tolist() for v in (x, x_adv)]
    names = run.data.class_names or [str(i) for i in range(run.data.num_outputs)]
    lo, hi = min(x.min().item(), x_adv.min().item()), max(x.max().item(), x_adv.max().item())
    fig, axes = plt.subplots(2, len(x), figsize=(1.3 * len(x), 3), squeeze=False)
    for row, (images, pred) in enumerate(zip((x, x_adv), preds)):
        for i, ax in enumerate(axes[row]):
            image = ((images[i] - lo) / max(hi - lo, 1e-12)).cpu().numpy()  # one scale for both rows
            ax.imshow(image[0] if len(image) == 1 else image.transpose(1, 2, 0), cmap="gray", vmin=0, vmax=1)
            wrong = pred[i] != y[i].item()
            ax.set_title(names[pred[i]], color="red" if wrong else "black", fontsize=9)
            ax.axis("off")
    axes[0][0].text(-0.5, 0.5, "clean", transform=axes[0][0].transAxes, ha="right", va="center")
    axes[1][0].text(-0.5, 0.5, f"{method}\neps={eps:g}", transform=axes[1][0].transAxes, ha="right", va="center")
    fig.tight_layout()
    return fig


@hydra.main(version_base="1.3", config_path="pkg://nnlab.configs", config_name="attack")
def main(cfg: DictConfig) -> None:
    guarded(lambda: attack(cfg), output_dir=cfg.paths.output_dir)


def cli() -> None:
    """The `nnlab-attack` command."""
    app.cli(main, explain)


if __name__ == "__main__":
    cli()
