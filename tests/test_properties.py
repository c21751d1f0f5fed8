"""Property-based tests (Hypothesis) of what a user can feed nnlab: CSV files and numeric overrides.

1. `nnlab.data.tabular.csv` (data=csv) on random tables: ragged rows, duplicate or empty column
   names, names with line breaks, missing markers, quoted delimiters, text in numeric columns,
   nan/inf and numbers beyond float32's range, constant and empty columns. Whatever the file, the
   loader returns a clean dataset (float32 features, finite except for NaN where a number is
   missing, which the DataModule's `Impute` fills with finite values) or raises a one-line
   `UserError` that names the file (or the data.dataset key); it never raises anything else and
   never writes to the file.
2. The numeric options of a run (epochs, batch size, learning rate, dropout, layer sizes, clipping,
   regularization, health checks, seed, split fractions), drawn inside and outside their ranges,
   NaN and +-inf included, and with the wrong types, with the model's batch norm on or off:
   composing, validating, building and training a tiny run either works or ends in the one-line
   user error that names the key; a value out of range (or not finite) is never accepted.

The default variants are derandomized (the same examples every run, so the suite is not flaky);
the `slow` variants draw many more, at random. No example database is written (`database=None`).
The end of the file keeps, as plain regression tests, the inputs that once broke these properties.
"""

from __future__ import annotations

import csv as _csv
import io
import math
import tempfile
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, currently_in_test_context, event, given, settings
from hypothesis import strategies as st

from helpers import compose_config
from nnlab.cli.app import user_error_message
from nnlab.data import tabular
from nnlab.data.edits.impute import Impute
from nnlab.data.split import fit_standardizer
from nnlab.engine.nonfinite import TrainingDiverged
from nnlab.errors import UserError
from nnlab.runs.pipeline import train

FAST = settings(max_examples=40, deadline=None, derandomize=True, database=None)
MANY = settings(max_examples=400, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

FLOAT32_MAX = float(np.finfo(np.float32).max)

# --------------------------------------------------------------------------------------- CSV
MISSING_CELLS = ["", "  ", "NA", "n/a", "NaN", "null", "None", "?", "#N/A", "<NA>"]
WORDS = ["red", "blue", "Smith, J", 'say "hi"', "two\nlines", " padded ", "x=1", "été", "1;5", "\t", "-nan", "inf"]
# Raw lines written as they are (not through csv.writer): broken quoting and odd separators.
RAW_LINES = ['"unterminated,1', 'a,"b"c,d', "\x00", ",,,,,,", " ", '""', "\ufeffx,y"]

# Column names: a few common ones (so that names repeat, and the target is often one of them),
# names with a line break (which csv.writer quotes), or short random text without "=" (which the
# one-hot feature names use) or a lone "\r" (which csv.writer leaves unquoted: a line break).
NAME = st.one_of(
    st.sampled_from(["x", "y", "label", " y ", "", "1", "2.5", "two\nlines", "a\r\nb"]),
    st.text(st.characters(codec="utf-8", exclude_characters="=\r"), max_size=6),
)
SMALL_INT = st.integers(-1000, 1000).map(str)
FINITE = st.floats(-1e6, 1e6, allow_nan=False).map(repr)
# Any float text: nan, inf, 1e+308, 5e-324, just inside and beyond float32's range (3.4e38).
WILD = st.one_of(
    st.floats().map(repr),
    st.floats(-FLOAT32_MAX, FLOAT32_MAX).map(repr),
    st.sampled_from(["nan", "inf", "-inf", "Infinity", "1e400", "-0.0", "1_000", " 7 ", "0x10", "1e5"]),
    st.sampled_from(["3.4028235e38", "-3.4028235e38", "3.5e38", "1e39", "-1e300", "1" + "0" * 40]),
)
TEXT = st.one_of(st.sampled_from(WORDS), st.text(max_size=4).filter(lambda s: "\r" not in s))
CELLS = {
    "integers": SMALL_INT,
    "codes": st.integers(0, 3).map(str),  # a classification target, or a categorical feature
    "floats": st.one_of(FINITE, SMALL_INT),
    "wild": st.one_of(WILD, FINITE),
    "text": TEXT,
    "missing": st.sampled_from(MISSING_CELLS),
    "mostly numbers": st.one_of(FINITE, FINITE, FINITE, st.sampled_from(MISSING_CELLS), TEXT),
    "anything": st.one_of(SMALL_INT, WILD, TEXT, st.sampled_from(MISSING_CELLS)),
}
# Styles of a tidy table's columns: codes and floats twice, so that targets often load.
TIDY_STYLES = [*CELLS, "codes", "floats", "constant"]


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]
    target: str | None
    options: dict[str, Any]
    bom: bool = False
    raw_line: tuple[int, str] | None = None  # (index among the lines, text)
    styles: list[str] = field(default_factory=list)

    def text(self) -> str:
        delimiter = "\t" if self.options["delimiter"] == "tab" else self.options["delimiter"]
        out = io.StringIO()
        _csv.writer(out, delimiter=delimiter, lineterminator="\n").writerows([self.header, *self.rows])
        lines = out.getvalue().splitlines(keepends=True)
        if self.raw_line is not None:
            i, raw = self.raw_line
            lines.insert(min(i, len(lines)), raw + "\n")
        return ("\ufeff" if self.bom else "") + "".join(lines)


@st.composite
def tables(draw: st.DrawFn) -> Table:
    """Two in three tables are tidy (distinct names, the target among them, every row complete), so
    that loads which succeed are checked too; the others may break any rule of a CSV file."""
    tidy = draw(st.integers(0, 2)) > 0
    n_columns = draw(st.integers(2, 5) if tidy else st.integers(0, 5))
    header = draw(st.lists(NAME, min_size=n_columns, max_size=n_columns))
    if tidy:  # distinct names, none empty
        header = [
            f"{h}_{i}" if not h.strip() or h.strip() in [g.strip() for g in header[:i]] else h
            for i, h in enumerate(header)
        ]
    style = st.sampled_from(TIDY_STYLES if tidy else [*CELLS, "constant"])
    styles = draw(st.lists(style, min_size=n_columns, max_size=n_columns))
    cells = [st.just(draw(CELLS["anything"])) if s == "constant" else CELLS[s] for s in styles]
    rows = []
    for _ in range(draw(st.integers(1 if tidy else 0, 12))):
        row = [draw(c) for c in cells]
        ragged = 99 if tidy else draw(st.integers(0, 12))  # now and then a field too few or too many
        if ragged == 0 and row:
            row = row[:-1]
        elif ragged == 1:
            row = [*row, draw(CELLS["anything"])]
        rows.append(row)
    columns = [h.strip() for h in header]
    if tidy:
        target = draw(st.sampled_from(columns))
        named = st.sampled_from([c for c in columns if c != target])
    else:
        target = draw(st.one_of(st.sampled_from(header), st.just("y"), st.none()) if header else st.none())
        named = st.sampled_from([*header, "nope"]) if header else st.just("nope")
    options = {
        "kind": draw(st.sampled_from(tabular.KINDS)),
        "categorical": draw(st.lists(named, max_size=2, unique=True)),
        "drop": draw(st.lists(named, max_size=1 if tidy else 2, unique=True)),
        "delimiter": draw(st.sampled_from([",", ",", ";", "tab"])),
    }
    raw_line = None if tidy else draw(st.none() | st.tuples(st.integers(0, 12), st.sampled_from(RAW_LINES)))
    return Table(header, rows, target, options, draw(st.booleans()), raw_line, styles)


def blank(fields: list[str]) -> bool:
    """A line the loader skips: no field, or a single empty one."""
    return len(fields) <= 1 and not "".join(f.strip() for f in fields)


def expected_rows(table: Table) -> int | None:
    """Rows a successful load must have, from the table as drawn; None when the drawn lines are not
    the file's lines one to one (a raw line, or a header line that is blank)."""
    if table.raw_line is not None or blank(table.header) or table.bom and table.header[0].startswith("\ufeff"):
        return None
    names = [h.strip() for h in table.header]
    t = names.index(table.target)
    kept = 0
    for row in (r for r in table.rows if not blank(r)):
        missing = [tabular.is_missing(v.strip()) for v in row]
        if missing[t]:  # a row without a target is dropped; a gap in a feature keeps the row
            continue
        kept += 1
    return kept


def note(value: str) -> None:
    """Count `value` in Hypothesis's statistics (when called from a property test)."""
    if currently_in_test_context():
        event(value)


def check_csv_property(table: Table, folder: Path) -> None:
    path = folder / "data.csv"
    path.write_text(table.text(), encoding="utf-8", newline="")
    before, stat = path.read_bytes(), path.stat()
    try:
        ds = tabular.csv(str(path), target=table.target, **table.options)
    except UserError as e:
        note(f"user error: {' '.join(str(e).replace(str(path), 'FILE').split()[:4])}")
        message = str(e)
        assert str(path) in message or str(path.resolve()) in message or "data.dataset." in message, message
        assert "\n" not in message and "\r" not in message, message
        ds = None
    assert path.read_bytes() == before and path.stat().st_mtime_ns == stat.st_mtime_ns, "the loader wrote to the file"
    if ds is None:
        return
    note(f"loaded: {ds.kind}")

    # A clean dataset: finite float32 features, one row per kept line, labels that fit the kind.
    n = expected_rows(table)
    assert ds.x.dtype == np.float32 and ds.x.ndim == 2 and ds.x.shape[1] >= 1
    assert not np.isinf(ds.x).any(), ds.x
    onehot = np.array(["=" in f for f in ds.feature_names], dtype=bool)
    # A missing category is all zeros in its one-hot columns; only a missing number is NaN.
    assert np.isin(ds.x[:, onehot], [0.0, 1.0]).all(), ds.x
    filled = Impute()
    filled.fit(ds.x, ds.y)
    assert np.isfinite(filled(ds.x)).all(), ds.x  # what the DataModule hands on: no gap left
    assert len(ds.y) == len(ds.x) >= 1
    if table.options["kind"] != "auto":
        assert ds.kind == table.options["kind"]
    if ds.kind == "classification":
        assert ds.y.dtype == np.int64 and len(ds.class_names) >= 2
        assert len(set(ds.class_names)) == len(ds.class_names)
        assert ds.y.min() >= 0 and ds.y.max() < len(ds.class_names)
    else:
        assert ds.kind == "regression" and ds.class_names is None
        assert ds.y.dtype == np.float32 and np.isfinite(ds.y).all()

    # Features: one name per column of x, each from a column that is neither the target nor dropped,
    # in the header's order (a numeric column as itself, a text column as column=value).
    assert len(ds.feature_names) == ds.x.shape[1]
    if n is None:
        return  # the file's lines are not the drawn ones (a raw line, a blank header)
    assert len(ds.x) == n
    names = [h.strip() for h in table.header]
    allowed = [c for c in names if c != table.target and c not in table.options["drop"]]
    used = [f if f in allowed else f.split("=", 1)[0] for f in ds.feature_names]
    assert all(c in allowed for c in used), (ds.feature_names, allowed)
    assert used == sorted(used, key=allowed.index)


@settings(FAST, max_examples=100)  # a load takes milliseconds
@given(table=tables())
def test_csv_loader_returns_clean_data_or_a_user_error(table: Table, tmp_path_factory: pytest.TempPathFactory) -> None:
    check_csv_property(table, tmp_path_factory.mktemp("csv"))


@pytest.mark.slow
@MANY
@given(table=tables())
def test_csv_loader_many_tables(table: Table, tmp_path_factory: pytest.TempPathFactory) -> None:
    check_csv_property(table, tmp_path_factory.mktemp("csv"))


# ------------------------------------------------------------------------------- overrides
# A tiny run: iris (150 rows), one batch of training and one of each evaluation, no logger. The MLP
# has batch norm unless the test draws model.batch_norm=false.
BASE = (
    "data=iris",
    "logger=none",
    "callbacks.progress=null",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=1",
    "trainer.limit_eval_batches=1",
    "trainer.summary=false",
    "trainer.device=cpu",
)


@dataclass(frozen=True)
class Option:
    """A numeric option and its documented range (what its constructor's check_range enforces)."""

    key: str
    type: type  # int or float
    low: float | None = None
    high: float | None = None
    low_inclusive: bool = True
    high_inclusive: bool = True
    nullable: bool = False
    cheap: st.SearchStrategy | None = None  # in-range values a tiny run can afford (default: any)

    def verdict(self, value: Any) -> bool:
        """True: valid; False: must be rejected (out of range, mistyped, NaN or +-inf)."""
        if value is None:
            return self.nullable
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.type is int and not isinstance(value, int) or isinstance(value, float) and not math.isfinite(value):
            return False
        too_low = self.low is not None and (value < self.low if self.low_inclusive else value <= self.low)
        too_high = self.high is not None and (value > self.high if self.high_inclusive else value >= self.high)
        return not (too_low or too_high)


OPTIONS = [
    Option("trainer.max_epochs", int, 1, cheap=st.integers(1, 2)),
    Option("trainer.limit_train_batches", int, 1, nullable=True, cheap=st.integers(1, 2)),
    Option("trainer.limit_eval_batches", int, 1, nullable=True, cheap=st.integers(1, 2)),
    Option("trainer.log_every_n_steps", int, 1),
    Option("trainer.accumulate_grad_batches", int, 1),
    Option("trainer.gradient_clip_val", float, 0.0, low_inclusive=False, nullable=True),
    Option("data.batch_size", int, 1),
    Option("data.eval_batch_size", int, 1),
    Option("data.val_fraction", float, 0.0, 1.0, low_inclusive=False, high_inclusive=False),
    Option("data.test_fraction", float, 0.0, 1.0, low_inclusive=False, high_inclusive=False),
    Option("optimizer.lr", float, 0.0, low_inclusive=False),
    Option("optimizer.weight_decay", float, 0.0),
    Option("model.dropout", float, 0.0, 1.0, high_inclusive=False),
    Option("task.label_smoothing", float, 0.0, 1.0, high_inclusive=False),
    Option("regularization.l1", float, 0.0),
    Option("regularization.l2", float, 0.0),
    Option("regularization.max_norm", float, 0.0, low_inclusive=False, nullable=True),
    Option("regularization.ema_decay", float, 0.0, 1.0, low_inclusive=False, high_inclusive=False, nullable=True),
    Option("callbacks.health.every_n_steps", int, 1),
    Option("callbacks.health.patience", int, 1),
    Option("callbacks.health.explode_growth", float, 1.0, low_inclusive=False),
    Option("seed", int, 0, 2**32 - 1),
]
SPECIAL_FLOATS = [0.0, -0.0, -1.0, 1e-12, 0.5, 0.999999, 1.0, 1.5, 2.0, 1e30, -1e30, math.inf, -math.inf, math.nan]
SPECIAL_INTS = [0, -1, 1, 2, 3, -(2**31), 2**32 - 1, 2**32, 10**12, -(10**30)]


def in_range(option: Option) -> st.SearchStrategy:
    """Valid values of `option` (those a tiny run affords when it says so)."""
    if option.cheap is not None:
        return option.cheap
    if option.type is int:
        return st.integers(int(option.low), int(option.high) if option.high is not None else 10**6)
    high = option.high if option.high is not None else 1e3
    return st.floats(option.low, high, exclude_min=not option.low_inclusive, exclude_max=not option.high_inclusive)


def values(option: Option) -> st.SearchStrategy:
    """Values for `option`: half of them valid, the others anything a user might type: zero,
    negative, huge, boundaries, a float for an int, a quoted number (a string), null."""
    # An option that a tiny run must keep small (trainer.max_epochs) draws no large valid value.
    affordable = (lambda v: v <= 2 or not option.verdict(v)) if option.cheap is not None else (lambda v: True)
    wild = st.one_of(
        st.sampled_from([v for v in SPECIAL_INTS if affordable(v)]),
        st.sampled_from(SPECIAL_FLOATS),
        st.integers(-(2**40), 2**40 if option.cheap is None else 0),
        st.floats(-1e3, 1e3, allow_nan=False),
        st.sampled_from(["3", "0.5", "1e-3", "abc", ""]),  # strings, rendered quoted: '3'
        st.none(),
    )
    return st.one_of(in_range(option), wild)


# Hidden layer sizes: a list of 0-3 entries, each valid (1..32, kept small to fit in memory) or not.
HIDDEN = st.lists(st.one_of(st.integers(1, 32), st.sampled_from([0, -1, -(10**12), 1.5, 2.0])), max_size=3)


def render(value: Any) -> str:
    """The override text that Hydra parses back into `value`."""
    if value is None:
        return "null"
    if isinstance(value, str):
        return f"'{value}'"  # quoted: Hydra keeps it a string, e.g. '3'
    if isinstance(value, list):
        return "[" + ",".join(render(v) for v in value) + "]"
    return repr(value)


@st.composite
def override_sets(draw: st.DrawFn) -> list[tuple[str, Any, bool]]:
    """1-3 (key, value, verdict) triples with distinct keys."""
    chosen = draw(st.lists(st.sampled_from([*OPTIONS, "model.hidden_sizes"]), min_size=1, max_size=3, unique=True))
    out = []
    for option in chosen:
        if option == "model.hidden_sizes":
            sizes = draw(HIDDEN)
            ok = all(isinstance(h, int) and h >= 1 for h in sizes)
            out.append(("model.hidden_sizes", sizes, ok))
        else:
            value = draw(values(option))
            out.append((option.key, value, option.verdict(value)))
    return out


def run_tiny(overrides: list[str]) -> BaseException | None:
    """Compose the run as `nnlab-train` would, then validate, build, train and test it in-process;
    the exception it ends with, or None. Composition itself must succeed: the overrides are valid
    Hydra syntax, and every key exists."""
    with tempfile.TemporaryDirectory() as run_dir:
        cfg = compose_config([*BASE, *overrides], run_dir)
        try:
            train(cfg)  # validate_config, build, fit, test
        except Exception as e:  # noqa: BLE001 - judged below: only a user error is an acceptable end
            return e
    return None


# The keys that set the training batches' sizes: batch norm refuses a batch of one row.
BATCH_KEYS = ("data.batch_size", "data.val_fraction", "data.test_fraction")


def check_override_property(chosen: list[tuple[str, Any, bool]], batch_norm: bool) -> None:
    overrides = [f"{key}={render(value)}" for key, value, _ in chosen]
    error = run_tiny([*overrides, f"model.batch_norm={render(batch_norm)}"])
    keys = [key for key, _, _ in chosen]
    invalid = [key for key, _, verdict in chosen if verdict is False]
    event(f"{'ran' if error is None else type(error).__name__}; {'invalid' if invalid else 'valid'}")
    if error is None:
        assert not invalid, f"{overrides}: accepted out-of-range or mistyped {invalid}"
        return
    message = user_error_message(error)
    trace = "".join(traceback.format_exception(error))
    assert message is not None, f"{overrides}: not a user error (the CLI shows a traceback):\n{trace}"
    assert "\n" not in message, message
    if isinstance(error, TrainingDiverged) and not invalid:
        return  # in-range but extreme values (optimizer.lr=1e30) diverge: the run stops and says why
    if "batch norm cannot train" in message:
        # Values that leave a training batch of one row (data.batch_size=1, or fractions that leave
        # 16k+1 training rows for the default batch of 16): the message names data.batch_size.
        assert batch_norm and "data.batch_size" in message, f"{overrides}: {message}"
        assert any(key in keys for key in BATCH_KEYS), f"{overrides}: {message}"
        return
    # The error names a key of the override set (the first one checked: not always an invalid one,
    # e.g. a valid but tiny data.val_fraction leaves the validation split of iris empty).
    assert any(key in message for key in keys), f"{overrides}: the message names none of {keys}: {message}"


@pytest.mark.slow  # (moved out of the default suite to keep it near 10 minutes)
@FAST
@given(chosen=override_sets(), batch_norm=st.booleans())
def test_numeric_overrides_run_or_name_the_key(chosen: list[tuple[str, Any, bool]], batch_norm: bool) -> None:
    check_override_property(chosen, batch_norm)


@pytest.mark.slow
@MANY
@given(chosen=override_sets(), batch_norm=st.booleans())
def test_numeric_overrides_many(chosen: list[tuple[str, Any, bool]], batch_norm: bool) -> None:
    check_override_property(chosen, batch_norm)


# ------------------------------------------------------------------------------ regressions
# Inputs that once broke the properties above (now in their draws too), checked on every run.


@pytest.mark.parametrize(
    "key, extra",
    [
        ("optimizer.lr", []),  # torch's own check rejects it: the message names the key
        ("optimizer.weight_decay", []),
        ("model.dropout", []),
        ("task.label_smoothing", []),
        ("trainer.gradient_clip_val", []),
        ("regularization.ema_decay", []),
        ("regularization.l2", []),
        ("regularization.max_norm", []),
        ("data.val_fraction", []),
        ("optimizer.momentum", ["optimizer=sgd"]),
    ],
)
def test_nan_is_rejected_naming_the_key(key: str, extra: list[str]) -> None:
    error = run_tiny([*extra, f"{key}=nan"])
    assert error is not None, f"{key}=nan was accepted"
    message = user_error_message(error)
    assert message is not None, "".join(traceback.format_exception(error))
    assert key in message and "\n" not in message, message


@pytest.mark.parametrize("value", ["inf", "-inf"])
def test_infinity_is_rejected_naming_the_key(value: str) -> None:
    error = run_tiny([f"regularization.l2={value}"])
    message = user_error_message(error) if error is not None else None
    assert message is not None and "regularization.l2" in message and "finite" in message, error


# iris has 96 training rows: a batch of 95 leaves a last batch of 1 row, a batch of 1 only such batches.
@pytest.mark.parametrize("overrides", [["data.batch_size=1"], ["data.batch_size=95", "trainer.limit_train_batches=2"]])
def test_a_training_batch_of_one_row_with_batch_norm(overrides: list[str]) -> None:
    error = run_tiny([*overrides, "model.batch_norm=true"])
    assert error is not None, "a training batch of one row was accepted with batch norm"
    message = user_error_message(error)
    assert message is not None, "".join(traceback.format_exception(error))
    assert "data.batch_size" in message and "1 row" in message and "\n" not in message, message


@pytest.mark.parametrize(
    "overrides",
    [
        ["data.batch_size=1", "model.batch_norm=false"],
        ["data.batch_size=95", "data.drop_last=true", "trainer.limit_train_batches=2", "model.batch_norm=true"],
    ],
)
def test_a_batch_of_one_row_runs_without_batch_norm_or_with_drop_last(overrides: list[str]) -> None:
    error = run_tiny(overrides)
    assert error is None, "".join(traceback.format_exception(error))


CSV_OPTIONS = {"kind": "auto", "categorical": [], "drop": [], "delimiter": ","}


@pytest.mark.parametrize(
    "rows, line, value",
    [
        ([["1e39", "0"], ["2", "1"], ["3", "0"]], 2, "1e39"),  # a feature
        ([["1", "0.5"], ["2", "3.4028235677973366e+38"]], 3, "3.4028235677973366e+38"),  # a regression target
        ([["1e308", "0"], ["1e308", "1"], ["", "0"]], 2, "1e308"),  # its mean, imputed, would be inf too
    ],
)
def test_csv_numbers_beyond_float32_are_rejected(rows: list[list[str]], line: int, value: str, tmp_path) -> None:
    check_csv_property(Table(["x", "y"], rows, "y", CSV_OPTIONS), tmp_path)  # the general property
    with pytest.raises(UserError) as info:
        tabular.csv(str(tmp_path / "data.csv"), target="y", **CSV_OPTIONS)
    assert f"line {line}:" in str(info.value) and repr(value) in str(info.value), str(info.value)
    assert "float32" in str(info.value) and "\n" not in str(info.value), str(info.value)


def test_csv_numbers_just_inside_float32_load(tmp_path) -> None:
    largest = repr(FLOAT32_MAX)
    rows = [[largest, "0"], ["-" + largest, "1"], ["", "0"], ["0", largest]]
    path = tmp_path / "data.csv"
    path.write_text("x,y\n" + "".join(",".join(r) + "\n" for r in rows))
    ds = tabular.csv(str(path), target="y", kind="regression")
    assert np.isnan(ds.x[2, 0]) and np.isfinite(np.delete(ds.x, 2, axis=0)).all() and np.isfinite(ds.y).all()
    assert np.nanmax(ds.x) == ds.y.max() == np.float32(FLOAT32_MAX)
    imputer = Impute()  # the DataModule's fill: the mean of the largest floats, summed in float64
    imputer.fit(ds.x, ds.y)
    x = imputer(ds.x)
    assert np.isfinite(x).all(), x
    mean, std = fit_standardizer(x)  # the DataModule's z-score: finite too
    assert np.isfinite(mean).all() and np.isfinite(std).all() and np.isfinite((x - mean) / std).all()


@pytest.mark.parametrize(
    "text",
    [
        '"two\nlines",y\n1,0\n2,1\n',  # a quoted name with a newline
        '"unclosed,x\ny,"\n1,2\n3,4\n',  # the first name's quote runs on to line 2: 1 column, rows of 2
    ],
)
def test_csv_header_with_a_line_break_is_rejected_on_one_line(text: str, tmp_path) -> None:
    path = tmp_path / "data.csv"
    path.write_text(text, newline="")
    with pytest.raises(UserError) as info:
        tabular.csv(str(path), target="z")
    assert str(path) in str(info.value) and "line break" in str(info.value), str(info.value)
    assert "\n" not in str(info.value), str(info.value)
