"""nnlab's resumable Optuna sweeper, under the name Hydra accepts in `hydra.sweeper._target_`.

Hydra instantiates a sweeper only from a module of the `hydra_plugins` namespace package
(`hydra.core.plugins.Plugins._instantiate`), and it imports every such module at each start-up.
So this module imports only the plugin's light config classes; the implementation, and Optuna
with it, load when a search starts (as the plugin's own `OptunaSweeper` does). See nnlab.runs.sweep.
"""

from typing import Any

try:
    from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper
except ImportError:  # the sweep extra is not installed: no Optuna searches, and no noise at start-up
    OptunaSweeper = None

if OptunaSweeper is not None:

    class ResumableOptunaSweeper(OptunaSweeper):
        """Hydra's Optuna sweeper that continues the study in `storage` (nnlab.runs.sweep)."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            from nnlab.runs.sweep import ResumableOptunaSweeperImpl

            self.sweeper = ResumableOptunaSweeperImpl(*args, **kwargs)
