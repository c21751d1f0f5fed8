"""`nnlab-ensemble` (also `python -m nnlab.commands.ensemble`): train N copies of a run, combine their answers.

    the run nnlab-train would -> member_0/ ... member_<N-1>/ (each a full run: seed + i)
    -> each member's tested checkpoint (nnlab.runs.restore) -> class probabilities on val and test
    -> mean / vote / stacking (nnlab.analysis.ensembles) -> table, bar chart, metrics.json

Members differ by their seed (initialization, dropout), or also by their training rows
(`ensemble.vary=bootstrap`, bagging: Breiman 1996, each member trains on the training split
resampled with replacement). All members share one train/val/test split, pinned to the
ensemble's `seed`, so they are tested on the same rows and none has seen another's test rows.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict

from nnlab.cli import app
from nnlab.cli.app import guarded
from nnlab.cli.overrides import explainer
from nnlab.errors import ConfigValueError, UserError, check_choice, check_range

log = logging.getLogger(__name__)

VARY = ("seed", "bootstrap")
COMBINERS = ("mean", "vote", "stacking")
LOWER_IS_BETTER = {"mse"}


class EnsemblePlan:
    """What the ensemble trains and how it combines the members (the `ensemble` config node).

    Args:
        members: how many models to train, >= 2. Gains shrink fast: most of what averaging gives
            comes from the first 3-5 members.
        vary: seed (members differ by initialization and dropout) or bootstrap (each member also
            trains on its own resample, with replacement, of the training split: bagging).
        combine: the combinations to report, any of: mean (average probabilities, argmax),
            vote (majority of the members' argmax), stacking (a logistic regression fitted on
            the members' validation probabilities). For regression: mean and stacking.
    """

    def __init__(self, members: int = 5, vary: str = "seed", combine: Sequence[str] = COMBINERS) -> None:
        check_range("ensemble.members", members, 2)
        check_choice("ensemble.vary", vary, VARY)
        combine = list(combine)
        if not combine:
            raise ConfigValueError(f"ensemble.combine is empty. List one or more of: {', '.join(COMBINERS)}.")
        for method in combine:
            check_choice("ensemble.combine", method, COMBINERS)
        if len(set(combine)) != len(combine):
            raise ConfigValueError(f"ensemble.combine={combine} lists a method twice. List each once.")
        self.members = members
        self.vary = vary
        self.combine = combine

    def check_kind(self, kind: str) -> None:
        """Refuse combinations that do not fit the dataset's kind, before anything is trained."""
        if kind == "regression" and "vote" in self.combine:
            raise ConfigValueError(
                f"ensemble.combine={self.combine} lists 'vote', but this dataset is a regression: a vote "
                "needs discrete answers. Use ensemble.combine=[mean,stacking]."
            )


def member_config(cfg: DictConfig, i: int, vary: str, root: Path) -> DictConfig:
    """The config of member `i`: the ensemble's run with seed + i, in `<root>/member_<i>/`."""
    member = copy.deepcopy(cfg)
    with open_dict(member):
        del member["ensemble"]  # a member is a plain nnlab-train run
        # data.seed defaults to ${seed}: pin it first, so every member gets the same split.
        member.data.seed = int(cfg.data.seed)
        member.seed = int(cfg.seed) + i
        if vary == "bootstrap":  # bagging: the same split, a different resample of its train rows
            member.data_edit = with_bootstrap(member.get("data_edit"), seed=int(cfg.seed) + i)
        member.paths.output_dir = str(root / f"member_{i}")
        if i > 0 and "baselines" in member:  # one split for all members: member 0 fits its baselines
            member.baselines = []
        if (member.get("callbacks") or {}).get("model_checkpoint"):
            member.callbacks.model_checkpoint.dirpath = None  # each member's own <member>/checkpoints
    return member


def with_bootstrap(edits: DictConfig | None, seed: int) -> DictConfig:
    """The row edits `edits` with the bootstrap seeded `seed`: a listed bootstrap keeps its place;
    otherwise configs/data_edit/bootstrap.yaml's goes at the end of the split stage."""
    from importlib.resources import files

    from hydra.utils import get_object

    from nnlab.data.edits import STAGES

    items = [(str(k), v) for k, v in (edits or {}).items()]
    if not any(k == "bootstrap" and v for k, v in items):
        node = OmegaConf.load(files("nnlab.configs").joinpath("data_edit", "bootstrap.yaml")).bootstrap
        items = [(k, v) for k, v in items if k != "bootstrap"]  # (a bootstrap set to null)
        split = STAGES.index("split")
        later = [i for i, (_, v) in enumerate(items) if v and STAGES.index(get_object(v._target_).stage) > split]
        items.insert(later[0] if later else len(items), ("bootstrap", node))
    merged = OmegaConf.create(dict(items))
    merged.bootstrap.seed = seed
    return merged


def tested_checkpoint(member_dir: Path, test_ckpt: str) -> Path:
    """The checkpoint the member's test metrics come from: best.ckpt (trainer.test_ckpt=best, when
    it was written), else last.ckpt."""
    ckpts = member_dir / "checkpoints"
    for name in (["best"] if test_ckpt == "best" else []) + ["last"]:
        if (ckpts / f"{name}.ckpt").is_file():
            return ckpts / f"{name}.ckpt"
    raise UserError(f"No checkpoint in {ckpts}: keep callbacks.model_checkpoint on (with save_last: true).")


@dataclass
class Outputs:
    """One member's answers on one split: class probabilities (N, C) or predictions (N, D)."""

    values: Any  # np.ndarray
    y: Any  # np.ndarray, (N,) class indices or (N, D) targets


def member_outputs(run: Any, split: str) -> Outputs:
    """Softmax of the logits (classification) or the raw outputs (regression) of a restored run."""
    import torch

    outs, ys = [], []
    with torch.no_grad():
        for x, y in run.data.eval_batches(split):
            with run.task.precision.autocast():
                outs.append(run.model(x).float())
            ys.append(y)
    out, y = torch.cat(outs), torch.cat(ys)
    if run.classifier:
        if out.ndim != 2 or out.shape[1] != run.data.num_outputs:
            raise UserError(
                f"An ensemble combines class scores of shape (rows, {run.data.num_outputs}), but this model "
                f"outputs {tuple(out.shape)}. Ensemble a supervised run (task=supervised)."
            )
        return Outputs(torch.softmax(out, dim=1).cpu().numpy(), y.cpu().numpy())
    return Outputs(out.reshape(len(out), -1).cpu().numpy(), y.reshape(len(y), -1).cpu().numpy())


def score(values: Any, y: Any, kind: str, num_classes: int) -> dict[str, float]:
    """Test metrics of one model's outputs (probabilities, classes or predictions)."""
    from nnlab.analysis.ensembles import classification_scores, regression_scores

    if kind == "classification":
        pred = values.argmax(axis=1) if values.ndim == 2 else values
        return classification_scores(pred, y, num_classes)
    return regression_scores(values, y)


def ensemble(cfg: DictConfig) -> dict[str, float]:
    """Train the members `cfg.ensemble` asks for, combine them, write and print the comparison."""
    import numpy as np
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    from nnlab.analysis.ensembles import combine_classification, combine_regression
    from nnlab.checks.validation import validate_config
    from nnlab.runs.pipeline import train_once
    from nnlab.runs.posthoc import Report
    from nnlab.runs.restore import load_run

    try:
        plan = instantiate(cfg.ensemble)
    except InstantiationException as e:  # the plan's own message, not Hydra's wrapping of it
        if isinstance(e.__cause__, UserError):
            raise e.__cause__ from None
        raise
    validate_config(cfg)
    if (cfg.get("data_edit") or {}).get("kfold"):
        raise ConfigValueError("data_edit lists kfold: an ensemble trains on one split. Remove kfold from data_edit.")
    if not (cfg.get("callbacks") or {}).get("model_checkpoint"):
        raise ConfigValueError(
            "callbacks.model_checkpoint is off, but the ensemble reloads each member from its checkpoint. "
            "Keep it on: drop callbacks=none or callbacks.model_checkpoint=null from the command."
        )
    # Loading the dataset once up front costs little and refuses a mismatched combination (a vote
    # on a regression) before any member trains.
    from nnlab.runs.build import build_data

    kind = build_data(cfg, augment=False).kind
    plan.check_kind(kind)
    root = Path(cfg.paths.output_dir)
    report = Report(root, cfg)

    members_cfg = []
    for i in range(plan.members):
        member = member_config(cfg, i, plan.vary, root)
        log.info("Ensemble: member %d of %d (seed %d, vary=%s)", i + 1, plan.members, member.seed, plan.vary)
        train_once(member, show_table=False)
        members_cfg.append(member)

    val, test, num_classes = [], [], 0
    for member in members_cfg:
        # Each member is rebuilt from its config composed here, from the user's own command line;
        # only the tensors come from its checkpoint. (With trainer.resume=auto the checkpoints in
        # the ensemble's folder may predate this command, or have been put there by someone else:
        # the configs stored in them are never built.)
        run = load_run(
            tested_checkpoint(Path(member.paths.output_dir), cfg.trainer.get("test_ckpt", "best")),
            device=cfg.trainer.device,
            config=member,
        )
        val.append(member_outputs(run, "val"))
        test.append(member_outputs(run, "test"))
        num_classes = run.data.num_outputs
    for split, outs in (("val", val), ("test", test)):
        if any(not np.array_equal(o.y, outs[0].y) for o in outs):
            raise UserError(f"The members' {split} splits differ, so their answers cannot be combined row by row.")
    val_y, test_y = val[0].y, test[0].y
    val_v = np.stack([o.values for o in val])
    test_v = np.stack([o.values for o in test])

    metrics: dict[str, float] = {}
    rows: list[dict[str, Any]] = []
    members = [score(v, test_y, kind, num_classes) for v in test_v]
    for i, m in enumerate(members):
        metrics.update({f"member_{i}/test/{k}": v for k, v in m.items()})
        rows.append({"model": f"member {i} (seed {int(cfg.seed) + i})", **{f"test {k}": v for k, v in m.items()}})
    names = list(members[0])
    summary = {
        "mean": {k: float(np.mean([m[k] for m in members])) for k in names},
        "best": {k: (min if k in LOWER_IS_BETTER else max)(m[k] for m in members) for k in names},
    }
    for which, m in summary.items():
        metrics.update({f"members/{which}/test/{k}": v for k, v in m.items()})
        rows.append({"model": f"members: {which}", **{f"test {k}": v for k, v in m.items()}})
    combine = combine_classification if kind == "classification" else combine_regression
    for method in plan.combine:
        m = score(combine(method, val_v, val_y, test_v), test_y, kind, num_classes)
        metrics.update({f"ensemble/{method}/test/{k}": v for k, v in m.items()})
        rows.append({"model": f"ensemble: {method}", **{f"test {k}": v for k, v in m.items()}})

    # How the mean ensemble grows: its test metric with the first k members, k = 1 .. N.
    for k in range(1, plan.members + 1):
        grown = score(combine("mean", val_v[:k], val_y, test_v[:k]), test_y, kind, num_classes)
        report.scalars({f"ensemble_size/mean/test/{names[0]}": grown[names[0]]}, step=k)
    report.table("ensemble", rows, title=f"{plan.members} members (vary={plan.vary}): test metrics")
    report.figure("ensemble", bar_chart(rows, f"test {names[0]}", plan))
    return report.finish(metrics)


def bar_chart(rows: list[dict[str, Any]], column: str, plan: EnsemblePlan):
    """One bar per row of the table: members (blue), their mean and best (grey), combinations (red)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [r["model"].split(" (")[0].replace(": ", " ") for r in rows]
    values = [r[column] for r in rows]
    colors = [
        "C0" if r["model"].startswith("member ") else "grey" if r["model"].startswith("members") else "C3" for r in rows
    ]
    fig, ax = plt.subplots(figsize=(max(6, 0.7 * len(rows)), 4), dpi=100)
    ax.bar(range(len(rows)), values, color=colors)
    for i, v in enumerate(values):
        ax.text(i, v, f"{v:.4g}", ha="center", va="bottom", fontsize=7)
    # Zoom in: the differences between members and ensembles are small next to the values.
    low, high = min(values), max(values)
    pad = 0.5 * (high - low) or 0.05 * abs(high) or 0.1
    ax.set_ylim(max(0.0, low - pad), high + pad)
    ax.set_xticks(range(len(rows)), labels, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel(column)
    ax.set_title(
        f"Ensemble of {plan.members} (vary={plan.vary}): members, their mean and best, combinations", fontsize=9
    )
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


@hydra.main(version_base="1.3", config_path="pkg://nnlab.configs", config_name="ensemble")
def main(cfg: DictConfig) -> None:
    guarded(lambda: ensemble(cfg), output_dir=cfg.paths.output_dir)


# nnlab.cli.overrides.explain, which knows train.yaml's keys, plus the keys of `ensemble`.
explain_override = explainer("ensemble", EnsemblePlan)


def cli() -> None:
    """The `nnlab-ensemble` command: Hydra's `main`, with clearer composition errors (as nnlab-train)."""
    app.cli(main, explain_override)


if __name__ == "__main__":
    cli()
