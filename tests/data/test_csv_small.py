"""CSV files too small or too uniform to train on: a header only, one or two rows, one class,
a few rows that the default split fractions leave a split empty of (issue 22, item 9).

Each ends in one paragraph that names the file and says what to do, and each fix it suggests is
followed here to a run that trains.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from helpers import TINY, run_cli, train_tiny
from nnlab.cli.app import user_error_message
from nnlab.data import tabular
from nnlab.data.datamodule import DataModule
from nnlab.errors import UserError


def write(path: Path, header: str, rows: list[str]) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def csv_args(path: Path, target: str = "y") -> list[str]:
    return ["data=csv", f"data.dataset.path={path}", f"data.dataset.target={target}"]


def rows_of(n: int, classes: int = 2, seed: int = 0) -> list[str]:
    """n rows "x1,x2,label" whose label follows x1, cycling through `classes` labels."""
    rng = np.random.default_rng(seed)
    return [f"{i % classes + rng.normal(0, 0.1):.3f},{rng.normal():.3f},c{i % classes}" for i in range(n)]


def message_for(path: Path, target: str = "y") -> str:
    """The message reading `path` and splitting it (as `data=csv` does) ends in."""
    with pytest.raises(UserError) as info:
        DataModule(tabular.csv(str(path), target=target))
    message = str(info.value)
    assert "\n" not in message
    assert path.name in message, message  # names the file
    return message


@pytest.mark.parametrize(
    "rows, says",
    [
        ([], "has a header line but no data rows"),
        (["1.0,2.0,a"], "small.csv has only 1 row: too few to split"),
        (["1.0,2.0,a", "3.0,4.0,b"], "small.csv has only 2 rows: too few to split"),
    ],
    ids=["header only", "one row", "two rows"],
)
def test_too_few_rows_say_how_many_to_add(rows: list[str], says: str, tmp_path: Path) -> None:
    message = message_for(write(tmp_path / "small.csv", "x1,x2,y", rows))
    assert says in message
    assert "6 rows of each class (6 rows for a regression target)" in message
    assert "nothing to classify" not in message  # before: one row was "the single value 'a'"


def test_one_row_through_the_command_names_the_file_and_the_rows_it_asks_for_train(tmp_path: Path) -> None:
    path = write(tmp_path / "one.csv", "x1,x2,y", ["1.0,2.0,a"])
    result = run_cli([*TINY, *csv_args(path), f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("Error: ") and "one.csv has only 1 row" in lines[0], lines[0]
    # What it asks for is enough: 6 rows of each class, or 6 rows to regress on, train with the defaults.
    assert "6 rows of each class (6 rows for a regression target)" in lines[0]
    path = write(tmp_path / "six.csv", "x1,x2,y", rows_of(12))
    run = train_tiny(csv_args(path), tmp_path / "classes")
    assert np.isfinite(run.metrics["test/acc"])
    path = write(tmp_path / "six_reg.csv", "x1,x2,y", [f"{i},{i % 3},{i * 1.5 + 0.25}" for i in range(6)])
    run = train_tiny([*csv_args(path), "data.dataset.kind=regression"], tmp_path / "regression")
    assert np.isfinite(run.metrics["test/mse"])


def test_one_class_names_a_column_to_predict_instead_and_it_trains(tmp_path: Path) -> None:
    # "y" is the same in every row; "label" (2 values) is the likeliest label column, ahead of x1 and x2.
    rows = [f"{r},same" for r in rows_of(30)]
    path = write(tmp_path / "uniform.csv", "x1,x2,label,y", rows)
    message = message_for(path)
    assert "target column 'y' has the single value 'same' in all 30 rows" in message
    assert "Add rows of other classes, or predict another column: data.dataset.target=label" in message
    target = re.search(r"data\.dataset\.target=(\w+)", message).group(1)
    run = train_tiny(csv_args(path, target), tmp_path / "run")
    assert np.isfinite(run.metrics["test/acc"])


def test_one_class_and_nothing_else_varies_asks_for_rows(tmp_path: Path) -> None:
    path = write(tmp_path / "flat.csv", "x1,y", ["1,a", "1,a", "1,a"])
    message = message_for(path)
    assert "single value 'a' in all 3 rows" in message and "Add rows of other classes." in message
    assert "data.dataset.target" not in message


@pytest.mark.parametrize("n", [3, 5])
def test_an_empty_split_of_a_small_file_names_it_and_fractions_that_train(n: int, tmp_path: Path) -> None:
    """A file big enough to read but not for the default fractions: the message names settings
    that give every split a row, found on the same rows and seed, and they train."""
    path = write(tmp_path / f"rows{n}.csv", "x1,x2,y", rows_of(n))
    with pytest.raises(Exception) as info:
        train_tiny(csv_args(path), tmp_path / "run")
    message = user_error_message(info.value)  # what the command prints after "Error: "
    assert message is not None, info.value
    assert f"the val split of the {n} rows of {path} is empty" in message, message
    settings = re.search(r"Set ((?:data\.\w+=\S+ ?)+), which gives every split a row", message).group(1).split()
    # Before: "raise data.val_fraction (now 0.1)", which for 3 rows never works (0.5 rounds to no row).
    assert settings, message
    extra = ["model.batch_norm=false"] if n == 3 else []  # (3 rows leave 1 to train on: batch norm needs 2)
    run = train_tiny([*csv_args(path), *settings, *extra], tmp_path / "fixed")
    assert np.isfinite(run.metrics["test/loss"])
