"""Start-up checks of a composed config against the constructors it names.

Every config node with a `_target_` is checked before anything is built: each key must be a
parameter of the target (with a "did you mean" suggestion), and each value must match the
parameter's type hint. Constructors are the schema (flat, typed keyword arguments), so there is
no second copy of it to keep in sync. Ranges are checked by the constructors themselves when
they are built, and here for torch optimizers, whose signatures carry no ranges.
"""

from __future__ import annotations

import collections.abc
import inspect
import numbers
import re
import sys
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, Union

from omegaconf import DictConfig, ListConfig, OmegaConf

from nnlab.errors import ConfigValueError, check_choice, check_range, did_you_mean

# (low, high, low_inclusive) for torch optimizer hyperparameters.
OPTIMIZER_RANGES: dict[str, tuple[float, float | None, bool]] = {
    "lr": (0.0, None, False),
    "weight_decay": (0.0, None, True),
    "momentum": (0.0, 1.0, True),
    "dampening": (0.0, 1.0, True),
    "alpha": (0.0, 1.0, True),
    "eps": (0.0, None, False),
    "lr_decay": (0.0, None, True),
}


# The types of train.yaml's plain top-level values (everything else lives in a `_target_` node
# or a group). Kept as a table because the YAML cannot say which keys may be null, nor the type
# of a null default (ckpt_path); tests/test_configs.py checks that its keys are exactly
# train.yaml's plain keys and that each packaged value fits its type.
TOP_LEVEL: dict[str, Any] = {
    "seed": int,
    "optimized_metric": str | None,
    "optimized_mode": str,
    "print_config": bool,
    "ckpt_path": str | None,
}


VAR_POSITIONAL, VAR_KEYWORD = inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD


def validate_config(cfg: DictConfig, skip: Sequence[str] = ("hydra",)) -> None:
    """Raise `ConfigValueError` for the first unknown key or mistyped value under a `_target_`."""
    for key, hint in TOP_LEVEL.items():
        if key in cfg and not _matches(cfg[key], hint):
            raise ConfigValueError(f"{key}={cfg[key]!r} has the wrong type: expected {_describe(hint)}.")
    if "seed" in cfg:
        check_range("seed", cfg.seed, 0, 2**32 - 1)
    if "optimized_mode" in cfg:
        check_choice("optimized_mode", cfg.optimized_mode, ["min", "max"])
    if isinstance(cfg.get("paths"), DictConfig):
        _check_paths(cfg.paths)
    for key in cfg:
        if key not in skip:
            _walk(cfg[key], str(key))


def _check_paths(paths: DictConfig) -> None:
    """The `paths` group has no `_target_`: each entry must be a non-empty folder name."""
    for key in paths:
        try:
            value = paths[key]
        except Exception:  # an interpolation only the running job can resolve
            continue
        if not isinstance(value, str) or not value.strip():
            raise ConfigValueError(
                f"paths.{key}={value!r} is not a folder name. Give a path, e.g. paths.{key}=/data/nnlab "
                "(or set NNLAB_ROOT to move data and outputs together)."
            )


def _walk(node: Any, path: str) -> None:
    if isinstance(node, DictConfig | ListConfig):
        if isinstance(node, DictConfig) and "_target_" in node:
            _check_target(node, path)
        keys = list(node) if isinstance(node, DictConfig) else range(len(node))
        for k in keys:
            try:
                child = node[k]
            except Exception:  # an interpolation only the running job can resolve
                continue
            _walk(child, f"{path}.{k}" if isinstance(node, DictConfig) else f"{path}[{k}]")


def _check_target(node: DictConfig, path: str) -> None:
    """Bind the node's arguments (`_args_` positionally, the other keys by name) to its target's
    signature, as Hydra's `instantiate` will, and check each bound value against its type hint."""
    from hydra.utils import get_object

    target = node._target_
    try:
        obj = get_object(target)
    except Exception as e:
        raise ConfigValueError(
            f"{path}._target_={target!r} cannot be imported ({e}). Check the spelling of the class or "
            "function path, e.g. torch.optim.Adam or nnlab.models.mlp.MLP."
        ) from None
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):  # builtins without a signature: nothing to check
        return
    params = signature.parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    keys = [str(k) for k in node if not str(k).startswith("_")]  # (the rest are Hydra's: _target_, _partial_ ...)
    for key in keys:
        if key not in params and not takes_any:
            valid = [n for n, p in params.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
            raise ConfigValueError(
                f"Unknown key '{path}.{key}': {target} has no parameter '{key}'.{did_you_mean(key, valid)} "
                f"Valid keys: {', '.join(valid)}."
            )
    args = node.get("_args_", [])
    if not isinstance(args, ListConfig | list):
        raise ConfigValueError(
            f"{path}._args_={_plain(args)!r} is not a list: Hydra passes _args_ to {target} as its positional "
            f"arguments. Give a list, e.g. {path}._args_=[{_plain(args)!r}], or name the argument as a key."
        )
    where = {**{f"_args_[{i}]": f"{path}._args_[{i}]" for i in range(len(args))}, **{k: f"{path}.{k}" for k in keys}}
    positional = [_plain(args, i) for i in range(len(args))]
    try:
        bound = signature.bind_partial(*positional, **{k: _plain(node, k) for k in keys})
    except TypeError as e:
        raise ConfigValueError(_bind_error(e, path, target, params, len(args), keys)) from None

    # Positional values fill the positional parameters in order; any beyond go to *args.
    in_order = _positional(params)
    arg_of = {name: i for i, name in enumerate(in_order[: len(positional)])}
    hints = _type_hints(obj, params)
    is_optimizer = target.startswith("torch.optim.") and "lr_scheduler" not in target
    for name, value in bound.arguments.items():
        kind = params[name].kind
        if kind is VAR_POSITIONAL:  # the extra _args_, each of the *args hint
            start = len(positional) - len(value)
            items = [(f"_args_[{start + i}]", v) for i, v in enumerate(value)]
        elif kind is VAR_KEYWORD:  # the keys **kwargs takes, each of its hint
            items = list(value.items())
        else:
            items = [(f"_args_[{arg_of[name]}]" if name in arg_of else name, value)]
        for key, v in items:
            default = params[name].default
            if v is None and default is None:
                continue  # `x: int = None`: an implicit Optional that older signatures rely on
            _check_value(
                where[key],
                v,
                hints.get(name),
                target,
                name if key.startswith("_args_") else None,
                default if kind not in (VAR_POSITIONAL, VAR_KEYWORD) else inspect.Parameter.empty,
            )
            if is_optimizer and name in OPTIMIZER_RANGES and isinstance(v, int | float) and not isinstance(v, bool):
                low, high, low_inclusive = OPTIMIZER_RANGES[name]
                check_range(where[key], v, low, high, low_inclusive=low_inclusive)
    if is_optimizer:
        _try_optimizer(obj, node, path)


class _Unresolved:
    """Stands for a value that only the running job can resolve (e.g. ${hydra:runtime.output_dir}):
    it takes its place in the binding, and fits every hint."""

    def __repr__(self) -> str:
        return "<interpolation>"


UNRESOLVED = _Unresolved()


def _plain(container: Any, key: Any = None) -> Any:
    """`container[key]` (or `container` itself) as plain Python, interpolations resolved."""
    try:
        value = container if key is None else container[key]
        return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
    except Exception:  # an interpolation only the running job can resolve
        return UNRESOLVED


def _positional(params: Mapping[str, inspect.Parameter]) -> list[str]:
    """The parameters `_args_` values fill, in order."""
    return [n for n, p in params.items() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


def _bind_error(
    error: TypeError, path: str, target: str, params: Mapping[str, inspect.Parameter], n_args: int, keys: list[str]
) -> str:
    """The one-paragraph message for arguments that do not bind to the target's signature."""
    text = str(error)
    m = re.search(r"multiple values for argument '(\w+)'", text)
    if m:  # a positional _args_ value and a key for the same parameter
        name = m.group(1)
        i = _positional(params).index(name)
        return (
            f"{path} gives '{name}' twice: as {path}._args_[{i}] and as {path}.{name}, and {target} takes it once. "
            f"Remove one of them, e.g. drop {path}.{name} (on the command line: ~{path}.{name})."
        )
    if "too many positional arguments" in text:
        names = _positional(params)
        listed = f" ({', '.join(names)})" if names else ""
        return (
            f"{path}._args_ has {n_args} values, but {target} takes at most {len(names)} positional "
            f"argument(s){listed}. Remove the extra values from {path}._args_, "
            "or give each argument as a key under its parameter's name."
        )
    m = re.search(r"'(\w+)' parameter is positional only", text)
    if m and m.group(1) in keys:
        name = m.group(1)
        return (
            f"{path}.{name}: {target} takes '{name}' by position only, not by name. Remove {path}.{name} and give "
            f"its value in {path}._args_, in the place of '{name}' among the parameters."
        )
    return f"{path}: the arguments do not fit {target}'s parameters ({text}). Check {path}'s keys and _args_."


def _check_value(
    full: str, value: Any, hint: Any, target: str, parameter: str | None, default: Any = inspect.Parameter.empty
) -> None:
    """Raise a one-paragraph `ConfigValueError` unless `value` (configured at `full`) fits `hint`.
    `parameter` names the parameter a positional `_args_` value goes to; the fix shows the
    parameter's `default` when it is a config value of the right type, else an example."""
    if hint is None or value is UNRESOLVED or _is_object(value):
        return  # a nested `_target_` object is checked on its own
    choices = _literal_choices(hint)
    if choices and isinstance(value, str) and not _matches(value, hint):
        check_choice(full, value, choices)  # with a "did you mean"
    if _matches(value, hint):
        return
    wanted = _describe(hint)
    for_what = f" for its parameter '{parameter}'" if parameter else ""
    example = _as_override(default) if default is not None and _matches(default, hint) else None
    example = example or _example(hint)
    if parameter:
        fix = f"Fix that value of {full.rpartition('[')[0]}" + (f", e.g. {example}." if example else ".")
    elif example is None:
        fix = "Fix the value."
    else:
        quote = "'" if any(c in example for c in "[]{}()|&;<>*?$ '\"") else ""
        fix = f"Fix the value, e.g. on the command line: {quote}{full}={example}{quote}."
    raise ConfigValueError(f"{full}={value!r} has the wrong type: {target} expects {wanted}{for_what}. {fix}")


def _as_override(value: Any) -> str | None:
    """A plain value written in Hydra's override syntax (`[0.9,0.999]`, `true`, `null`), or None
    for a value that has no such form (an object, a string the grammar would need quoted)."""
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return value if re.fullmatch(r"[A-Za-z_][\w./-]*", value) else None
    if isinstance(value, list | tuple):
        parts = [_as_override(v) for v in value]
        return None if None in parts else f"[{','.join(parts)}]"
    if isinstance(value, dict):
        pairs = [(_as_override(k), _as_override(v)) for k, v in value.items()]
        return None if None in sum(pairs, ()) else "{" + ",".join(f"{k}:{v}" for k, v in pairs) + "}"
    return None


def _is_object(value: Any) -> bool:
    """A nested `_target_` node: Hydra builds it into an object before the call."""
    return isinstance(value, dict) and "_target_" in value


def _type_hints(obj: Callable, params: Mapping[str, inspect.Parameter]) -> dict[str, Any]:
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


def _try_optimizer(optimizer_cls: Callable, node: DictConfig, path: str) -> None:
    """Build the optimizer on one dummy parameter, so torch's own consistency checks (e.g.
    Nesterov needs momentum > 0) fail now, with the config path, instead of after data loading."""
    import torch

    kwargs = OmegaConf.to_container(node, resolve=True)
    kwargs = {k: v for k, v in kwargs.items() if not k.startswith("_")}
    try:
        optimizer_cls([torch.nn.Parameter(torch.zeros(1))], **kwargs)
    except (ValueError, TypeError, RuntimeError) as e:  # (RuntimeError: e.g. fused and foreach both true)
        settings = ", ".join(f"{path}.{k}={v}" for k, v in kwargs.items())
        raise ConfigValueError(f"{path}: {node._target_} rejects {settings}: {str(e).rstrip('.')}.") from None


def _matches(value: Any, hint: Any) -> bool:
    """Whether a config value (plain Python, from YAML or the command line) fits a type hint,
    element types included: `Iterable[int]` wants a list of ints, `tuple[int, int]` a list of two,
    `dict[str, float]` a mapping of names to numbers. A list from YAML stands for any sequence or
    iterable (Hydra passes it as a list). Hints that a config value cannot be (tensors, modules,
    callables) are supplied at the call site, so they pass."""
    hint = _unwrap(hint)
    if hint is Any or isinstance(hint, typing.TypeVar) or value is UNRESOLVED or _is_object(value):
        return True
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (Union, types.UnionType):
        return any(_matches(value, a) for a in args)
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
        return all(_matches(k, key_hint) and _matches(v, value_hint) for k, v in value.items())
    if container == "tuple":
        if not isinstance(value, list | tuple):
            return False
        if not args or (len(args) == 2 and args[1] is Ellipsis):
            return all(_matches(v, args[0]) for v in value) if args else True
        if args == ((),):  # tuple[()]: the empty tuple
            return len(value) == 0
        return len(value) == len(args) and all(_matches(v, a) for v, a in zip(value, args))
    if container == "sequence":
        # A string is a sequence of characters, but a config string given for a list is a mistake.
        if not isinstance(value, list | tuple):
            return False
        return not args or all(_matches(v, args[0]) for v in value)
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


def _literal_choices(hint: Any) -> list[str]:
    """The string choices of a `Literal[...]` hint (also inside `X | None`), else []."""
    hint = _unwrap(hint)
    if typing.get_origin(hint) is Literal:
        return [a for a in typing.get_args(hint) if isinstance(a, str)]
    if typing.get_origin(hint) in (Union, types.UnionType):
        return [c for a in typing.get_args(hint) for c in _literal_choices(a)]
    return []


def _describe(hint: Any) -> str:
    """A type hint in words, as a config value is written: "a list of int", "int or null"."""
    hint = _unwrap(hint)
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is Literal:
        return "one of " + ", ".join(map(repr, args))
    if hint is type(None) or hint is None:
        return "null"
    if hint is Any:
        return "any value"
    container = _container(hint)
    if container == "mapping":
        return f"a mapping of {_describe(args[0])} to {_describe(args[1])}" if len(args) == 2 else "a mapping"
    if container == "tuple":
        if not args or (len(args) == 2 and args[1] is Ellipsis):
            return f"a list of {_describe(args[0])}" if args else "a list"
        return f"a list of {len(args)} values ({', '.join(_describe(a) for a in args)})"
    if container == "sequence":
        return f"a list of {_describe(args[0])}" if args and args[0] is not Any else "a list"
    if origin is not None:
        return str(hint)
    return getattr(hint, "__name__", str(hint))


# Example values, as typed on the command line, for the fix a type error suggests.
EXAMPLES: dict[Any, str] = {bool: "true", int: "10", float: "0.1", str: "name"}
NUMBER_LISTS: dict[Any, str] = {int: "[10,20]", float: "[0.1,0.2]"}  # two distinct values read better


def _example(hint: Any) -> str | None:
    """A command-line value that fits `hint` (Hydra's override syntax), or None when no config
    value can (a tensor, a callable)."""
    hint = _unwrap(hint)
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (Union, types.UnionType):
        examples = [_example(a) for a in args if a is not type(None)]
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
        key, value = (_example(args[0]), _example(args[1])) if len(args) == 2 else ("name", "1")
        return None if key is None or value is None else f"{{{key}:{value}}}"
    if container == "tuple" and args and not (len(args) == 2 and args[1] is Ellipsis):
        parts = [_example(a) for a in args if a != ()]
        return None if None in parts else f"[{','.join(parts)}]"
    if container in ("tuple", "sequence"):
        item = args[0] if args else Any
        if item in NUMBER_LISTS:
            return NUMBER_LISTS[item]
        part = "1" if item is Any else _example(item)
        return None if part is None else f"[{part},{part}]"
    return None
