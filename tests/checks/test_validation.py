"""`nnlab.checks.validation`: every `_target_`'s arguments bound to its signature and type-checked,
element types included, before anything is built (issue 22, item 7).

The unit tests check the type rules on a range of hints; the targets they bind to are small
functions of this module (`_target_: test_validation.<name>`), so each case shows its signature.
"""

from __future__ import annotations

import collections.abc
import re
import typing
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from helpers import TINY, compose_config, run_cli
from nnlab.checks.type_hints import describe, example_of, matches
from nnlab.checks.validation import validate_config
from nnlab.errors import ConfigValueError

# (hint, values that fit, values that do not): values as YAML or the command line give them.
CASES: list[tuple[Any, list[Any], list[Any]]] = [
    (Iterable[int], [[1, 2], [], (3,)], [["a", "b"], 5, "12", [1.5], [True], None, {"a": 1}]),
    (typing.Iterable[int], [[15, 25]], [["a"]]),
    (Sequence[float], [[1, 2.5], []], [["x"], 0.5, [True], [[1.0]]]),
    (list[str], [["relu", "tanh"]], ["relu", [1]]),
    (collections.abc.Collection[int], [[1]], [[None]]),
    (set[int], [[1, 2]], [[1.5]]),
    (tuple[int, int], [[1, 2], (3, 4)], [[1], [1, 2, 3], [1, "a"], 7]),
    (tuple[int, ...], [[], [1, 2, 3]], [[1, "a"]]),
    (tuple[float | None, str], [[None, "a"], [1, "a"]], [["a", "a"], [1, 2]]),
    (dict[str, float], [{"a": 1.0, "b": 2}, {}], [{"a": "x"}, {"a": None}, [1], "a"]),
    (Mapping[str, list[int]], [{"a": [1, 2]}], [{"a": [1, "x"]}, {"a": 1}]),
    (dict, [{"a": [1]}], [[1]]),
    (int | None, [3, None], [2.5, "3", True, [3]]),
    (Optional[Sequence[int]], [None, [1]], [["a"], 1]),  # noqa: UP045 (the typing spelling is checked too)
    (list[int] | int, [1, [1, 2]], [[1.5], "1"]),
    (float, [1, 0.5], ["0.5", True, None]),
    (bool, [True, False], [1, "true"]),
    (str, ["a", ""], [1, None, ["a"]]),
    (Literal["cos", "linear"], ["cos", "linear"], ["coss", 1, None]),
    (Literal[1, 2] | None, [1, None], [3, True]),
    (Annotated[int, "epochs"], [3], ["3"]),
    (Any, [1, "a", None, [1]], []),
]


@pytest.mark.parametrize("hint, good, bad", CASES, ids=[str(c[0]) for c in CASES])
def test_values_are_checked_against_the_hint_and_its_element_types(hint: Any, good: list, bad: list) -> None:
    for value in good:
        assert matches(value, hint), (value, hint)
    for value in bad:
        assert not matches(value, hint), (value, hint)


@pytest.mark.parametrize(
    "hint, words",
    [
        (Iterable[int], "a list of int"),
        (Sequence[float], "a list of float"),
        (tuple[int, int], "a list of 2 values (int, int)"),
        (dict[str, float], "a mapping of str to float"),
        (int | None, "int or null"),
        (Literal["min", "max"], "one of 'min', 'max'"),
    ],
)
def test_hints_are_described_as_config_values(hint: Any, words: str) -> None:
    assert describe(hint) == words


@pytest.mark.parametrize("hint", [c[0] for c in CASES if c[0] is not Any], ids=str)
def test_the_example_in_a_fix_parses_and_fits(hint: Any) -> None:
    """The fix a type error suggests is typed on the command line: Hydra must parse it to a fitting value."""
    example = example_of(hint)
    assert example is not None
    value = OverridesParser.create().parse_override(f"key={example}").value()
    assert matches(value, hint), (example, value)


# ------------------------------------------------------------------- binding `_target_` nodes
def milestones(optimizer: object, milestones: Iterable[int], gamma: float = 0.1) -> None:
    """Shaped like torch's MultiStepLR: the optimizer comes from the call site (`_partial_`)."""


def weights(names: tuple[str, str], scale: dict[str, float] | None = None, *extra: int, **more: float) -> None:
    """Positional `*extra` and keyword `**more` take hints of their own."""


def by_position(size: int, /, name: str = "x") -> None:
    """`size` can be given by position only."""


def hidden_names(steps: Iterable[int], other: Undefined) -> None:  # noqa: F821 (defined for type checkers only)
    """Its annotations name `Iterable` and a class this module imports for type checkers only, as
    torch.optim.lr_scheduler does: `get_type_hints` fails on the whole signature."""


def check(node: dict[str, Any]) -> None:
    """`validate_config` on a config whose `part` node is `node`, with this module's target."""
    target = node.pop("target")
    validate_config(OmegaConf.create({"part": {"_target_": f"{__name__}.{target}", **node}}))


def test_a_partial_node_is_checked_without_its_call_site_arguments() -> None:
    check({"target": "milestones", "_partial_": True, "milestones": [15, 25]})  # no optimizer: the call site gives it
    with pytest.raises(ConfigValueError, match=r"part\.milestones=\['a', 'b'\] has the wrong type: .* a list of int"):
        check({"target": "milestones", "_partial_": True, "milestones": ["a", "b"]})


def test_positional_args_are_bound_and_checked() -> None:
    check({"target": "weights", "_args_": [["a", "b"], {"x": 0.5}, 1, 2], "y": 0.25})
    with pytest.raises(ConfigValueError) as info:
        check({"target": "weights", "_args_": [["a", "b", "c"]]})
    message = str(info.value)
    assert "part._args_[0]=['a', 'b', 'c'] has the wrong type" in message
    assert "a list of 2 values (str, str) for its parameter 'names'" in message
    with pytest.raises(ConfigValueError, match=r"part\._args_\[3\]='z' has the wrong type: .* expects int"):
        check({"target": "weights", "_args_": [["a", "b"], None, 1, "z"]})  # one of *extra
    with pytest.raises(ConfigValueError, match=r"part\.y='big' has the wrong type: .* expects float"):
        check({"target": "weights", "_args_": [["a", "b"]], "y": "big"})  # one of **more


def test_an_argument_given_twice_is_refused() -> None:
    with pytest.raises(ConfigValueError) as info:
        check({"target": "weights", "_args_": [["a", "b"]], "names": ["c", "d"]})
    message = str(info.value)
    assert "gives 'names' twice: as part._args_[0] and as part.names" in message
    assert "~part.names" in message


def test_too_many_positional_args_and_a_positional_only_key_are_refused() -> None:
    with pytest.raises(ConfigValueError, match=r"part\._args_ has 3 values, but .*by_position takes at most 2"):
        check({"target": "by_position", "_args_": [1, "a", "b"]})
    with pytest.raises(ConfigValueError, match=r"part\.size: .*by_position takes 'size' by position only"):
        check({"target": "by_position", "size": 1})
    check({"target": "by_position", "_args_": [1], "name": "y"})


def test_a_key_the_target_lacks_is_named_with_the_valid_keys() -> None:
    with pytest.raises(ConfigValueError, match=r"Unknown key 'part\.gama'.*Did you mean 'gamma'\?"):
        check({"target": "milestones", "milestones": [1], "gama": 0.5})


def test_annotations_a_module_hides_from_get_type_hints_are_still_checked() -> None:
    check({"target": "hidden_names", "steps": [1, 2], "other": "anything"})  # `Undefined`: left unchecked
    with pytest.raises(ConfigValueError, match=r"part\.steps=\['a'\] has the wrong type: .* a list of int"):
        check({"target": "hidden_names", "steps": ["a"]})


def test_an_interpolation_only_the_job_resolves_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NNLAB_TEST_UNSET", raising=False)  # (a job could set it; here it cannot resolve)
    check({"target": "milestones", "milestones": "${oc.env:NNLAB_TEST_UNSET}"})
    check({"target": "weights", "_args_": ["${oc.env:NNLAB_TEST_UNSET}"], "scale": {"a": "${oc.env:NNLAB_TEST_UNSET}"}})


def test_a_nested_object_is_not_taken_for_a_wrong_value() -> None:
    check({"target": "weights", "names": {"_target_": "builtins.tuple", "_args_": [["a", "b"]]}})


# ------------------------------------------------------------------------ through the command
def test_milestones_of_the_wrong_type_stop_the_run(tmp_path: Path) -> None:
    """Before, MultiStepLR's `milestones: "Iterable[int]"` was not checked and 10 epochs ran with a
    learning rate that never changed."""
    args = [*TINY, "scheduler=multistep", "scheduler.milestones=[a,b]", f"hydra.run.dir={tmp_path / 'run'}"]
    result = run_cli(args, tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith(
        "Error: scheduler.milestones=['a', 'b'] has the wrong type: "
        "torch.optim.lr_scheduler.MultiStepLR expects a list of int."
    ), lines[0]
    assert not (tmp_path / "run" / "metrics.json").exists()
    # The fix it gives is a value that passes.
    fix = re.search(r"'(scheduler\.milestones=[^']+)'", lines[0]).group(1)
    validate_config(compose_config([*TINY, "scheduler=multistep", fix], tmp_path / "fixed"))


def test_a_hint_with_a_default_shows_the_default_as_the_fix(tmp_path: Path) -> None:
    cfg = compose_config(["optimizer=adam", "optimizer.betas=[0.9]"], tmp_path)
    with pytest.raises(ConfigValueError) as info:
        validate_config(cfg)
    assert "optimizer.betas=[0.9] has the wrong type: torch.optim.Adam expects a list of 2 values" in str(info.value)
    assert "'optimizer.betas=[0.9,0.999]'" in str(info.value)
