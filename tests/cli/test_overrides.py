"""`nnlab.cli.overrides.explain` for characters Hydra's override grammar reads only inside quotes
(non-ASCII letters such as `données`, `é`): one paragraph naming the override and a quoted form
that works, instead of Hydra's `LexerNoViableAltException` (issue 22, item 9)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from helpers import compose_config, run_cli
from nnlab.cli.overrides import explain


def hydra_message(override: str, at: int) -> str:
    """What Hydra 1.3 prints for an override its lexer stops in, at index `at`."""
    return (
        f"LexerNoViableAltException: {override}\n{' ' * (len('LexerNoViableAltException: ') + at)}^\n"
        "See https://hydra.cc/docs/1.2/advanced/override_grammar/basic for details\n"
    )


def suggested(message: str) -> str:
    """The override the message says to type, as the shell hands it over (it is shell-quoted)."""
    return shlex.split(re.search(r"Quote it: (.+) \(the outer single quotes", message).group(1))[0]


def test_a_non_ascii_path_names_the_override_and_a_quoted_fix_that_composes(tmp_path: Path) -> None:
    path = str(tmp_path / "données.csv")
    result = run_cli(["data=csv", f"data.dataset.path={path}", f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "LexerNoViableAltException" not in result.stderr, result.stderr
    assert lines[0].startswith(f"Error: The override 'data.dataset.path={path}' has 'é' (not ASCII) in its value")
    fix = suggested(lines[0])
    assert fix == f'data.dataset.path="{path}"'
    cfg = compose_config(["data=csv", fix], tmp_path / "fixed")
    assert cfg.data.dataset.path == path


@pytest.mark.parametrize(
    "override, fixed, value",
    [
        ("seed=é", 'seed="é"', "é"),
        ("model.hidden_sizes=[16,é]", 'model.hidden_sizes=[16,"é"]', [16, "é"]),  # the element, not the list
        ("+extra={name:café}", '+extra={name:"café"}', {"name": "café"}),
        ("hydra.job.name=naïve;run", 'hydra.job.name="naïve;run"', None),
        ("paths.log_dir=/tmp/l'été", 'paths.log_dir="/tmp/l\'été"', "/tmp/l'été"),
    ],
)
def test_the_quoted_fix_composes_to_the_value_meant(override: str, fixed: str, value: object, tmp_path: Path) -> None:
    at = next(i for i, c in enumerate(override) if not c.isascii() or c == "'")
    message = explain(hydra_message(override, at), [override])
    assert message is not None and "\n" not in message
    assert suggested(message) == fixed
    cfg = compose_config([fixed], tmp_path)  # Hydra's grammar takes it
    if value is not None:
        key = fixed.split("=", 1)[0].lstrip("+")
        composed = OmegaConf.select(cfg, key)
        assert (OmegaConf.to_container(composed) if OmegaConf.is_config(composed) else composed) == value


def test_a_non_ascii_key_is_named_as_a_key(tmp_path: Path) -> None:
    result = run_cli(["+naïve=1", f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "The override '+naïve=1' has 'ï' (not ASCII) in its key '+naïve'" in lines[0]
    assert "ASCII letters, digits" in lines[0]


def test_data_sensitive_on_a_table_without_groups_names_the_datasets_that_have_them() -> None:
    message = explain("Could not override 'data.sensitive'.", ["data=iris", "data.sensitive=sex"])
    assert "data=german_credit or data=csv" in message and "+data.sensitive=" in message
    assert "docs/fairness.md" in message
