"""`nnlab.cli.compose_ahead`: a forked child composes the config while `nnlab-train` imports torch.
The run it starts is the run Hydra's own compose starts (same config files, same errors), and it
is used only where it cannot change what runs."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import TINY, cli_env
from nnlab.cli import compose_ahead

# `nnlab-train <overrides>` in a subprocess, counting the composes of the process that trains;
# "off" makes `usable` say no, so Hydra composes as it did before compose_ahead.
SCRIPT = """
import sys
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from nnlab.cli import compose_ahead
from nnlab.commands.train import cli

mode, count_file, *sys.argv[1:] = sys.argv[1:]
if mode == "off":
    compose_ahead.usable = lambda argv: False
load, calls = ConfigLoaderImpl.load_configuration, []
def counted(*args, **kwargs):
    calls.append(1)
    return load(*args, **kwargs)
ConfigLoaderImpl.load_configuration = counted
try:
    cli()
finally:
    if compose_ahead.os.getpid() == PARENT:
        open(count_file, "w").write(str(len(calls)))
"""

two_cores = pytest.mark.skipif(not compose_ahead.usable(["a=b"]), reason="needs os.fork and a second core")


def train(mode: str, overrides: list[str], tmp_path: Path) -> tuple[subprocess.CompletedProcess[str], int]:
    count = tmp_path / f"{mode}.count"
    script = f"PARENT = __import__('os').getpid()\n{SCRIPT}"
    result = subprocess.run(
        [sys.executable, "-c", script, mode, str(count), *overrides],
        cwd=tmp_path,
        env=cli_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=180,
    )
    return result, int(count.read_text()) if count.exists() else -1


@two_cores
def test_the_run_gets_the_config_hydra_composes_without_composing_it_itself(tmp_path: Path) -> None:
    runs = {}
    for mode in ("on", "off"):
        run_dir = tmp_path / mode
        result, composes = train(mode, [*TINY, "model.hidden_sizes=[32]", f"hydra.run.dir={run_dir}"], tmp_path)
        assert result.returncode == 0, result.stderr[-2000:]
        assert composes == (0 if mode == "on" else 1)
        runs[mode] = run_dir
    for name in ("config.yaml", "overrides.yaml", "hydra.yaml"):
        on, off = ((runs[m] / ".hydra" / name).read_text() for m in ("on", "off"))
        assert on.replace(str(runs["on"]), "RUN") == off.replace(str(runs["off"]), "RUN"), name
    assert "- 32" in (runs["on"] / ".hydra" / "config.yaml").read_text()


@two_cores
@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("trainer.max_epoch=1", "Error: Unknown key 'trainer.max_epoch'"),
        ("model=mpl", "Error: Unknown choice model=mpl"),
        ("trainer.max_epochs=abc", "trainer.max_epochs"),
    ],
)
def test_a_bad_override_gets_the_same_error_either_way(override: str, message: str, tmp_path: Path) -> None:
    results = {mode: train(mode, [override, f"hydra.run.dir={tmp_path / mode}"], tmp_path)[0] for mode in ("on", "off")}
    assert results["on"].returncode == results["off"].returncode == 2
    assert message in results["on"].stderr
    assert results["on"].stderr.replace("/on", "/X") == results["off"].stderr.replace("/off", "/X")


@pytest.mark.parametrize(
    ("argv", "usable"),
    [
        (["optimizer.lr=0.01", "+extra=1", "~callbacks.progress"], True),
        ([], True),
        (["-m", "optimizer.lr=0.1,0.01"], False),
        (["--cfg", "job"], False),
        (["--help"], False),
        (["hydra.mode=MULTIRUN"], False),
        (["hydra.searchpath=[file:///tmp/mine]"], False),
        (["--config-dir", "/tmp/mine"], False),
    ],
)
def test_only_single_runs_of_nnlabs_configs_compose_ahead(argv: list[str], usable: bool, monkeypatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert compose_ahead.usable(argv) is (usable and hasattr(os, "fork"))
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert compose_ahead.usable(argv) is False  # one core: the child would only take turns with torch's import


def test_the_config_serves_only_the_call_it_was_composed_for() -> None:
    """Positional and keyword spellings of one call give one key; another call, another key."""

    def load(self, config_name, overrides, run_mode, from_shell=True, validate_sweep_overrides=True):  # noqa: ANN001, ANN202
        return None

    key = compose_ahead._call_key(load, (None, "train", ["a=1"], "RUN"), {})
    assert key == compose_ahead._call_key(
        load, (None,), {"config_name": "train", "overrides": ["a=1"], "run_mode": "RUN"}
    )
    assert key != compose_ahead._call_key(load, (None, "train", ["a=2"], "RUN"), {})
    assert key != compose_ahead._call_key(load, (None, "train", ["a=1"], "MULTIRUN"), {})


def fork_child(main) -> tuple[int, int]:  # noqa: ANN001
    read_fd, write_fd = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(read_fd)
        compose_ahead._compose_and_exit(main, write_fd)
    os.close(write_fd)
    return read_fd, child


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_the_child_never_runs_the_job_and_a_stuck_child_is_killed(tmp_path: Path) -> None:
    """Should a Hydra version reach its job without composing through load_configuration, the
    child exits at run_job; a child still composing after the wait is killed; either way
    nothing is sent and this process composes itself."""
    marker = tmp_path / "ran"

    def runs_the_job() -> None:
        import hydra._internal.hydra

        hydra._internal.hydra.run_job(task_function=lambda cfg: marker.write_text("ran"))
        marker.write_text("ran")

    read_fd, child = fork_child(runs_the_job)
    assert compose_ahead._receive(read_fd, child) == b""
    assert not marker.exists()

    read_fd, child = fork_child(lambda: time.sleep(60))
    started = time.monotonic()
    assert compose_ahead._receive(read_fd, child, timeout_s=0.5) == b""
    assert time.monotonic() - started < 10
    with pytest.raises(ChildProcessError):  # (reaped)
        os.waitpid(child, 0)
