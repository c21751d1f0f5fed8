"""The fairness trade-off of a sweep of `experiment=fairness_credit` (docs/fairness.md): test
accuracy against the demographic parity and equalized odds differences, for the network and for
fairlearn's ThresholdOptimizer under each constraint, one point per seed.

    nnlab-train -m experiment=fairness_credit                          # 5 seeds x 2 constraints
    python scripts/fairness_tradeoff.py outputs/multiruns/<date>_<time>
    python scripts/fairness_tradeoff.py <sweep> --out docs/figures/concepts/fairness_credit/tradeoff.png

Each trial reports the network (`fairness/...`) and its mitigation (`fairness/mitigated/...`) on
the same test rows; the network of a seed is the same in its two trials (same split, same
training), so it is drawn once per seed. The figure has two panels (accuracy against each
disparity) with an arrow from each seed's network to its mitigation; the table (printed, and
written beside the figure as .md) gives the mean and standard deviation over the seeds.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from nnlab.runs.sweepfolder import Trial, find_trials

DISPARITIES = ("demographic_parity_difference", "equalized_odds_difference")
COLORS = {"network": "tab:grey", "demographic_parity": "tab:blue", "equalized_odds": "tab:orange"}


def points(trials: list[Trial]) -> dict[str, dict[str, dict[str, float]]]:
    """{predictions: {seed: {acc, demographic_parity_difference, equalized_odds_difference}}} with
    predictions "network" and each swept constraint."""
    found: dict[str, dict[str, dict[str, float]]] = {}
    for trial in trials:
        m = trial.metrics
        if trial.status != "completed" or "fairness/overall/acc" not in m:
            continue
        seed = trial.value("seed") or "0"
        constraint = trial.value("fairness.constraints") or "demographic_parity"
        found.setdefault("network", {})[seed] = {
            "acc": m["fairness/overall/acc"],
            **{d: m[f"fairness/{d}"] for d in DISPARITIES},
        }
        if "fairness/mitigated/overall/acc" in m:
            found.setdefault(constraint, {})[seed] = {
                "acc": m["fairness/mitigated/overall/acc"],
                **{d: m[f"fairness/mitigated/{d}"] for d in DISPARITIES},
            }
    return found


def table(found: dict[str, dict[str, dict[str, float]]]) -> str:
    def cell(values: list[float]) -> str:
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{statistics.mean(values):.4f} ± {spread:.4f}"

    lines = [
        "| predictions | seeds | test acc | demographic parity difference | equalized odds difference |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, seeds in found.items():
        shown = "network" if name == "network" else f"threshold_optimizer ({name})"
        columns = [cell([p[k] for p in seeds.values()]) for k in ("acc", *DISPARITIES)]
        lines.append(f"| {shown} | {len(seeds)} | " + " | ".join(columns) + " |")
    return "\n".join(lines)


def figure(found: dict[str, dict[str, dict[str, float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, disparity in zip(axes, DISPARITIES):
        network = found.get("network", {})
        for name, seeds in found.items():
            xs = [p[disparity] for p in seeds.values()]
            ys = [p["acc"] for p in seeds.values()]
            label = "network" if name == "network" else f"threshold_optimizer ({name})"
            ax.scatter(xs, ys, color=COLORS.get(name), label=label, s=30, zorder=3)
            ax.scatter([statistics.mean(xs)], [statistics.mean(ys)], color=COLORS.get(name), marker="*", s=200,
                       edgecolor="black", zorder=4)  # fmt: skip
            if name == "network":
                continue
            for seed, p in seeds.items():  # from the seed's network to its mitigation
                if seed in network:
                    q = network[seed]
                    ax.annotate("", (p[disparity], p["acc"]), (q[disparity], q["acc"]),
                                arrowprops={"arrowstyle": "->", "color": COLORS.get(name), "alpha": 0.5})  # fmt: skip
        ax.set_xlabel(disparity.replace("_", " ") + " (test, by sex)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test accuracy")
    axes[0].legend(fontsize=8, loc="best")
    fig.suptitle("German credit, MLP: accuracy vs disparity per seed (stars: means)", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep", type=Path, help="the folder of `nnlab-train -m experiment=fairness_credit`")
    parser.add_argument("--out", type=Path, default=None, help="the figure (default: <sweep>/fairness_tradeoff.png)")
    args = parser.parse_args(argv)
    found = points(find_trials(args.sweep))
    if not found:
        print(f"{args.sweep}: no completed trial with fairness metrics (run with data.sensitive=...).", file=sys.stderr)
        return 1
    out = args.out or args.sweep / "fairness_tradeoff.png"
    figure(found, out)
    text = table(found)
    out.with_suffix(".md").write_text(text + "\n", encoding="utf-8")
    print(text)
    print(f"\nSaved {out} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
