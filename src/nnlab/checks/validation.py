"""Start-up checks of a composed config against the constructors it names.

Every config node with a `_target_` is checked before anything is built: each key must be a
parameter of the target (with a "did you mean" suggestion), and each value must match the
parameter's type hint. Constructors are the schema (flat, typed keyword arguments), so there is
no second copy of it to keep in sync. Ranges are checked by the constructors themselves when
they are built, and here for torch optimizers, whose signatures carry no ranges.

This module checks the top-level values and walks the tree; `nnlab.checks.target_args` checks one
`_target_` node (binding its arguments, type checks, optimizer ranges) and `nnlab.checks.type_hints`
says whether a value fits a hint, and how to write one that does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from nnlab.checks.target_args import check_target
from nnlab.checks.type_hints import describe, matches
from nnlab.errors import ConfigValueError, check_choice, check_range

# The types of train.yaml's plain top-level values (everything else lives in a `_target_` node
# or a group). Kept as a table because the YAML cannot say which keys may be null, nor the type
# of a null default (ckpt_path); tests/checks/test_configs.py checks that its keys are exactly
# train.yaml's plain keys and that each packaged value fits its type.
TOP_LEVEL: dict[str, Any] = {
    "seed": int,
    "optimized_metric": str | None,
    "optimized_mode": str,
    "print_config": bool,
    "ckpt_path": str | None,
    "baselines": str | list | None,  # auto, a list of names or []; the names are checked by nnlab.analysis.classical
}


def validate_config(cfg: DictConfig, skip: Sequence[str] = ("hydra",)) -> None:
    """Raise `ConfigValueError` for the first unknown key or mistyped value under a `_target_`."""
    for key, hint in TOP_LEVEL.items():
        if key not in cfg:
            continue
        value = OmegaConf.to_container(cfg[key]) if isinstance(cfg[key], ListConfig) else cfg[key]
        if not matches(value, hint):
            raise ConfigValueError(f"{key}={cfg[key]!r} has the wrong type: expected {describe(hint)}.")
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
            check_target(node, path)
        keys = list(node) if isinstance(node, DictConfig) else range(len(node))
        for k in keys:
            try:
                child = node[k]
            except Exception:  # an interpolation only the running job can resolve
                continue
            _walk(child, f"{path}.{k}" if isinstance(node, DictConfig) else f"{path}[{k}]")
