"""Start-up checks of a composed config against the constructors it names.

Every config node with a `_target_` is checked before anything is built: each key must be a
parameter of the target (with a "did you mean" suggestion), and each value must match the
parameter's type hint. Constructors are the schema (flat, typed keyword arguments), so there is
no second copy of it to keep in sync. Ranges are checked by the constructors themselves when
they are built, and here for torch optimizers, whose signatures carry no ranges.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable, Sequence
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


# Plain values at the top of train.yaml (everything else lives in a `_target_` node).
TOP_LEVEL: dict[str, Any] = {
    "seed": int,
    "optimized_metric": str | None,
    "optimized_mode": str,
    "print_config": bool,
    "ckpt_path": str | None,
}


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
    if isinstance(node, DictConfig):
        if "_target_" in node:
            _check_target(node, path)
        for k in node:
            _walk(node[k], f"{path}.{k}")
    elif isinstance(node, ListConfig):
        for i, item in enumerate(node):
            _walk(item, f"{path}[{i}]")


def _check_target(node: DictConfig, path: str) -> None:
    from hydra.utils import get_object

    target = node._target_
    try:
        obj = get_object(target)
    except Exception as e:
        raise ConfigValueError(
            f"{path}._target_={target!r} cannot be imported ({e}). Check the spelling of the class or "
            "function path, e.g. torch.optim.Adam or nnlab.models.mlp.MLP."
        ) from None
    func: Callable = obj.__init__ if inspect.isclass(obj) else obj
    try:
        params = inspect.signature(obj).parameters
    except (TypeError, ValueError):  # builtins without a signature: nothing to check
        return
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    try:
        hints = typing.get_type_hints(func)
    except Exception:  # unresolvable annotations in a third-party signature
        hints = {}
    is_optimizer = target.startswith("torch.optim.") and "lr_scheduler" not in target
    for key in node:
        if str(key).startswith("_"):
            continue
        full = f"{path}.{key}"
        if key not in params:
            if takes_any:
                continue
            valid = [n for n, p in params.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
            raise ConfigValueError(
                f"Unknown key '{full}': {target} has no parameter '{key}'.{did_you_mean(str(key), valid)} "
                f"Valid keys: {', '.join(valid)}."
            )
        try:
            value = OmegaConf.to_container(node[key], resolve=True) if OmegaConf.is_config(node[key]) else node[key]
        except Exception:  # an interpolation only the running job can resolve, e.g. ${hydra:runtime...}
            continue
        if isinstance(value, dict) and "_target_" in value:
            continue  # a nested object, checked on its own
        hint = hints.get(key)
        choices = _literal_choices(hint)
        if choices and isinstance(value, str) and not _matches(value, hint):
            check_choice(full, value, choices)  # with a "did you mean"
        if hint is not None and not _matches(value, hint):
            raise ConfigValueError(
                f"{full}={value!r} has the wrong type: {target} expects {_describe(hint)}. "
                f"Fix the value, e.g. on the command line: {full}=<{_describe(hint)}>."
            )
        if is_optimizer and key in OPTIMIZER_RANGES and isinstance(value, (int, float)):
            low, high, low_inclusive = OPTIMIZER_RANGES[key]
            check_range(full, value, low, high, low_inclusive=low_inclusive)
    if is_optimizer:
        _try_optimizer(obj, node, path)


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
    """Whether a config value (plain Python, from YAML or the command line) fits a type hint."""
    if hint is Any or isinstance(hint, typing.TypeVar):
        return True
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (Union, types.UnionType):
        return any(_matches(value, a) for a in args)
    if origin is Literal:
        return value in args
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (list, tuple, Sequence, typing.Sequence) or hint in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            args = (args[0],)
        if origin is tuple and args and len(args) == len(value) and len(args) > 1:
            return all(_matches(v, a) for v, a in zip(value, args))
        return not args or all(_matches(v, args[0]) for v in value)
    if origin is dict or hint is dict:
        return isinstance(value, dict)
    return True  # tensors, callables, modules...: supplied at the call site, not checked here


def _literal_choices(hint: Any) -> list[str]:
    """The string choices of a `Literal[...]` hint (also inside `X | None`), else []."""
    if typing.get_origin(hint) is Literal:
        return [a for a in typing.get_args(hint) if isinstance(a, str)]
    if typing.get_origin(hint) in (Union, types.UnionType):
        return [c for a in typing.get_args(hint) for c in _literal_choices(a)]
    return []


def _describe(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(hint))
    if origin is Literal:
        return "one of " + ", ".join(map(repr, typing.get_args(hint)))
    if hint is type(None):
        return "null"
    if origin is not None:
        args = ", ".join(_describe(a) for a in typing.get_args(hint) if a is not Ellipsis)
        return f"a list of {args}" if origin in (list, tuple, Sequence, typing.Sequence) else str(hint)
    return getattr(hint, "__name__", str(hint))
