"""Mistakes on the command line, as a user meets them: `python -m nnlab.commands.train <bad input>`.

A user's mistake ends with exit status 2 and one line `Error: <message naming the key>` on
stderr, without a traceback (STYLE 9). Errors in composing the config (unknown option, unknown
key) come from Hydra's composition and exit non-zero too, naming the key and the choices.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from helpers import TINY, run_cli

# Each case is checked before any training starts, so each subprocess costs about the imports.
VALUE_ERRORS = [
    # (overrides, the key the message must name, more text the message must hold)
    (["trainer.max_epochs=abc"], "trainer.max_epochs", "int"),
    (["optimizer.lr=-0.1"], "optimizer.lr", "> 0"),
    (["model.dropout=1.5"], "model.dropout", "[0.0, 1.0)"),
    (["data.batch_size=0"], "data.batch_size", ">= 1"),
    (["trainer.device=tpu"], "trainer.device", "cpu"),
    (["trainer.device=cpu", "trainer.precision=16-mixed"], "trainer.precision", "bf16"),
    (["+model.foo=1"], "model.foo", "hidden_sizes"),  # lists the valid keys
    (["model.activation=rleu"], "model.activation", "Did you mean 'relu'?"),
    (["paths.data_dir=[1,2]"], "paths.data_dir", "Give a path"),
]


def assert_user_error(result, key: str) -> str:
    """Exit 2, a single `Error: ...` line on stderr naming `key`, no traceback anywhere."""
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ") and key in lines[0], lines[0]
    assert "Traceback" not in result.stdout + result.stderr
    return lines[0]


# The default suite runs the kinds of check once each (a type, a range with a did-you-mean, an
# unknown key, a pair of values); the rest, through the same code, in the slow battery.
IN_DEFAULT_SUITE = {"trainer.max_epochs=abc", "model.activation=rleu", "+model.foo=1", "trainer.precision=16-mixed"}


@pytest.mark.parametrize(
    "overrides, key, hint",
    [
        pytest.param(*c, id=" ".join(c[0]), marks=() if IN_DEFAULT_SUITE & set(c[0]) else pytest.mark.slow)
        for c in VALUE_ERRORS
    ],
)
def test_bad_value(overrides: list[str], key: str, hint: str, tmp_path: Path) -> None:
    result = run_cli([*TINY, *overrides, f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    message = assert_user_error(result, key)
    assert hint in message
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_negative_seed(tmp_path: Path) -> None:
    assert_user_error(run_cli([*TINY, "seed=-1", f"hydra.run.dir={tmp_path / 'run'}"], tmp_path), "seed")


def test_bad_in_memory(tmp_path: Path) -> None:
    result = run_cli([*TINY, "data.in_memory=maybe", f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert_user_error(result, "data.in_memory")


def test_fused_and_foreach_together(tmp_path: Path) -> None:
    args = [*TINY, "optimizer.fused=true", "+optimizer.foreach=true"]
    message = assert_user_error(run_cli([*args, f"hydra.run.dir={tmp_path / 'run'}"], tmp_path), "optimizer.fused")
    assert "optimizer: torch.optim.Adam rejects" in message
    assert "optimizer.fused=True, optimizer.foreach=True: `fused` and `foreach` cannot be `True` together." in message


def test_nesterov_without_momentum(tmp_path: Path) -> None:
    args = [*TINY, "optimizer=sgd", "optimizer.nesterov=true", "optimizer.momentum=0"]
    message = assert_user_error(run_cli([*args, f"hydra.run.dir={tmp_path / 'run'}"], tmp_path), "optimizer.")
    assert "optimizer.nesterov" in message or "optimizer.momentum" in message


@pytest.mark.parametrize("key", ["data.val_fraction", "data.test_fraction"])
def test_empty_split(key: str, tmp_path: Path) -> None:
    """A value the range check accepts either runs or is refused up front; it never crashes."""
    result = run_cli([*TINY, f"{key}=0", f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    if result.returncode == 0:
        assert (tmp_path / "run" / "metrics.json").is_file()
    else:
        assert_user_error(result, key)


def test_unknown_option_lists_the_choices(tmp_path: Path) -> None:
    result = run_cli(["model=mpl", f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "mpl" in output and "mlp" in output  # the bad choice and the valid one
    assert "Traceback" not in output
    assert not (tmp_path / "run").exists()  # composition failed before any run directory


def test_misspelled_key_is_named(tmp_path: Path) -> None:
    result = run_cli(["trainer.max_epoch=5", f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert result.returncode != 0
    assert "trainer.max_epoch" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_full_error_keeps_the_traceback(tmp_path: Path) -> None:
    """HYDRA_FULL_ERROR=1 is the documented way to see where a user error was raised."""
    args = [*TINY, "optimizer.lr=-0.1", f"hydra.run.dir={tmp_path / 'run'}"]
    result = run_cli(args, tmp_path, env={"HYDRA_FULL_ERROR": "1"})
    assert result.returncode != 0
    assert "Traceback" in result.stderr and "optimizer.lr" in result.stderr


def snapshot(run_dir: Path) -> dict[str, tuple[int, bytes]]:
    """Every file under run_dir: (mtime in ns, contents)."""
    return {
        p.relative_to(run_dir).as_posix(): (p.stat().st_mtime_ns, p.read_bytes())
        for p in sorted(run_dir.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(["model=mpl"], id="unknown option"),
        pytest.param(["optimizer.lr=-0.1"], id="bad value"),
        pytest.param(["model.dropout=1.5"], id="bad value checked by a constructor"),
    ],
)
def test_failed_run_leaves_an_earlier_run_untouched(bad: list[str], cli_run: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(cli_run, run_dir)  # copy2 keeps the mtimes
    before = snapshot(run_dir)
    assert ".hydra/config.yaml" in before and "checkpoints/last.ckpt" in before
    result = run_cli([*TINY, *bad, f"hydra.run.dir={run_dir}"], tmp_path)
    assert result.returncode != 0
    after = snapshot(run_dir)
    # The log is append-only: the failed attempt may add lines after the earlier run's.
    old_log, new_log = before.pop("train.log")[1], after.pop("train.log")[1]
    assert new_log.startswith(old_log)
    assert after == before


@pytest.mark.parametrize(
    "override, key",
    [  # the data module's and the task's options by default; the model's and the trainer's in the slow battery
        pytest.param("model.dropout=1.5", "model.dropout", marks=pytest.mark.slow),
        ("data.batch_size=0", "data.batch_size"),
        ("task.loss=crossentropy", "task.loss"),
        pytest.param("trainer.max_epochs=-1", "trainer.max_epochs", marks=pytest.mark.slow),
    ],
)
def test_bad_options_stop_the_run_before_the_dataset_is_read(override: str, key: str, tmp_path: Path) -> None:
    """MNIST is not on disk and may not be downloaded: a run that read the data would fail on
    that first. Each bad option is reported instead, so it was checked before any data was read."""
    args = ["data=mnist", "data.dataset.download=false", override, f"hydra.run.dir={tmp_path / 'run'}"]
    message = assert_user_error(run_cli(args, tmp_path), key)
    assert "MNIST" not in message
