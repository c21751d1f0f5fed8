"""Type hints read as the schema of config values (a constructor's signature is its config's
schema, `nnlab.checks.validation`): whether a plain value from YAML or the command line fits a hint,
the hint in words ("a list of int", "int or null"), and a command-line value that fits it, for
the fix an error message suggests.

Two values fit every hint: one that only the running job can resolve (`UNRESOLVED`), and a
nested `_target_` node, which Hydra builds into an object before the call and which is checked
as a node of its own (`nnlab.checks.target_args`).
"""

from __future__ import annotations

import collections.abc
import inspect
import numbers
import re
import sys
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, Literal, Union


class _Unresolved:
    """Stands for a value that only the running job can resolve (e.g. ${hydra:runtime.output_dir}):
    it takes its place in the binding, and fits every hint."""

    def __repr__(self) -> str:
        return "<interpolation>"


UNRESOLVED = _Unresolved()


def is_object(value: Any) -> bool:
    """A nested `_target_` node: Hydra builds it into an object before the call."""
    return isinstance(value, dict) and "_target_" in value


def hints_of(obj: Callable, params: Mapping[str, inspect.Parameter]) -> dict[str, Any]:
    """Each parameter's type hint, evaluated. Libraries that import typing names only for type
    checkers (torch.optim.lr_scheduler: `milestones: "Iterable[int]"`) make `get_type_hints`
    fail as a whole; then each annotation is evaluated on its own, with the names of `typing` and
    `collections.abc` at hand, and one that still cannot be evaluated is left unchecked."""
    func = obj.__init__ if inspect.isclass(obj) else obj
    try:
        return typing.get_type_hints(func)
    except Exception:
        pass
    module_names = getattr(inspect.unwrap(func), "__globals__", None)
    if module_names is None:
        module_names = vars(sys.modules.get(getattr(obj, "__module__", ""), typing))
    names = {**vars(collections.abc), **vars(typing), **module_names}
    hints = {}
    for name, p in params.items():
        annotation = p.annotation
        if annotation is inspect.Parameter.empty:
            continue
        holder = types.SimpleNamespace(__annotations__={name: annotation})
        try:
            hints[name] = typing.get_type_hints(holder, globalns=names)[name]
        except Exception:  # a name that exists only for type checkers
            continue
    return hints


def matches(value: Any, hint: Any) -> bool:
    """Whether a config value (plain Python, from YAML or the command line) fits a type hint,
    element types included: `Iterable[int]` wants a list of ints, `tuple[int, int]` a list of two,
    `dict[str, float]` a mapping of names to numbers. A list from YAML stands for any sequence or
    iterable (Hydra passes it as a list). Hints that a config value cannot be (tensors, modules,
    callables) are supplied at the call site, so they pass."""
    hint = _unwrap(hint)
    if hint is Any or isinstance(hint, typing.TypeVar) or value is UNRESOLVED or is_object(value):
        return True
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (Union, types.UnionType):
        return any(matches(value, a) for a in args)
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in args)  # (True == 1, but not as a choice)
    if hint is type(None) or hint is None:
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if hint in NUMBERS:
        return isinstance(value, hint) and not isinstance(value, bool)
    container = _container(hint)
    if container == "mapping":
        if not isinstance(value, dict):
            return False
        key_hint, value_hint = args if len(args) == 2 else (Any, Any)
        return all(matches(k, key_hint) and matches(v, value_hint) for k, v in value.items())
    if container == "tuple":
        if not isinstance(value, list | tuple):
            return False
        if not args or (len(args) == 2 and args[1] is Ellipsis):
            return all(matches(v, args[0]) for v in value) if args else True
        if args == ((),):  # tuple[()]: the empty tuple
            return len(value) == 0
        return len(value) == len(args) and all(matches(v, a) for v, a in zip(value, args))
    if container == "sequence":
        # A string is a sequence of characters, but a config string given for a list is a mistake.
        if not isinstance(value, list | tuple):
            return False
        return not args or all(matches(v, args[0]) for v in value)
    return True  # tensors, callables, modules...: supplied at the call site, not checked here


# Abstract number types a hint may name (`numbers.Real`); bools are not numbers in a config.
NUMBERS = (numbers.Number, numbers.Complex, numbers.Real, numbers.Rational, numbers.Integral)


def _unwrap(hint: Any) -> Any:
    """`Annotated[X, ...]` and `NewType("N", X)` check as X."""
    while True:
        if typing.get_origin(hint) is typing.Annotated:
            hint = typing.get_args(hint)[0]
        elif hasattr(hint, "__supertype__"):
            hint = hint.__supertype__
        else:
            return hint


def _container(hint: Any) -> str | None:
    """The kind of container ("mapping", "tuple" or "sequence") for the container hints a YAML list or mapping can
    fill (builtins and `collections.abc`/`typing` generics, bare or subscripted), else None.
    Only standard containers count: a tensor or an `nn.Sequential` is iterable too, but no YAML
    value is one."""
    cls = typing.get_origin(hint) or hint
    if not isinstance(cls, type) or cls.__module__ not in ("builtins", "collections.abc", "typing"):
        return None
    if cls in (str, bytes, bytearray):
        return None
    if issubclass(cls, collections.abc.Mapping):
        return "mapping"
    if cls is tuple:
        return "tuple"
    if issubclass(cls, collections.abc.Iterable):
        return "sequence"
    return None


def literal_choices(hint: Any) -> list[str]:
    """The string choices of a `Literal[...]` hint (also inside `X | None`), else []."""
    hint = _unwrap(hint)
    if typing.get_origin(hint) is Literal:
        return [a for a in typing.get_args(hint) if isinstance(a, str)]
    if typing.get_origin(hint) in (Union, types.UnionType):
        return [c for a in typing.get_args(hint) for c in literal_choices(a)]
    return []


def describe(hint: Any) -> str:
    """A type hint in words, as a config value is written: "a list of int", "int or null"."""
    hint = _unwrap(hint)
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (Union, types.UnionType):
        return " or ".join(describe(a) for a in args)
    if origin is Literal:
        return "one of " + ", ".join(map(repr, args))
    if hint is type(None) or hint is None:
        return "null"
    if hint is Any:
        return "any value"
    container = _container(hint)
    if container == "mapping":
        return f"a mapping of {describe(args[0])} to {describe(args[1])}" if len(args) == 2 else "a mapping"
    if container == "tuple":
        if not args or (len(args) == 2 and args[1] is Ellipsis):
            return f"a list of {describe(args[0])}" if args else "a list"
        return f"a list of {len(args)} values ({', '.join(describe(a) for a in args)})"
    if container == "sequence":
        return f"a list of {describe(args[0])}" if args and args[0] is not Any else "a list"
    if origin is not None:
        return str(hint)
    return getattr(hint, "__name__", str(hint))


# Example values, as typed on the command line, for the fix a type error suggests.
EXAMPLES: dict[Any, str] = {bool: "true", int: "10", float: "0.1", str: "name"}
NUMBER_LISTS: dict[Any, str] = {int: "[10,20]", float: "[0.1,0.2]"}  # two distinct values read better


def example_of(hint: Any) -> str | None:
    """A command-line value that fits `hint` (Hydra's override syntax), or None when no config
    value can (a tensor, a callable)."""
    hint = _unwrap(hint)
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (Union, types.UnionType):
        examples = [example_of(a) for a in args if a is not type(None)]
        return next((e for e in examples if e is not None), "null")
    if origin is Literal:
        first = args[0]
        return str(first).lower() if isinstance(first, bool) else "null" if first is None else str(first)
    if hint is type(None) or hint is None:
        return "null"
    if hint in EXAMPLES:
        return EXAMPLES[hint]
    if hint in NUMBERS:
        return "1" if hint is numbers.Integral else "0.1"
    container = _container(hint)
    if container == "mapping":
        key, value = (example_of(args[0]), example_of(args[1])) if len(args) == 2 else ("name", "1")
        return None if key is None or value is None else f"{{{key}:{value}}}"
    if container == "tuple" and args and not (len(args) == 2 and args[1] is Ellipsis):
        parts = [example_of(a) for a in args if a != ()]
        return None if None in parts else f"[{','.join(parts)}]"
    if container in ("tuple", "sequence"):
        item = args[0] if args else Any
        if item in NUMBER_LISTS:
            return NUMBER_LISTS[item]
        part = "1" if item is Any else example_of(item)
        return None if part is None else f"[{part},{part}]"
    return None


def as_override(value: Any) -> str | None:
    """A plain value written in Hydra's override syntax (`[0.9,0.999]`, `true`, `null`), or None
    for a value that has no such form (an object, a string the grammar would need quoted)."""
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return value if re.fullmatch(r"[A-Za-z_][\w./-]*", value) else None
    if isinstance(value, list | tuple):
        parts = [as_override(v) for v in value]
        return None if None in parts else f"[{','.join(parts)}]"
    if isinstance(value, dict):
        pairs = [(as_override(k), as_override(v)) for k, v in value.items()]
        return None if None in sum(pairs, ()) else "{" + ",".join(f"{k}:{v}" for k, v in pairs) + "}"
    return None
