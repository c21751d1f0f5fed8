"""Transfer learning and self-supervised pretraining on the 8x8 digits, measured over seeds.

    NNLAB_ROOT=/tmp/transfer_work python scripts/transfer_experiment.py transfer
    NNLAB_ROOT=/tmp/transfer_work python scripts/transfer_experiment.py ssl
    python scripts/transfer_experiment.py both --seeds 0 1 2 --labels 5 10 20

transfer: an MLP pretrained on the digits 0-4 (experiment=digits04_pretrain, every label) starts
MLPs for the digits 5-9 trained on n labels per class (experiment=digits59_few_labels with
transfer.init_from), against the same MLP from fresh weights on the same rows (without it).
Variants of the start: full fine-tuning, a frozen backbone (head only), and the backbone at
lr x 0.1.

ssl: per seed, a dense autoencoder learns masked reconstruction from every training row with no
label (digits_ssl_pretrain), then an encoder_classifier starts from its encoder on n labels per
class (digits_ssl_few_labels with transfer.init_from), against the same classifier from fresh
weights (without it).
Pretraining runs per seed so that its unlabeled rows are exactly that seed's training split.

Every run goes through `nnlab.runs.pipeline.train_once` in this process (Hydra's compose API, as the
tests do: no interpreter start-up per run), writes its usual run folder under
$NNLAB_ROOT/transfer_experiment/, and the script prints mean ± std test accuracy per arm and
writes every number to <out>/transfer_experiment.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import statistics
import time
from pathlib import Path

# Two cores: one intra-op thread per run is fastest for these small models (and repeatable).
os.environ.setdefault("OMP_NUM_THREADS", "1")

QUIET = ["logger=none", "callbacks.progress=null", "trainer.summary=false"]


def run(overrides: list[str], run_dir: Path) -> dict[str, float]:
    """One `nnlab-train <overrides>` in this process, in `run_dir`; its final metrics."""
    from hydra import compose, initialize_config_module
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from nnlab.runs.pipeline import train_once

    with initialize_config_module("nnlab.configs", version_base="1.3"):
        cfg = compose("train", overrides=[*QUIET, *overrides, f"hydra.run.dir='{run_dir}'"], return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(run_dir)
    HydraConfig.instance().set_config(cfg)
    cfg = copy.deepcopy(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return train_once(cfg, show_table=False)


def summary(values: list[float]) -> dict[str, float]:
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "values": values,
    }


def transfer_comparison(root: Path, seeds: list[int], labels: list[int], variants: bool, pretrain: list[str]) -> dict:
    """digits 0-4 -> digits 5-9 with n labels per class: scratch vs fine-tuned (and variants)."""
    pretrain_dir = root / "digits04_pretrain"
    pre = run(["experiment=digits04_pretrain", "seed=0", *pretrain], pretrain_dir)
    ckpt = pretrain_dir / "checkpoints" / "best.ckpt"
    print(f"pretrained on digits 0-4: test/acc {pre['test/acc']:.4f} ({ckpt})")
    arms = {"scratch": ["experiment=digits59_few_labels"], "finetune": ["experiment=digits59_few_labels"]}
    if variants:
        arms["frozen backbone"] = [*arms["finetune"], "transfer.freeze=[backbone]"]
        arms["backbone lr x0.1"] = [*arms["finetune"], "transfer.backbone_lr_scale=0.1"]
    results: dict = {"pretrain_test_acc": pre["test/acc"], "rows": []}
    for n in labels:
        for arm, overrides in arms.items():
            accs = []
            for seed in seeds:
                extra = [f"transfer.init_from='{ckpt}'"] if arm != "scratch" else []
                out = root / f"digits59_n{n}" / arm.replace(" ", "_") / f"seed{seed}"
                m = run([*overrides, *extra, f"data_edit.few_labels.per_class={n}", f"seed={seed}"], out)
                accs.append(m["test/acc"])
            results["rows"].append({"labels_per_class": n, "arm": arm, **summary(accs)})
            print(f"  digits 5-9, {n:>2} labels/class, {arm:<17} test/acc {fmt(accs)}")
    return results


def ssl_comparison(root: Path, seeds: list[int], labels: list[int], variants: bool, pretrain: list[str]) -> dict:
    """Masked-reconstruction pretraining on unlabeled digits -> n labels per class."""
    arms = ["scratch", "ssl finetune"] + (["ssl linear probe"] if variants else [])
    accs: dict[tuple[int, str], list[float]] = {(n, a): [] for n in labels for a in arms}
    recon = []
    for seed in seeds:
        pre_dir = root / "digits_ssl_pretrain" / f"seed{seed}"
        pre = run(["experiment=digits_ssl_pretrain", f"seed={seed}", *pretrain], pre_dir)
        recon.append(pre["test/loss"])
        ckpt = pre_dir / "checkpoints" / "best.ckpt"
        for n in labels:
            for arm in arms:
                overrides = {
                    "scratch": ["experiment=digits_ssl_few_labels"],
                    "ssl finetune": ["experiment=digits_ssl_few_labels", f"transfer.init_from='{ckpt}'"],
                    "ssl linear probe": [
                        "experiment=digits_ssl_few_labels",
                        f"transfer.init_from='{ckpt}'",
                        "transfer.freeze=[backbone]",
                    ],
                }[arm]
                out = root / f"ssl_n{n}" / arm.replace(" ", "_") / f"seed{seed}"
                m = run([*overrides, f"data_edit.few_labels.per_class={n}", f"seed={seed}"], out)
                accs[(n, arm)].append(m["test/acc"])
    results: dict = {"pretrain_test_recon_loss": summary(recon), "rows": []}
    print(f"masked-reconstruction pretraining: test/loss {fmt(recon)}")
    for (n, arm), values in accs.items():
        results["rows"].append({"labels_per_class": n, "arm": arm, **summary(values)})
        print(f"  digits 0-9, {n:>2} labels/class, {arm:<17} test/acc {fmt(values)}")
    return results


def fmt(values: list[float]) -> str:
    s = summary(values)
    return f"{s['mean']:.4f} ± {s['std']:.4f}  ({', '.join(f'{v:.4f}' for v in values)})"


def markdown(name: str, results: dict) -> str:
    lines = [f"| {name}: labels per class | arm | test accuracy (mean ± std) | per seed |", "|---|---|---|---|"]
    for row in results["rows"]:
        per_seed = ", ".join(f"{v:.3f}" for v in row["values"])
        lines.append(
            f"| {row['labels_per_class']} | {row['arm']} | {row['mean']:.3f} ± {row['std']:.3f} | {per_seed} |"
        )
    return "\n".join(lines)


def figure(report: dict, path: Path) -> None:
    """Test accuracy against labels per class, one line per arm (mean ± std over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [w for w in ("transfer", "ssl") if w in report]
    fig, axes = plt.subplots(1, len(shown), figsize=(5.5 * len(shown), 4), squeeze=False)
    titles = {"transfer": "digits 0-4 -> 5-9 (MLP)", "ssl": "masked-AE pretraining -> digits 0-9"}
    for ax, which in zip(axes[0], shown):
        arms = dict.fromkeys(row["arm"] for row in report[which]["rows"])
        for arm in arms:
            rows = [r for r in report[which]["rows"] if r["arm"] == arm]
            n = [r["labels_per_class"] for r in rows]
            ax.errorbar(n, [r["mean"] for r in rows], yerr=[r["std"] for r in rows], marker="o", capsize=3, label=arm)
        ax.set(title=titles[which], xlabel="labels per class", ylabel="test accuracy", xscale="log")
        ax.set_xticks(report["labels_per_class"], [str(n) for n in report["labels_per_class"]])
        ax.minorticks_off()
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("which", choices=["transfer", "ssl", "both"], nargs="?", default="both")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--labels", type=int, nargs="+", default=[5, 10, 20], help="labels per class")
    parser.add_argument("--no-variants", action="store_true", help="skip frozen / lr-scaled / linear-probe arms")
    parser.add_argument("--out", type=Path, default=None, help="default: $NNLAB_ROOT/transfer_experiment")
    parser.add_argument("--pretrain", nargs="*", default=[], help="extra overrides of the pretraining runs")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)  # the runs' INFO lines would bury the table

    root = (args.out or Path(os.environ.get("NNLAB_ROOT", ".")) / "transfer_experiment").resolve()
    root.mkdir(parents=True, exist_ok=True)
    report: dict = {"seeds": args.seeds, "labels_per_class": args.labels, "pretrain_overrides": args.pretrain}
    for which, compare in (("transfer", transfer_comparison), ("ssl", ssl_comparison)):
        if args.which in (which, "both"):
            started = time.time()
            report[which] = compare(root / which, args.seeds, args.labels, not args.no_variants, args.pretrain)
            report[which]["seconds"] = round(time.time() - started, 1)
            print(f"{which}: {report[which]['seconds']} s\n{markdown(which, report[which])}\n")
    path = root / "transfer_experiment.json"
    path.write_text(json.dumps(report, indent=2))
    figure(report, root / "transfer_experiment.png")
    print(f"Wrote {path} and {path.with_suffix('.png')}")


if __name__ == "__main__":
    main()
