"""Optuna searches that continue where they stopped: rerun the same command to finish a search.

Hydra's Optuna sweeper (hydra-optuna-sweeper 1.2) keeps its study in `storage` and reloads it
when it exists, but then runs `n_trials` *more* trials numbered from job 0: rerunning a 20-trial
search stopped after 12 would run 20 new trials into folders 0..19, over the 12 finished ones.
(The lightning-hydra-template documents resuming a search as impossible.)
`ResumableOptunaSweeperImpl` makes `n_trials` the size of the finished study. Before the search:

1. it creates the folder of an SQLite storage (the plugin creates the sweep folder only when it
   launches the first trial, after opening the database);
2. it marks the trials an interrupted sweep left RUNNING (Ctrl-C, a killed job) as FAIL: they
   never reported a value, and a RUNNING trial would otherwise stay in the study for good;
3. it runs only `n_trials - (finished trials)` new trials, numbered after the trials and trial
   folders already there, so trial k runs in folder k and nothing is overwritten;
4. it seeds the sampler with `seed + (trials in the study)`: with the first run's seed it would
   draw the first run's random start-up trials again.

A failed or interrupted trial counts as finished: at the end the study holds `n_trials` trials.
Run one sweep per study at a time: a second sweep on the same study would see the first one's
running trials as stale and mark them FAIL.

Hydra instantiates sweepers only from the `hydra_plugins` namespace package, so configs name
`hydra_plugins.nnlab_sweeper.ResumableOptunaSweeper`, a thin wrapper that imports this module
(and Optuna) only when a search starts.
"""

from __future__ import annotations

import logging
from pathlib import Path

import optuna
from hydra.utils import instantiate
from hydra_plugins.hydra_optuna_sweeper._impl import OptunaSweeperImpl
from optuna.trial import TrialState
from sqlalchemy.engine.url import make_url

from nnlab.cli.app import guarded
from nnlab.errors import UserError

log = logging.getLogger(__name__)


class ResumableOptunaSweeperImpl(OptunaSweeperImpl):
    """The plugin's sweeper, continuing the study in `storage` named `study_name` (see the module)."""

    def sweep(self, arguments: list[str]) -> None:
        # A mistake (continuing a study in the other direction, no trial completing) ends in one
        # `Error:` paragraph and exit code 2, Ctrl-C in exit code 130, as in nnlab-train's runs.
        try:
            guarded(lambda: self.resume_and_sweep(arguments))
        except SystemExit as e:
            if e.code == 130 and self.storage is not None and self.study_name is not None:
                log.warning("Study %s is saved in %s: the same command continues it.", self.study_name, self.storage)
            raise

    def resume_and_sweep(self, arguments: list[str]) -> None:
        resumable = self.storage is not None and self.study_name is not None
        if resumable:
            self.resume()
        try:
            super().sweep(arguments)
        except ValueError:
            # The plugin ends by reading study.best_trial, which raises "Record does not exist."
            # when no trial completed: say that instead.
            if not resumable or self.completed_trials() > 0:
                raise
            raise UserError(
                f"No trial of study '{self.study_name}' completed: each failed (their errors are above, "
                f"and in status.json of each trial folder in {self.sweep_dir})."
            ) from None

    def resume(self) -> None:
        """Load (or create) the study, fail its stale trials, and set how many trials to run and
        from which job number."""
        make_storage_folder(self.storage)
        directions = [d.lower() for d in self._get_directions()]
        try:
            study = optuna.load_study(study_name=self.study_name, storage=self.storage)
        except KeyError:  # optuna's "Record does not exist.": a new study
            study = optuna.create_study(study_name=self.study_name, storage=self.storage, directions=directions)
        stored = [d.name.lower() for d in study.directions]
        if stored != directions:
            raise UserError(
                f"Study '{self.study_name}' in {self.storage} was created to {', '.join(stored)}, not "
                f"{', '.join(directions)}. Keep hydra.sweeper.direction as it was, or start a new study "
                "with another hydra.sweep.dir (or hydra.sweeper.study_name)."
            )
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            study.tell(trial.number, state=TrialState.FAIL)
            log.warning("Trial %d was left running by an interrupted sweep: marked FAIL", trial.number)

        trials = study.get_trials(deepcopy=False)
        finished = [t for t in trials if t.state.is_finished()]
        failed = sum(t.state == TrialState.FAIL for t in finished)
        to_run = max(self.n_trials - len(finished), 0)
        log.info(
            "Study %s: %d of %d trials done (%d failed); running %d more",
            self.study_name,
            len(finished),
            self.n_trials,
            failed,
            to_run,
        )
        self.n_trials = to_run
        self.job_idx = max(len(trials), next_trial_folder(Path(self.sweep_dir)))
        if trials:
            self.reseed_sampler(offset=len(trials))

    def reseed_sampler(self, offset: int) -> None:
        """Seed the sampler with `seed + offset`. Seeded as in the first run, it would draw the
        first run's random (start-up) trials again; the offset keeps a continued search
        reproducible without repeating them."""
        sampler = self.config.hydra.sweeper.get("sampler")
        if sampler is None or sampler.get("seed") is None or sampler.get("_partial_"):
            return  # unseeded: draws differ anyway; a partial (grid) sampler skips done cells itself
        self.sampler = instantiate(sampler, seed=sampler.seed + offset)

    def completed_trials(self) -> int:
        study = optuna.load_study(study_name=self.study_name, storage=self.storage)
        return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


def make_storage_folder(storage: object) -> None:
    """Create the folder of an `sqlite:///path/to/study.db` storage (SQLite creates the file, not
    its folders). A relative path is relative to the working directory."""
    if not isinstance(storage, str) or not storage.startswith("sqlite:"):
        return
    database = make_url(storage).database
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)


def next_trial_folder(sweep_dir: Path) -> int:
    """One past the highest numbered trial folder (hydra.sweep.subdir=${hydra.job.num}), else 0."""
    numbers = [int(p.name) for p in sweep_dir.glob("*") if p.is_dir() and p.name.isdigit()]
    return max(numbers, default=-1) + 1
