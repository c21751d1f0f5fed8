"""One config node with a `_target_`, checked against the constructor (or function) it names:
its arguments (`_args_` positionally, the other keys by name) are bound to the target's
signature as Hydra's `instantiate` will bind them, each bound value is checked against its
parameter's type hint (`nnlab.checks.type_hints`), and a torch optimizer is also checked for the ranges
its signature cannot carry and built once on a dummy parameter. Every mistake ends in one
`ConfigValueError` paragraph that names the config key and a fix.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Mapping
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from nnlab.checks.type_hints import (
    UNRESOLVED,
    as_override,
    describe,
    example_of,
    hints_of,
    is_object,
    literal_choices,
    matches,
)
from nnlab.data.edits.renamed import renamed_message
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

VAR_POSITIONAL, VAR_KEYWORD = inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD


def check_target(node: DictConfig, path: str) -> None:
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
            renamed = renamed_message(f"{path}.{key}", _plain(node, key))
            if renamed:  # an old key (data.imbalance, data.standardize, ...), e.g. in a config from elsewhere
                raise ConfigValueError(renamed)
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
    hints = hints_of(obj, params)
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
    if hint is None or value is UNRESOLVED or is_object(value):
        return  # a nested `_target_` object is checked on its own
    choices = literal_choices(hint)
    if choices and isinstance(value, str) and not matches(value, hint):
        check_choice(full, value, choices)  # with a "did you mean"
    if matches(value, hint):
        return
    wanted = describe(hint)
    for_what = f" for its parameter '{parameter}'" if parameter else ""
    example = as_override(default) if default is not None and matches(default, hint) else None
    example = example or example_of(hint)
    if parameter:
        fix = f"Fix that value of {full.rpartition('[')[0]}" + (f", e.g. {example}." if example else ".")
    elif example is None:
        fix = "Fix the value."
    else:
        quote = "'" if any(c in example for c in "[]{}()|&;<>*?$ '\"") else ""
        fix = f"Fix the value, e.g. on the command line: {quote}{full}={example}{quote}."
    raise ConfigValueError(f"{full}={value!r} has the wrong type: {target} expects {wanted}{for_what}. {fix}")


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
