"""Two figures of docs/concepts.md that are not training curves, drawn from a finished sweep:

    python scripts/concept_figures.py weights outputs/concepts/regularization/<date>_<time> \
        docs/figures/concepts/regularization/weight_hist.png
    python scripts/concept_figures.py width outputs/concepts/model_complexity/<date>_<time> \
        docs/figures/concepts/model_complexity/width.png

weights: a histogram of log10 |w| of every weight matrix in each trial's last.ckpt, one panel per
         trial, with the share of weights below 1e-3 (what L1 drives to zero).
width:   train, val and test accuracy and loss (metrics.json) against the swept `width`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402


def trials(sweep: Path) -> list[Path]:
    return sorted((d for d in sweep.iterdir() if d.name.isdigit()), key=lambda d: int(d.name))


def weights(sweep: Path, out: Path, threshold: float = 1e-3) -> None:
    folders = trials(sweep)
    fig, axes = plt.subplots(1, len(folders), figsize=(3.2 * len(folders), 2.9), sharey=True, sharex=True)
    for ax, folder in zip(axes, folders):
        cfg = OmegaConf.load(folder / ".hydra" / "config.yaml")
        state = torch.load(folder / "checkpoints" / "last.ckpt", weights_only=True)["model"]
        w = torch.cat([v.flatten() for v in state.values() if v.ndim >= 2]).abs()
        share = float((w < threshold).float().mean())
        ax.hist(w.clamp_min(1e-8).log10().numpy(), bins=70, color="tab:blue")
        ax.axvline(torch.tensor(threshold).log10().item(), color="tab:red", linestyle="--")
        ax.set_title(f"{cfg.get('regularizer', folder.name)}: {share:.0%} below {threshold:g}", fontsize=10)
        ax.set_xlabel("log10 |w|")
        print(f"{cfg.get('regularizer', folder.name)}: {share:.3f} of {len(w):,} weights below {threshold:g}")
    axes[0].set_ylabel("weights")
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def width(sweep: Path, out: Path) -> None:
    rows = sorted(
        (int(OmegaConf.load(d / ".hydra" / "config.yaml").width), json.loads((d / "metrics.json").read_text()))
        for d in trials(sweep)
    )
    x = [w for w, _ in rows]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.3))
    for ax, metric in zip(axes, ("acc", "loss")):
        for split, style in (("train", "o-"), ("val", "^:"), ("test", "s--")):
            ax.plot(x, [m[f"{split}/{metric}"] for _, m in rows], style, label=split)
        ax.set(xscale="log", xlabel="hidden units (width)", ylabel=metric)
        ax.grid(alpha=0.3)
        ax.legend()
    axes[1].set_yscale("log")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    for w, m in rows:
        print(f"| {w} | {m['train/acc']:.3f} | {m['test/acc']:.3f} | {m['train/loss']:.3f} | {m['test/loss']:.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("figure", choices=("weights", "width"))
    parser.add_argument("sweep", type=Path)
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    {"weights": weights, "width": width}[args.figure](args.sweep, args.out)


if __name__ == "__main__":
    main()
