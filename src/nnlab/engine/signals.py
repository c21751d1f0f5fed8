"""Stopping a run cleanly on Ctrl-C or SIGTERM: at the next step boundary, with last.ckpt saved."""

from __future__ import annotations

import logging
import signal
from typing import Any

from nnlab.errors import Stopped

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopSignals:
    """The first Ctrl-C (SIGINT) or SIGTERM (what a cluster scheduler sends at the time limit or
    on preemption, before it kills) is recorded in `requested`; the trainer reads it at each
    step boundary, saves last.ckpt and exits with 128 + the signal's number. A second one
    raises `Stopped` at once.

    `install` replaces the handlers for the length of a fit and `restore` puts the previous
    ones back. A request outlives the fit it arrived in (nothing resets it)."""

    def __init__(self) -> None:
        self.requested = 0  # the signal that asked to stop; 0 while none has
        self._previous: dict[int, Any] = {}  # the handlers `install` replaced

    def install(self) -> None:
        self._previous = {}
        for signum in STOP_SIGNALS:
            try:
                self._previous[signum] = signal.signal(signum, self._handle)
            except ValueError:  # not the main thread (e.g. a thread-based launcher): keep the defaults
                break

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise Stopped(signum)
        self.requested = signum
        cause = Stopped(signum).cause
        again = "press Ctrl-C again" if signum == signal.SIGINT else f"a second {cause}"
        log.warning("%s: stopping after this step and saving last.ckpt (%s stops at once).", cause, again)
