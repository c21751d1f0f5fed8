"""Clearer messages for command-line overrides that Hydra rejects while composing the config.

Hydra's own messages for a misspelled key suggest appending it with `+` (which would silently
add an unused key) and list no valid keys; for an unknown choice they list the options among
search-path details. These rewrite both into one paragraph with a "did you mean".
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable

from nnlab.errors import did_you_mean


def explain(hydra_message: str, overrides: list[str]) -> str | None:
    """A rewritten message for a Hydra composition error, or None to keep Hydra's own."""
    m = re.search(
        r"(NotADirectoryError|FileExistsError|PermissionError|OSError): \[Errno \d+\] ([^:]+): '([^']+)'", hydra_message
    )
    if m:  # Hydra could not create the run folder (it does so before the run starts)
        return (
            f"Cannot create the run folder '{m.group(3)}' ({m.group(2).lower()}): a part of the path is a file, or "
            "the place is not writable. Set hydra.run.dir (or paths.log_dir, or the NNLAB_ROOT environment "
            "variable) to a folder that can be created."
        )
    m = re.search(r"Could not override '([^']+)'", hydra_message)
    if m:
        return _unknown_key(m.group(1), overrides)
    m = re.search(r"Could not find '([^']+)/([^'/]+)'", hydra_message)
    if m:
        group, name = m.group(1), m.group(2)
        options = re.findall(r"^\t(\S+)$", hydra_message, flags=re.MULTILINE)
        if options:
            return (
                f"Unknown choice {group}={name}: there is no configs/{group}/{name}.yaml.{did_you_mean(name, options)}"
                f" Choose one of: {', '.join(options)}."
            )
    return None


def _unknown_key(key: str, overrides: list[str]) -> str:
    """Name the misspelled key, the closest existing one, and the keys of its parent node."""
    from hydra import compose, initialize_config_module
    from omegaconf import DictConfig, OmegaConf

    parent, _, leaf = key.rpartition(".")
    # Compose with the group choices only: dotted value overrides may be the broken ones.
    choices = [o for o in overrides if "=" in o and "." not in o.split("=", 1)[0] and not o.startswith(("+", "~"))]
    node = None
    for attempt in (choices, []):  # the choices themselves may be broken: fall back to the defaults
        try:
            with initialize_config_module("nnlab.configs", version_base="1.3"):
                cfg = compose("train", overrides=attempt)
            node = OmegaConf.select(cfg, parent) if parent else cfg
            break
        except Exception:
            continue
    if not isinstance(node, DictConfig):
        return f"Unknown key '{key}': '{parent}' is not a config node. Check the spelling of the path."
    keys = [str(k) for k in node if not str(k).startswith("_")]
    if not parent:  # a misspelled group name (e.g. experimnt=...) is a top-level key too
        from importlib.resources import files

        keys += sorted(
            p.name
            for p in files("nnlab.configs").iterdir()
            if p.is_dir() and p.name not in keys and not p.name.startswith("_")
        )
    hint = did_you_mean(leaf, keys, prefix=f"{parent}." if parent else "")
    where = f"'{parent}'" if parent else "the top level"
    children = OmegaConf.to_container(node, resolve=False)  # (interpolations need a running job)
    deeper = [
        f"{parent}.{k}.{leaf}" if parent else f"{k}.{leaf}"
        for k in keys
        if isinstance(children.get(k), dict) and leaf in children[k]
    ]
    if not hint and deeper:  # e.g. data.download=false for data.dataset.download
        return (
            f"Unknown key '{key}': {where} has no key '{leaf}'. Did you mean '{deeper[0]}'?"
            f" Keys of {where}: {', '.join(keys)}."
        )
    return (
        f"Unknown key '{key}': {where} has no key '{leaf}'.{hint}"
        f" Keys of {where}: {', '.join(keys)}. (To add a new key on purpose, prefix it with '+'.)"
    )


def explainer(node: str, target: Callable[..., object]) -> Callable[[str, list[str]], str | None]:
    """`explain`, plus the keys of a command's own config node (`lr_find`, `ensemble`): a
    misspelled `<node>.<key>` gets a "did you mean" among `target`'s constructor arguments."""

    def explain_with_node(hydra_message: str, overrides: list[str]) -> str | None:
        m = re.search(rf"Could not override '({node}\.([^'.]+))'", hydra_message)
        if m is None:
            return explain(hydra_message, overrides)
        key, leaf = m.groups()
        keys = list(inspect.signature(target).parameters)
        return (
            f"Unknown key '{key}': '{node}' has no key '{leaf}'.{did_you_mean(leaf, keys, prefix=f'{node}.')}"
            f" Keys of '{node}': {', '.join(keys)}."
        )

    return explain_with_node
