"""User-facing errors: one paragraph that names the key or file and says how to fix it."""

from __future__ import annotations

import difflib
import math
import signal
from collections.abc import Iterable


class Stopped(KeyboardInterrupt):
    """A run stopped by a signal: Ctrl-C (SIGINT) or a scheduler's SIGTERM. A KeyboardInterrupt,
    so whatever handles Ctrl-C handles it; the command exits with 128 + `signum`."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    @property
    def cause(self) -> str:
        return "Ctrl-C" if self.signum == signal.SIGINT else signal.Signals(self.signum).name


class UserError(Exception):
    """A mistake in the user's config, command line or files.

    The entry point prints the message alone (no traceback, unless HYDRA_FULL_ERROR=1) and
    exits with status 2. Messages name the offending key or file and say how to fix it.
    """


class ConfigValueError(UserError, ValueError):
    """A config value out of its valid range or set of choices (raised by `check_*`)."""


class OptionError(ConfigValueError):
    """An option outside its valid range or set of choices (raised by `check_range` and
    `check_choice`): wrong whatever the data, so `nnlab.runs.build.preflight` can find it before
    the dataset is read."""


class DataMismatchError(ConfigValueError):
    """A model that cannot take the dataset it was given (raised when the model is built);
    `nnlab-train` names the model and data choices in front of the message."""


def did_you_mean(word: str, choices: Iterable[str], prefix: str = "") -> str:
    """ " Did you mean '<prefix>x'?" for the closest choice x, or "" when nothing is close."""
    close = difflib.get_close_matches(word, [str(c) for c in choices], n=1, cutoff=0.6)
    return f" Did you mean '{prefix}{close[0]}'?" if close else ""


def check_choice(key: str, value: object, choices: Iterable[str]) -> None:
    """Raise `OptionError` naming `key` unless `value` is one of `choices`."""
    choices = list(choices)
    if value not in choices:
        hint = did_you_mean(str(value), choices)
        names = ", ".join(str(c).lower() if isinstance(c, bool) else str(c) for c in choices)
        raise OptionError(f"{key}={value!r} is not a valid choice.{hint} Choose one of: {names}.")


def check_range(
    key: str,
    value: float,
    low: float | None = None,
    high: float | None = None,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
) -> None:
    """Raise `OptionError` naming `key` and the valid range unless low <= value <= high
    and `value` is a finite number (NaN compares False with everything, so it would pass)."""
    if high is None:
        wanted = f"{'>=' if low_inclusive else '>'} {low}"
    elif low is None:
        wanted = f"{'<=' if high_inclusive else '<'} {high}"
    else:
        wanted = f"in {'[' if low_inclusive else '('}{low}, {high}{']' if high_inclusive else ')'}"
    if isinstance(value, float) and not math.isfinite(value):
        raise OptionError(f"{key}={value} is not a finite number: it must be {wanted}.")
    too_low = low is not None and (value < low if low_inclusive else value <= low)
    too_high = high is not None and (value > high if high_inclusive else value >= high)
    if too_low or too_high:
        raise OptionError(f"{key}={value!r} is out of range: it must be {wanted}.")
