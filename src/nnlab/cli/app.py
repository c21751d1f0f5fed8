"""What every nnlab command shares around its Hydra app: one-paragraph errors, Ctrl-C, exit codes.

    nnlab-train, nnlab-lr-find, ...  ->  cli(main, explain)  ->  @hydra.main main(cfg)  ->  guarded(body)

A user's mistake (a `UserError`) ends with `Error: <message>` on stderr and exit code 2, and so
does a write the operating system refused (a full disk, a quota, a read-only mount:
`nnlab.cli.write_errors`); a Ctrl-C with exit code 130 (a SIGTERM during training: 143), and a bug
keeps its traceback. `HYDRA_FULL_ERROR=1` shows the traceback of everything. `guarded` also holds
the lock of the command's run folder (`nnlab.runs.runfolder`) while the command runs.
"""

from __future__ import annotations

import gc
import io
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from hydra.errors import CompactHydraException, InstantiationException

from nnlab.cli import compose_ahead
from nnlab.cli.write_errors import write_error_message, write_status_anyway
from nnlab.errors import Stopped, UserError
from nnlab.runs import runfolder

log = logging.getLogger(__name__)
T = TypeVar("T")


def user_error_message(error: BaseException, folder: str | Path | None = None) -> str | None:
    """The message for a mistake of the user's or a write the operating system refused (naming
    its file, else `folder`), or None for a bug (which keeps its traceback)."""
    if isinstance(error, InstantiationException) and error.__cause__ is not None:
        error = error.__cause__  # (raised in a constructor Hydra called)
    if isinstance(error, UserError):
        return str(error)
    return write_error_message(error, folder)


class TrialFailed(CompactHydraException):
    """A sweep trial ended with a user error: raised (instead of exiting) so that Hydra records
    the trial as failed and the sweep goes on with the others. When the sweeper then reports
    the failed trial, Hydra prints only the message of a `CompactHydraException` (no
    traceback) and exits with status 1."""


def trial_failed(message: str, output_dir: str | Path) -> TrialFailed:
    """Which trial of the sweep failed, why, and where to see every trial."""
    from hydra.core.hydra_config import HydraConfig

    hydra_cfg = HydraConfig.get()
    return TrialFailed(
        f"Trial {hydra_cfg.job.num} of the sweep ({' '.join(hydra_cfg.overrides.task)}) failed: {message} "
        f"`nnlab-report {hydra_cfg.sweep.dir}` shows every trial with its status and error (this one's is in "
        f"{Path(output_dir) / 'status.json'})."
    )


def guarded(body: Callable[[], T], interrupted: str = "", output_dir: str | None = None) -> T:
    """Run a command's body inside its Hydra `main`: exit 2 with one paragraph for a user
    error; on Ctrl-C exit 130 after logging "Stopped by Ctrl-C." and `interrupted` (on a
    SIGTERM the trainer turned into `Stopped`, 143 and "Stopped by SIGTERM.").

    `output_dir` is the command's run folder: it is locked first (`nnlab.runs.runfolder`: a second
    process into a folder in use stops with one paragraph, before writing anything there) and
    unlocked when the command ends. A command refused before it wrote anything leaves no folder
    behind (`runfolder.discard_if_unused`; outside sweeps).

    In a sweep (`-m`) a failing trial must not end the sweep: its error is printed and written
    to the trial's `status.json` (with `output_dir`), then raised as `TrialFailed`, which Hydra's
    sweepers record as a failed job before running the remaining trials.
    """
    StartupStderr.release()
    started = time.time()
    lock: runfolder.RunFolderLock | None = None
    try:
        if output_dir is not None:
            lock = runfolder.lock_run_folder(output_dir)
        return body()
    except KeyboardInterrupt as e:
        stop = e if isinstance(e, Stopped) else Stopped(signal.SIGINT)
        if lock is not None:
            write_status_anyway(output_dir, "interrupted", started)
        log.warning("%s", f"Stopped by {stop.cause}. {interrupted}".strip())
        sys.exit(128 + stop.signum)
    except Exception as e:
        message = user_error_message(e, output_dir)
        if output_dir is not None and in_sweep():
            from hydra.core.hydra_config import HydraConfig

            overrides = list(HydraConfig.get().overrides.task)  # the trial's, for nnlab-report
            if lock is not None:  # (never into a folder another process holds)
                error = message or f"{type(e).__name__}: {e}"
                write_status_anyway(output_dir, "failed", started, error=error, overrides=overrides)
            if message is not None and os.environ.get("HYDRA_FULL_ERROR") != "1":
                print(f"Error: {message}", file=sys.stderr)
                raise trial_failed(message, output_dir) from None
            raise
        if message is None or os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        if output_dir is not None:
            # Before the message: not one line of this process may go into a folder it was refused,
            # and a folder it made for nothing goes away.
            runfolder.discard_if_unused(output_dir, lock)
        print(f"Error: {message}", file=sys.stderr)
        sys.exit(2)
    finally:
        if lock is not None:
            lock.release()


def in_sweep() -> bool:
    """True inside a trial of a Hydra multirun (`-m`)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def cli(
    main: Callable[[], object],
    explain: Callable[[str, list[str]], str | None],
    warm_up: Callable[[], None] | None = None,
) -> None:
    """Call a `@hydra.main` function, replacing Hydra's message for a misspelled key or an
    unknown choice with `explain(hydra's message, argv)` when it has a clearer one.

    `warm_up`: the imports the command makes before its first step (torch, the engine), made
    while a forked child composes the config (`nnlab.cli.compose_ahead`)."""
    held = StartupStderr.capture()
    try:
        with _one_compose(sys.argv[1:]), compose_ahead.composed_ahead(main, sys.argv[1:], warm_up):
            main()
    except SystemExit as e:
        if StartupStderr.active is held and e.code == 1 and os.environ.get("HYDRA_FULL_ERROR") != "1":
            better = explain(held.getvalue(), sys.argv[1:])
            if better:
                StartupStderr.release(replacement=f"Error: {better}\n")
                raise SystemExit(2) from None
        raise
    finally:
        StartupStderr.release()
        # The command is done: spare the interpreter's exit a garbage collection over every object
        # torch and its compiler stack created on import (a noticeable wait at every command's end).
        gc.freeze()


@contextmanager
def _one_compose(argv: list[str]) -> Iterator[None]:
    """Hydra composes a command's whole config twice before running it: once (`Hydra.get_mode`)
    only to read `hydra.mode`, then for the run. nnlab's own configs never set hydra.mode
    (tests/checks/test_configs.py checks every file), so unless the command line sets it or brings in
    configs of the user's (a config dir or path, a search path), the first compose can only
    answer "not set": it is skipped, and with it a share of every launch. Hydra then runs in the
    mode its flags ask for (-m or not), as it does when the answer is "not set"."""
    from hydra._internal.hydra import Hydra

    if compose_ahead.own_configs(argv) or not callable(getattr(Hydra, "get_mode", None)):
        yield
        return
    get_mode = Hydra.get_mode
    Hydra.get_mode = lambda self, config_name, overrides: None
    try:
        yield
    finally:
        Hydra.get_mode = get_mode


class StartupStderr(io.StringIO):
    """Holds what Hydra writes to stderr before it hands `main` a config.

    If composition fails, `cli` replaces Hydra's message for a misspelled key or an unknown
    choice with a clearer one; once `main` starts, everything held is passed through as is.
    """

    real = sys.stderr
    active: StartupStderr | None = None

    @classmethod
    def capture(cls) -> StartupStderr:
        cls.real, cls.active = sys.stderr, cls()
        sys.stderr = cls.active
        return cls.active

    @classmethod
    def release(cls, replacement: str | None = None) -> None:
        """Restore stderr and write what was held to it (or `replacement` instead); idempotent."""
        if cls.active is not None:
            held, sys.stderr, cls.active = cls.active.getvalue(), cls.real, None
            sys.stderr.write(held if replacement is None else replacement)
