"""The console log handler: INFO lines on one line in RichHandler's columns, warnings wrapped."""

from __future__ import annotations

import io
import logging
import re

from rich.console import Console

from nnlab.cli.console import LogHandler


def handler(width: int = 60) -> tuple[LogHandler, io.StringIO]:
    out = io.StringIO()
    h = LogHandler(console=Console(file=out, width=width, force_terminal=False), show_path=False)
    h.setFormatter(logging.Formatter("%(message)s"))
    return h, out


def record(level: int, message: str, created: float) -> logging.LogRecord:
    r = logging.LogRecord("nnlab.test", level, __file__, 1, message, None, None)
    r.created = created
    return r


def test_info_lines_keep_the_columns_on_one_line_and_show_a_repeated_time_once() -> None:
    h, out = handler()
    long = "epoch 1/30  " + "  ".join(f"metric/{i} 0.{i}000" for i in range(8))  # wider than 60 columns
    h.emit(record(logging.INFO, long, created=1_700_000_000.2))
    h.emit(record(logging.INFO, "epoch 2/30", created=1_700_000_000.7))  # the same second
    h.emit(record(logging.INFO, "epoch 3/30", created=1_700_000_002.0))
    lines = out.getvalue().splitlines()
    assert len(lines) == 3  # not wrapped
    first = re.fullmatch(r"(\[[^]]+\]) INFO +(.*)", lines[0])
    assert first is not None, lines[0]
    assert first.group(2) == long
    stamp = first.group(1)
    assert lines[1] == " " * len(stamp) + " INFO     epoch 2/30"
    assert lines[2].startswith("[") and lines[2].endswith(" INFO     epoch 3/30")
    assert lines[2][: len(stamp)] != stamp


def test_warnings_keep_richs_wrapped_layout() -> None:
    h, out = handler(width=60)
    words = [f"word{i}" for i in range(30)]
    h.emit(record(logging.WARNING, " ".join(words), created=1_700_000_000.0))
    lines = out.getvalue().splitlines()
    assert len(lines) > 2  # wrapped in the message column
    assert "WARNING" in lines[0]
    assert " ".join(" ".join(lines).split()).count("word") == 30
    assert all(len(line) <= 60 for line in lines)


def test_tabs_and_lines_of_a_message_print_as_richs_text_would() -> None:
    """Tab stops count from the line's start (after the time and level columns), each line of
    a message keeps its own, and the level is coloured on a terminal as RichHandler colours it."""
    h, out = handler(width=100)
    h.emit(record(logging.INFO, "a\tb\n\tc [bold]d[/bold]", created=1_700_000_000.0))
    first, second = out.getvalue().splitlines()
    prefix = first.index("INFO") + 9  # the time, a space, the level in 8 columns, a space
    assert first[prefix:] == "a" + " " * (8 - (prefix + 1) % 8) + "b"
    assert second == " " * 8 + "c [bold]d[/bold]"  # (no markup: shown as written)
    term = io.StringIO()
    colour = LogHandler(console=Console(file=term, width=100, force_terminal=True, color_system="standard"))
    colour.setFormatter(logging.Formatter("%(message)s"))
    colour.emit(record(logging.DEBUG, "x", created=1_700_000_000.0))
    assert "\x1b[32mDEBUG   \x1b[0m x\n" in term.getvalue()  # logging.level.debug: green


def test_the_final_table_sets_the_network_beside_its_classical_baselines(capsys) -> None:
    """`baselines/...` keys leave the metrics table for a table of their own: a row per model,
    val and test of the shared metric (with ± over folds), and the time."""
    from nnlab.cli.console import print_metrics_table

    metrics = {"test/acc": 0.95, "val/acc": 0.97, "val/loss": 0.1}
    for name, (val, test) in {"logistic": (0.96, 0.94), "random_forest": (0.98, 0.96)}.items():
        metrics |= {f"baselines/{name}/val/acc": val, f"baselines/{name}/test/acc": test}
        metrics |= {f"baselines/{name}/fit_s": 0.5, f"baselines/{name}/predict_s": 0.25}
    print_metrics_table(metrics, network_s=4.0)
    out = capsys.readouterr().out
    main, comparison = out.split("network vs classical baselines")
    assert "val/loss" in main and "baselines/" not in main
    rows = {
        r.split("│")[1].strip(): [c.strip() for c in r.split("│")[2:5]] for r in comparison.splitlines() if "│" in r
    }
    assert rows == {
        "network": ["0.9700", "0.9500", "4.00"],
        "logistic": ["0.9600", "0.9400", "0.75"],
        "random_forest": ["0.9800", "0.9600", "0.75"],
    }

    print_metrics_table(metrics, stds={k: 0.01 for k in metrics}, title="5-fold mean ± std")  # k-fold
    comparison = capsys.readouterr().out.split("network vs classical baselines")[1]
    assert "0.9600 ± 0.0100" in comparison

    print_metrics_table({"val/loss": 0.1})  # no baselines ran: no second table
    assert "classical" not in capsys.readouterr().out
