"""Clearer messages for command-line overrides that Hydra rejects while composing the config.

Hydra's own messages for a misspelled key suggest appending it with `+` (which would silently
add an unused key) and list no valid keys; for an unknown choice they list the options among
search-path details. These rewrite both into one paragraph with a "did you mean".
"""

from __future__ import annotations

import inspect
import re
import shlex
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
    m = re.search(r"^LexerNoViableAltException: (.*)\n( *)\^", hydra_message, flags=re.MULTILINE)
    if m:  # a character the override grammar reads only inside quotes (é, ;, #, ...)
        override = m.group(1)
        return _unquoted_character(override, len(m.group(2)) - len("LexerNoViableAltException: "))
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


def _unquoted_character(override: str, at: int) -> str:
    """Name the character Hydra's lexer stopped at (`at`: its index in `override`) and, for one in
    a value, the same override with that value (or list element) quoted, checked to parse.

    Hydra 1.3's override grammar reads unquoted keys and values as ASCII letters, digits and a few
    symbols (`/ - + . : $ * % @ ? |` and spaces); any other character, non-ASCII letters included
    (`données`, `é`), is accepted inside single or double quotes only: `key="/tmp/données.csv"`.
    Keys cannot be quoted at all.
    """
    if not 0 <= at < len(override):  # (a caret we cannot place: take the first non-ASCII character)
        at = next((i for i, c in enumerate(override) if not c.isascii()), 0)
    char = override[at]
    what = repr(char) + ("" if char.isascii() else " (not ASCII)")
    equals = override.find("=")
    if equals == -1 or at < equals:
        key = override[:equals] if equals != -1 else override
        return (
            f"The override {shlex.quote(override)} has {what} in its key '{key}': Hydra reads keys made of ASCII "
            "letters, digits, '_', '-' and '.' only, as every nnlab key is. Check the key's spelling "
            "(`nnlab-train --help` lists the groups, `nnlab-train --cfg job` the keys and values)."
        )
    fixed = _quote_value(override, equals + 1, at)
    if fixed is None:
        return (
            f"The override {shlex.quote(override)} has {what} in its value, which Hydra's override grammar "
            "reads only inside quotes: put the value, or the list element that holds it, in double quotes, "
            """and the whole override in single quotes for the shell, e.g. 'key="value"'."""
        )
    return (
        f"The override {shlex.quote(override)} has {what} in its value, which Hydra's override grammar reads "
        f"only inside quotes. Quote it: {shlex.quote(fixed)} (the outer single quotes keep the shell from "
        "removing the inner ones)."
    )


def _quote_value(override: str, start: int, at: int) -> str | None:
    """`override` with the part of its value around index `at` quoted so that Hydra parses it:
    the whole value when it is one (`path="données.csv"`), else the list, dict or sweep element
    that holds `at` (`[1,"é"]`, `{name:"é"}`); None when no quoting parses."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    value = override[start:]
    at -= start
    candidates = []
    if not value.lstrip().startswith(("[", "{")) and "," not in value:
        candidates.append((0, len(value)))
    for stops in ("[]{},", "[]{},:"):  # an element; then a dict value without the key before its ':'
        left = max(value.rfind(c, 0, at) for c in stops) + 1
        right = min([i for i in (value.find(c, at) for c in stops) if i != -1], default=len(value))
        candidates.append((left, right))
    parser = OverridesParser.create()
    for left, right in candidates:
        part = value[left:right].strip()
        quote = "'" if '"' in part else '"'
        before = value[:left] + value[left:right][: len(value[left:right]) - len(value[left:right].lstrip())]
        fixed = f"{override[:start]}{before}{quote}{part}{quote}{value[right:]}"
        try:
            parser.parse_override(fixed)
        except Exception:
            continue
        return fixed
    return None


def _unknown_key(key: str, overrides: list[str]) -> str:
    """Name the misspelled key, the closest existing one, and the keys of its parent node (or, for a
    key that was renamed, its new spelling)."""
    from hydra import compose, initialize_config_module
    from omegaconf import DictConfig, OmegaConf

    from nnlab.data.edits.renamed import renamed_message

    given = [o.split("=", 1) for o in overrides if "=" in o]
    renamed = renamed_message(key, next((v for k, v in given if k.lstrip("+~") == key), None))
    if renamed:
        return renamed

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
    if key in (
        "data.sensitive",
        "data.sensitive_bins",
    ):  # the fairness audit's keys live in the tables that have groups
        return (
            f"Unknown key '{key}': this data config has no key '{leaf}'. The fairness audit groups the rows of a "
            "table by one of its columns: use data=german_credit or data=csv (docs/fairness.md); to group another "
            f"dataset by a numeric feature anyway, write +{key}=... ."
        )
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
