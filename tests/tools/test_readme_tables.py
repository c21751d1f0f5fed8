"""scripts/readme_tables.py: the README's tables of config groups and experiments are the ones
the config folders generate, so a config added without regenerating them fails here. Fast: the
script only reads YAML comments and README.md."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import CLI_TIMEOUT_S

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "readme_tables.py"


def load_script():
    spec = importlib.util.spec_from_file_location("readme_tables", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


readme_tables = load_script()


def test_readme_tables_match_the_config_folders() -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--check"], cwd=ROOT, capture_output=True, text=True, timeout=CLI_TIMEOUT_S
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_group_and_choice_is_listed_as_help_lists_them() -> None:
    """Every folder of YAML files is a row, and every file a choice in it (the glob is the truth)."""
    table = readme_tables.groups_table()
    rows = {line.split(" | ")[0].strip("| `"): line.split(" | ")[1] for line in table.splitlines()[2:]}
    configs = ROOT / "src" / "nnlab" / "configs"
    folders = {p.name for p in configs.iterdir() if p.is_dir() and any(p.glob("*.yaml"))}
    assert set(rows) == folders
    for group, choices in rows.items():
        assert choices.split(", ") == sorted(f.stem for f in (configs / group).glob("*.yaml"))


def test_every_experiment_is_a_row_with_its_command() -> None:
    table = readme_tables.experiments_table()
    rows = table.splitlines()[2:]
    names = sorted(p.stem for p in (ROOT / "src" / "nnlab" / "configs" / "experiment").glob("*.yaml"))
    assert [row.split(" | ")[0].strip("| ") for row in rows] == names
    for name, row in zip(names, rows):
        assert f"experiment={name}" in row.split(" | ")[1]


def test_check_names_the_stale_table_and_rewrite_restores_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    readme = tmp_path / "README.md"
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    row = "| digits_cnn | `nnlab-train experiment=digits_cnn` |"
    stale = text.replace(row, "", 1)  # as if digits_cnn.yaml had been added since
    assert stale != text
    readme.write_text(stale, encoding="utf-8")
    monkeypatch.setattr(readme_tables, "README", readme)

    assert readme_tables.main(["--check"]) == 1
    assert readme.read_text(encoding="utf-8") == stale  # --check changes nothing
    assert readme_tables.main([]) == 0
    assert readme.read_text(encoding="utf-8") == text
    assert readme_tables.main(["--check"]) == 0


def test_check_says_which_table_is_stale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    readme = tmp_path / "README.md"
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    readme.write_text(text.replace("| `debug` |", "| `debugging` |", 1), encoding="utf-8")
    monkeypatch.setattr(readme_tables, "README", readme)
    assert readme_tables.main(["--check"]) == 1
    err = capsys.readouterr().err
    assert "groups table" in err and "experiments" not in err


def test_a_group_without_what_it_sets_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    what = dict(readme_tables.WHAT_IT_SETS)
    del what["logger"]
    monkeypatch.setattr(readme_tables, "WHAT_IT_SETS", what)
    with pytest.raises(readme_tables.ReadmeError, match="logger"):
        readme_tables.groups_table()
