"""`nnlab-train` (also `python -m nnlab.train`): Hydra composes the config, `nnlab.pipeline` runs it.

    seed -> data -> model -> task -> callbacks, logger, trainer -> fit -> test -> metrics.json

`main` returns the value of `optimized_metric`, so Hydra sweepers (grid, Optuna) can optimize
runs with no extra code.

This module imports no torch: the process that composes a sweep and hands its trials to a
launcher (joblib workers, SLURM jobs) never trains, so it does not pay for importing the engine.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from nnlab import app
from nnlab.overrides import explain


@hydra.main(version_base="1.3", config_path="pkg://nnlab.configs", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from nnlab import pipeline  # torch and the engine: only in the process that trains

    return pipeline.run(cfg)


def cli() -> None:
    """The `nnlab-train` command: Hydra's `main`, with clearer composition errors."""
    app.cli(main, explain)


if __name__ == "__main__":
    cli()
