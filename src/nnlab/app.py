"""What every nnlab command shares around its Hydra app: one-paragraph errors, Ctrl-C, exit codes.

    nnlab-train, nnlab-lr-find, ...  ->  cli(main, explain)  ->  @hydra.main main(cfg)  ->  guarded(body)

A user's mistake (a `UserError`) ends with `Error: <message>` on stderr and exit code 2, a
Ctrl-C with exit code 130 (a SIGTERM during training: 143), and a bug keeps its traceback.
`HYDRA_FULL_ERROR=1` shows the traceback of everything.
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
from typing import TypeVar

from hydra.errors import InstantiationException

from nnlab.errors import Stopped, UserError
from nnlab.runinfo import write_status

log = logging.getLogger(__name__)
T = TypeVar("T")


def user_error_message(error: BaseException) -> str | None:
    """The message for a mistake of the user's, or None for a bug (which keeps its traceback)."""
    if isinstance(error, UserError):
        return str(error)
    if isinstance(error, InstantiationException) and isinstance(error.__cause__, UserError):
        return str(error.__cause__)
    return None


class TrialFailed(Exception):
    """A sweep trial ended with a user error: raised (instead of exiting) so that Hydra records
    the trial as failed and the sweep goes on with the others."""


def guarded(body: Callable[[], T], interrupted: str = "", output_dir: str | None = None) -> T:
    """Run a command's body inside its Hydra `main`: exit 2 with one paragraph for a user
    error; on Ctrl-C exit 130 after logging "Stopped by Ctrl-C." and `interrupted` (on a
    SIGTERM the trainer turned into `Stopped`, 143 and "Stopped by SIGTERM.").

    In a sweep (`-m`) a failing trial must not end the sweep: its error is printed and written
    to the trial's `status.json` (with `output_dir`), then raised as `TrialFailed`, which Hydra's
    sweepers record as a failed job before running the remaining trials.
    """
    StartupStderr.release()
    started = time.time()
    try:
        return body()
    except KeyboardInterrupt as e:
        stop = e if isinstance(e, Stopped) else Stopped(signal.SIGINT)
        if output_dir is not None:
            write_status(output_dir, "interrupted", started)
        log.warning("%s", f"Stopped by {stop.cause}. {interrupted}".strip())
        sys.exit(128 + stop.signum)
    except Exception as e:
        message = user_error_message(e)
        if output_dir is not None and in_sweep():
            from hydra.core.hydra_config import HydraConfig

            overrides = list(HydraConfig.get().overrides.task)  # the trial's, for nnlab-report
            write_status(
                output_dir, "failed", started, error=message or f"{type(e).__name__}: {e}", overrides=overrides
            )
            if message is not None and os.environ.get("HYDRA_FULL_ERROR") != "1":
                print(f"Error: {message}", file=sys.stderr)
                raise TrialFailed(message) from None
            raise
        if message is None or os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"Error: {message}", file=sys.stderr)
        sys.exit(2)


def in_sweep() -> bool:
    """True inside a trial of a Hydra multirun (`-m`)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def cli(main: Callable[[], object], explain: Callable[[str, list[str]], str | None]) -> None:
    """Call a `@hydra.main` function, replacing Hydra's message for a misspelled key or an
    unknown choice with `explain(hydra's message, argv)` when it has a clearer one."""
    held = StartupStderr.capture()
    try:
        with _one_compose(sys.argv[1:]):
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
        # torch and its compiler stack created on import (about 1 s on a 2-core machine).
        gc.freeze()


# Flags and override keys through which a command line can bring in a config that sets hydra.mode.
OWN_CONFIG_FLAGS = ("--config-dir", "-cd", "--config-path", "-cp", "--config-name", "-cn")
OWN_CONFIG_KEYS = ("hydra", "hydra.mode", "hydra.searchpath")


@contextmanager
def _one_compose(argv: list[str]) -> Iterator[None]:
    """Hydra composes a command's whole config twice before running it: once (`Hydra.get_mode`)
    only to read `hydra.mode`, then for the run. nnlab's own configs never set hydra.mode
    (tests/test_configs.py checks every file), so unless the command line sets it or brings in
    configs of the user's (a config dir or path, a search path), the first compose can only
    answer "not set": it is skipped, and with it ~0.1 s of every launch. Hydra then runs in the
    mode its flags ask for (-m or not), as it does when the answer is "not set"."""
    from hydra._internal.hydra import Hydra

    keys = [arg.split("=", 1)[0] for arg in argv]
    own_configs = any(key in OWN_CONFIG_FLAGS or key.lstrip("+~") in OWN_CONFIG_KEYS for key in keys)
    if own_configs or not callable(getattr(Hydra, "get_mode", None)):
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
