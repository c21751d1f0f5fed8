"""The run's log file, `<run>/train.log`: the file handler Hydra's job logging opens
(configs/hydra/job_logging/rich.yaml) before any of nnlab's code runs."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

# When this process's command started, near enough: every command imports nnlab.cli.app, which imports
# this module, before Hydra makes the run folder. A folder older than this was not made by this run.
STARTED = time.time()


class RunLogHandler(logging.FileHandler):
    """Python's `logging.FileHandler`, with two differences:

    - a line it cannot write (a full disk, a quota) costs one short line on stderr, once,
      instead of a "--- Logging error ---" traceback for every line logged afterwards; the run
      goes on, and its error (from the checkpoint or status.json that could not be written
      either) ends it in one paragraph. Errors that are not the operating system's (a bad
      format string: a bug) keep Python's report.
    - it records what was there before it opened its file, for `nnlab.runs.runfolder.discard_if_unused`
      (a command refused at start-up leaves the folder as it found it): whether it `created` the
      file, the names the folder held (`found`), and whether this process made the folder
      (`fresh_folder`: empty, and made after the process started; an empty folder of the user's
      is not fresh).
    """

    def __init__(
        self,
        filename: str,
        mode: str = "a",
        encoding: str | None = None,
        delay: bool = False,
        errors: str | None = None,
    ) -> None:
        folder = Path(filename).parent
        self.created = not Path(filename).exists()  # whether this process makes the file
        try:
            self.found = {p.name for p in folder.iterdir()}  # what the folder held before
            self.fresh_folder = folder.stat().st_mtime >= STARTED and not self.found
        except OSError:
            self.found, self.fresh_folder = {Path(filename).name}, False
        self.failed = False
        super().__init__(filename, mode=mode, encoding=encoding, delay=delay, errors=errors)

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        error = sys.exc_info()[1]
        if not isinstance(error, OSError):
            super().handleError(record)
            return
        if not self.failed:
            self.failed = True
            reason = error.strerror or type(error).__name__
            sys.stderr.write(f"nnlab: could not write {self.baseFilename} ({reason}); its later lines are lost.\n")

    def close(self) -> None:
        try:
            super().close()
        except OSError:  # the last buffered lines could not be written: reported already
            pass


def detach_logs(folder: str | Path) -> list[logging.FileHandler]:
    """Remove the root logger's file handlers that write into `folder` and close them: nothing
    more this process logs goes there. Returns them."""
    folder = Path(folder).resolve()
    root = logging.getLogger()
    ours: list[logging.FileHandler] = []
    for handler in list(root.handlers):
        if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename).resolve().parent == folder:
            root.removeHandler(handler)
            handler.close()
            ours.append(handler)
    return ours
