"""Composing a run's config on a second core while the command imports torch.

    nnlab-train a=b -> fork -> child: Hydra composes the config, sends it through a pipe, exits
                       `-> this process: imports torch and the engine (`warm_up`), takes the
                           config, and runs Hydra's job with it, Hydra's own compose skipped

Before its first step a command spends most of its time importing torch: one core, under
Python's lock. Hydra's composition (reading and merging some thirty YAML files, applying the
overrides; docs/benchmarks.md times it) needs no torch, so a forked child does it meanwhile, through Hydra's own
code path. Only where that cannot change what runs: a single run (the command line holds
overrides only: no -m, --cfg, --help, ...) of nnlab's own configs (`own_configs`), where
`os.fork` exists and the process may use a second core. The child's config serves only the
call it was composed for (same config name, overrides and mode). If the child fails (a
misspelled key, say), nothing of it is shown: this process composes as it always did, so
Hydra's errors and nnlab's rewording of them are the same.

The pipe carries a pickle from the child this process forked a moment ago, never a file: it
is not input from elsewhere (`nnlab.checks.untrusted` guards those).
"""

from __future__ import annotations

import inspect
import os
import pickle
import select
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

# A compose takes a fraction of a second: a child still at it after this long is stuck, and this process composes.
WAIT_S = 30.0


# Flags and override keys through which a command line can bring in a config that sets hydra.mode.
OWN_CONFIG_FLAGS = ("--config-dir", "-cd", "--config-path", "-cp", "--config-name", "-cn")
OWN_CONFIG_KEYS = ("hydra", "hydra.mode", "hydra.searchpath")


def own_configs(argv: list[str]) -> bool:
    """Whether the command line brings in configs other than nnlab's own (a config dir, path or
    name, a search path) or sets hydra.mode itself."""
    keys = [arg.split("=", 1)[0] for arg in argv]
    return any(key in OWN_CONFIG_FLAGS or key.lstrip("+~") in OWN_CONFIG_KEYS for key in keys)


def usable(argv: list[str]) -> bool:
    """Whether the command line is a single run of nnlab's own configs on a machine where a
    forked child can compose on a core of its own."""
    if not hasattr(os, "fork") or any(arg.startswith("-") for arg in argv) or own_configs(argv):
        return False
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return cores >= 2


def _call_key(load: Callable[..., Any], args: tuple, kwargs: dict) -> tuple:
    """The arguments of a `load_configuration(self, config_name, overrides, run_mode, ...)` call,
    defaults filled in, as a comparable tuple (without `self`)."""
    bound = inspect.signature(load).bind(*args, **kwargs)
    bound.apply_defaults()
    values = list(bound.arguments.values())[1:]
    return tuple(tuple(v) if isinstance(v, list) else v for v in values)


def _compose_and_exit(main: Callable[[], object], pipe_fd: int) -> None:
    """In the child: run the command's Hydra entry until the config is composed, write
    (the call's arguments, the config) to `pipe_fd` and exit. Never returns; prints nothing;
    never runs the job (Hydra's `run_job` exits instead, should a Hydra version reach it
    without composing through `load_configuration`)."""
    import hydra._internal.hydra
    from hydra._internal.config_loader_impl import ConfigLoaderImpl

    quiet = os.open(os.devnull, os.O_WRONLY)
    os.dup2(quiet, 1)
    os.dup2(quiet, 2)
    hydra._internal.hydra.run_job = lambda *args, **kwargs: os._exit(1)
    load = ConfigLoaderImpl.load_configuration

    def send(*args: Any, **kwargs: Any) -> None:
        cfg = load(*args, **kwargs)
        with os.fdopen(pipe_fd, "wb") as pipe:
            pipe.write(pickle.dumps((_call_key(load, args, kwargs), cfg)))
        os._exit(0)

    ConfigLoaderImpl.load_configuration = send
    try:
        main()
    finally:
        os._exit(1)  # (composition failed: this process's own compose will say why)


def _receive(read_fd: int, child: int, timeout_s: float = WAIT_S) -> bytes:
    """What the child sent (b"" if it failed), once it has exited; a child still composing after
    `timeout_s` is killed and counts as failed."""
    chunks, deadline = [], time.monotonic() + timeout_s
    with os.fdopen(read_fd, "rb", buffering=0) as pipe:
        while select.select([pipe], [], [], max(0.0, deadline - time.monotonic()))[0]:
            chunk = pipe.read(1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
        else:
            os.kill(child, signal.SIGKILL)
            chunks = []
    os.waitpid(child, 0)
    return b"".join(chunks)


@contextmanager
def composed_ahead(main: Callable[[], object], argv: list[str], warm_up: Callable[[], None] | None) -> Iterator[None]:
    """Around a command's Hydra `main()`: when `usable`, fork a child that composes the config,
    run `warm_up` (the imports the command makes before its first step) meanwhile, and let
    Hydra's compose of that same call return the child's config."""
    if warm_up is None or not usable(argv):
        yield
        return
    from hydra._internal.config_loader_impl import ConfigLoaderImpl

    read_fd, write_fd = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(read_fd)
        _compose_and_exit(main, write_fd)
    os.close(write_fd)
    try:
        warm_up()
    finally:
        sent = _receive(read_fd, child)
    try:
        key, composed = pickle.loads(sent)
    except Exception:  # nothing sent (the child failed) or cut short: compose as always
        yield
        return
    load = ConfigLoaderImpl.load_configuration
    waiting = [composed]

    def load_configuration(*args: Any, **kwargs: Any) -> Any:
        if waiting and _call_key(load, args, kwargs) == key:
            return waiting.pop()
        return load(*args, **kwargs)

    ConfigLoaderImpl.load_configuration = load_configuration
    try:
        yield
    finally:
        ConfigLoaderImpl.load_configuration = load
