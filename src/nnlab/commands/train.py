"""`nnlab-train` (also `python -m nnlab.commands.train`): Hydra composes the config, `nnlab.runs.pipeline` runs it.

    seed -> data -> model -> task -> callbacks, logger, trainer -> fit -> test -> metrics.json

`main` returns the value of `optimized_metric`, so Hydra sweepers (grid, Optuna) can optimize
runs with no extra code.

This module imports no torch: the process that composes a sweep and hands its trials to a
launcher (joblib workers, SLURM jobs) never trains, so it does not pay for importing the engine.
"""

from __future__ import annotations

import copy
import gc
import sys
from collections.abc import Sequence
from pathlib import Path

import hydra
from omegaconf import DictConfig, open_dict

from nnlab.cli import app
from nnlab.cli.overrides import explain


@hydra.main(version_base="1.3", config_path="pkg://nnlab.configs", config_name="train")
def main(cfg: DictConfig) -> float | None:
    warm_up()  # torch and the engine: only in the process that trains
    from nnlab.runs import pipeline

    return pipeline.run(cfg)


def compose_run(overrides: Sequence[str], run_dir: str | Path, config_name: str = "train") -> DictConfig:
    """The config `nnlab-train <overrides>` hands to `main` (another command's with `config_name`:
    "lr_find", "attack", ...), with `run_dir` as its run folder: for running nnlab in-process
    (benchmarks, tests) without Hydra's launch.

    As Hydra does before calling a task function: set `hydra.runtime.output_dir` (which
    `paths.output_dir` interpolates), register the Hydra config so `${hydra:...}` and
    `HydraConfig.get()` resolve, then drop the `hydra` node.
    """
    from hydra import compose, initialize_config_module
    from hydra.core.hydra_config import HydraConfig

    run_dir = str(Path(run_dir).resolve())
    with initialize_config_module("nnlab.configs", version_base="1.3"):
        # Quoted: a path may hold characters of Hydra's override grammar (=, spaces, brackets).
        cfg = compose(config_name, overrides=[*overrides, f"hydra.run.dir='{run_dir}'"], return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = run_dir
    HydraConfig.instance().set_config(cfg)
    task_cfg = copy.deepcopy(cfg)
    with open_dict(task_cfg):
        del task_cfg["hydra"]
    return task_cfg


def warm_up() -> None:
    """What a run imports before its first step (torch and the engine; `cli` has it done while a
    forked child composes the config, `nnlab.cli.compose_ahead`), then `gc.freeze()`: the
    objects those imports made live as long as the process, so the cyclic collector stops
    scanning them. A full collection over them would otherwise come due during start-up and
    again while training (docs/benchmarks.md times it). Only on the import itself: in a sweep's
    later trials there is nothing new to freeze."""
    if "nnlab.runs.pipeline" in sys.modules:
        return
    import nnlab.runs.pipeline  # noqa: F401

    gc.freeze()


def cli() -> None:
    """The `nnlab-train` command: Hydra's `main`, with clearer composition errors."""
    app.cli(main, explain, warm_up)


if __name__ == "__main__":
    cli()
