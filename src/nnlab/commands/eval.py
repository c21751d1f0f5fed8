"""`nnlab-eval ckpt_path=<run>/checkpoints/best.ckpt` (also `python -m nnlab.commands.eval`): score a trained
run on a split of its own dataset, or of another dataset with the same input shape and classes.

    checkpoint -> the run's config, data, model (nnlab.runs.restore) -> task.evaluate(split)
    -> metrics.json, the task's figures (confusion matrix), TensorBoard, in outputs/eval/<time>/

    nnlab-eval ckpt_path=outputs/runs/<run>/checkpoints/best.ckpt                 # its test split
    nnlab-eval ckpt_path=... split=val
    nnlab-eval ckpt_path=... data=digits data.standardize=false data.test_fraction=0.5   # other data

A reinforcement-learning run (env=...) is scored on deterministic episodes of its environment:
the split's seeds (val or test), as many as `episodes` (null: the run's own env.val_episodes or
env.test_episodes); its figures include an episode as a GIF.
"""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig

from nnlab.cli import app
from nnlab.cli.app import guarded
from nnlab.cli.overrides import explain
from nnlab.errors import UserError, check_choice, check_range

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Metrics of the checkpoint `cfg.ckpt_path` on `cfg.split` (of `cfg.data`, when set)."""
    from nnlab.runs.posthoc import Report
    from nnlab.runs.restore import checkpoint_of, load_run

    check_choice("split", cfg.split, SPLITS)
    run = load_run(checkpoint_of(cfg), data=cfg.get("data"), device=cfg.device, trust_config=cfg.trust_config)
    report = Report(cfg.paths.output_dir, cfg)
    if run.data.kind == "reinforcement":
        check_episodes(cfg, run.data)
    unit = "episodes" if run.data.kind == "reinforcement" else "rows"
    log.info("Evaluating on the %s split (%d %s)", cfg.split, run.data.size(cfg.split), unit)
    results = run.task.evaluate(run.data.eval_batches(cfg.split), detailed=True)
    for name, figure in getattr(run.task, "figures", dict)().items():
        report.figure(f"{cfg.split}_{name}", figure)
    return report.finish({f"{cfg.split}/{k}": v for k, v in results.items()})


def check_episodes(cfg: DictConfig, env) -> None:
    """An environment has no training split to score, and `episodes` sets how many are played."""
    if cfg.split == "train":
        raise UserError(
            "split=train: a reinforcement-learning run trains on episodes it plays as it learns, so there is no "
            "training split to score. Use split=test (the run's test seeds) or split=val."
        )
    if cfg.get("episodes") is not None:
        check_range("episodes", cfg.episodes, 1)
        env.episodes[cfg.split] = int(cfg.episodes)


@hydra.main(version_base="1.3", config_path="pkg://nnlab.configs", config_name="eval")
def main(cfg: DictConfig) -> None:
    guarded(lambda: evaluate(cfg), output_dir=cfg.paths.output_dir)


def cli() -> None:
    """The `nnlab-eval` command."""
    app.cli(main, explain)


if __name__ == "__main__":
    cli()
