"""The one gate for configs from elsewhere: a checkpoint's stored config, a run or sweep folder's
YAML files.

A config is code. Building one imports and calls whatever its `_target_` keys name (anywhere in
it: nested nodes, lists, `_args_`), and OmegaConf evaluates every `${...}` through resolvers when
a value is read: `${oc.create:...}` builds a new node, with a `_target_` of its own, after any
check of the plain text has passed; `${oc.env:...}` reads the environment. A checkpoint or a
folder may come from anyone, so nothing read from one reaches OmegaConf or Hydra before it has
been through here:

    text  --read_yaml-->  plain Python (YAML's safe loader: no tags such as !!python/object,
                          no anchors or aliases, no OmegaConf node yet, so nothing is resolved)
          --buildable-->  refused if any `${` survives or any `_target_` is not one of the
                          targets of nnlab's own config files; else a new DictConfig made from
                          exactly the containers that were checked

Readers that only look at values (nnlab-report) stop after `read_yaml`: they keep plain Python,
in which `${...}` is text, and show strings from the files through `printable`. The tensors of a
checkpoint pass their own gate, `nnlab.engine.checkpoint.load_checkpoint` (`weights_only=True`).
`trust_config=true` on a command is the one way around `buildable`, for a file the user vouches
for; the log says so when it is on. docs/reliability.md has the threat model.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf

from nnlab.errors import UserError

log = logging.getLogger(__name__)

# Far above any stored config nnlab writes (a few KiB); a larger "config" is refused unread.
MAX_YAML_CHARS = 2_000_000

TRUST_HINT = (
    "If you wrote this file yourself (with a model or dataset of your own) and trust it, add "
    "trust_config=true to the command."
)


class UntrustedConfigError(UserError):
    """A config from elsewhere that nnlab refuses to read or to build."""


def printable(text: object, limit: int | None = None) -> str:
    """`text` safe to print on a terminal, on one line: control characters (escape sequences that
    could move the cursor, retitle the window or hide text; line breaks) shown as `\\x1b`-style
    escapes, and cut to `limit` characters."""
    shown = re.sub(r"[\x00-\x1f\x7f-\x9f]", lambda m: repr(m.group())[1:-1], str(text))
    if limit is not None and len(shown) > limit:
        shown = shown[: limit - 3] + "..."
    return shown


def read_yaml(text: str, origin: str | Path) -> Any:
    """Parse YAML from an untrusted file into plain Python: dicts, lists, strings, numbers,
    booleans and None. Refuses tags (`!!python/object/apply:os.system`, any `!tag`), anchors and
    aliases (a few lines of aliases can expand to billions of nodes) and oversized text, with a
    `UntrustedConfigError` naming `origin`."""
    if len(text) > MAX_YAML_CHARS:
        raise UntrustedConfigError(
            f"{origin} is {len(text):,} characters long, far more than any config nnlab writes; it was not "
            "read. Use the file of an nnlab run."
        )
    loader = _yaml_loader()
    try:
        for event in yaml.parse(text, Loader=loader):
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                raise UntrustedConfigError(
                    f"{origin} uses YAML anchors or aliases (&name / *name), which nnlab never writes and does "
                    "not read from files it did not make itself. Use the file of an nnlab run."
                )
            tag = getattr(event, "tag", None)
            if tag is not None and not _plain_tag(tag):
                raise UntrustedConfigError(
                    f"{origin} holds the YAML tag {printable(tag, 80)!r}. Tags can make a YAML reader build "
                    "objects, so nnlab reads only plain values from files it did not make itself. Use the "
                    "file of an nnlab run."
                )
        return yaml.load(text, Loader=loader)  # noqa: S506 - a SafeLoader (see _yaml_loader)
    except UntrustedConfigError:
        raise
    except yaml.YAMLError as e:
        detail = printable(" ".join(str(e).split()), 200)
        raise UntrustedConfigError(
            f"{origin} is not valid YAML ({detail}). Use the file of an nnlab run, or delete the damaged file."
        ) from None


def _plain_tag(tag: str) -> bool:
    """YAML's own scalar and collection tags (`!!str 5`), which build nothing but plain values."""
    return tag.startswith("tag:yaml.org,2002:") and tag.rsplit(":", 1)[-1] in {
        "str",
        "int",
        "float",
        "bool",
        "null",
        "map",
        "seq",
    }


@functools.cache
def _yaml_loader() -> type:
    """OmegaConf's own loader (what `OmegaConf.load` reads with: PyYAML's SafeLoader with
    YAML 1.2 floats such as 1e-3, and duplicate keys refused), so values come out as they would
    through OmegaConf; PyYAML's SafeLoader if a future OmegaConf moves it."""
    try:
        from omegaconf._utils import get_yaml_loader

        loader = get_yaml_loader()
    except ImportError:  # pragma: no cover - OmegaConf 2.x has it
        loader = yaml.SafeLoader
    assert issubclass(loader, yaml.SafeLoader)
    return loader


def read_yaml_file(path: Path) -> Any:
    """`read_yaml` of a file in a run or sweep folder, with unreadable bytes refused too."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UntrustedConfigError(f"{path} is not UTF-8 text. Use the file of an nnlab run.") from None
    except OSError as e:
        raise UntrustedConfigError(f"Could not read {path} ({e.strerror}).") from None
    return read_yaml(text, path)


@functools.cache
def catalogue_targets() -> frozenset[str]:
    """Every `_target_` named in nnlab's own config files: the classes and functions a run
    composed from them can build."""
    import nnlab.configs

    found: set[str] = set()
    for file in Path(nnlab.configs.__file__).parent.rglob("*.yaml"):
        # The files' `${...}` are nnlab's own; only the _target_ strings are collected.
        found.update(t for _, t in _target_values(yaml.safe_load(file.read_text()), "") if isinstance(t, str))
    return frozenset(found)


def buildable(container: Any, origin: str | Path, trust: bool = False) -> DictConfig:
    """A DictConfig that is safe to build: made from `container` (plain Python from `read_yaml`)
    after checking that no `${` (interpolation, resolver call) is left anywhere, keys included,
    and that every `_target_` anywhere is one of nnlab's own (`catalogue_targets`).

    With `trust=True` (a command's `trust_config=true`) the container is built as it is,
    interpolations and all, and a warning says so."""
    if not isinstance(container, dict):
        raise UntrustedConfigError(f"The run config in {origin} is not a mapping. Use a checkpoint of an nnlab run.")
    if trust:
        log.warning(
            "trust_config=true: building the config stored in %s without checking it. Only do this for files "
            "you made yourself: a config names code to import and call.",
            origin,
        )
        return OmegaConf.create(container)
    interpolated = next(_interpolations(container, ""), None)
    if interpolated is not None:
        where, text = interpolated
        raise UntrustedConfigError(
            f"Refused to build the run stored in {origin}: its config holds the interpolation "
            f"{printable(text, 100)!r} at {printable(where, 100) or 'the top level'}. nnlab stores configs with "
            "every value resolved, and OmegaConf evaluates ${...} through resolvers that can build new nodes "
            f"(and with them code to call), so a config from elsewhere may hold no ${{ at all. {TRUST_HINT}"
        )
    allowed = catalogue_targets()
    foreign = [(where, t) for where, t in _target_values(container, "") if not isinstance(t, str) or t not in allowed]
    if foreign:
        named = ", ".join(f"{printable(t, 100)!r} (at {printable(where, 100)})" for where, t in foreign[:5])
        raise UntrustedConfigError(
            f"Refused to build the run stored in {origin}: its config names {named}, which nnlab's own configs "
            "do not. A checkpoint's config is run as code (Hydra imports and calls every _target_, in nested "
            f"nodes, lists and _args_ too), so one from elsewhere could run anything. {TRUST_HINT}"
        )
    for where, env_id in _environment_ids(container, ""):
        if not isinstance(env_id, str) or ":" in env_id:
            raise UntrustedConfigError(
                f"Refused to build the run stored in {origin}: its environment id {printable(env_id, 100)!r} (at "
                f"{printable(where, 100)}) is not a plain Gymnasium id. Gymnasium imports the module named before a "
                "':' in an id, so one from elsewhere could run code; a plain id (CartPole-v1) is looked up in "
                f"Gymnasium's registry only. {TRUST_HINT}"
            )
    return OmegaConf.create(container)


# The environment of reinforcement learning: its `id` goes to `gymnasium.make`.
ENVIRONMENT_TARGET = "nnlab.envs.environment.Environment"


def _environment_ids(node: Any, where: str) -> Iterator[tuple[str, Any]]:
    """(path, id) of every node that builds an `Environment`."""
    if isinstance(node, dict):
        if node.get("_target_") == ENVIRONMENT_TARGET:
            yield f"{where}.id" if where else "id", node.get("id")
        for key, value in node.items():
            yield from _environment_ids(value, f"{where}.{key}" if where else str(key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _environment_ids(value, f"{where}[{i}]")


def _interpolations(node: Any, where: str) -> Iterator[tuple[str, str]]:
    """(path, text) of every key or string value that holds `${`."""
    if isinstance(node, dict):
        for key, value in node.items():
            here = f"{where}.{key}" if where else str(key)
            if "${" in str(key):
                yield here, str(key)
            yield from _interpolations(value, here)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _interpolations(value, f"{where}[{i}]")
    elif isinstance(node, str) and "${" in node:
        yield where, node


def _target_values(node: Any, where: str) -> Iterator[tuple[str, Any]]:
    """(path, value) of every `_target_` key, in mappings at any depth and inside lists."""
    if isinstance(node, dict):
        for key, value in node.items():
            here = f"{where}.{key}" if where else str(key)
            if key == "_target_":
                yield here, value
            yield from _target_values(value, here)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _target_values(value, f"{where}[{i}]")


def stored_run_config(state: dict[str, Any], path: Path, trust: bool = False) -> DictConfig:
    """The config stored in a checkpoint nnlab-train wrote (`state["config"]`, YAML text),
    through the gate: what is returned is exactly what was checked."""
    text = state.get("config")
    if not isinstance(text, str):
        raise UntrustedConfigError(
            f"{path} holds no run config, so it was not written by nnlab-train (or by an older nnlab). "
            "Point ckpt_path at a checkpoint in an nnlab run's checkpoints/ folder, e.g. "
            "outputs/runs/<run>/checkpoints/best.ckpt."
        )
    return buildable(read_yaml(text, f"the run config stored in {path}"), path, trust)


# Far above a BPE vocabulary nnlab writes (a 32k-token one is about 2 MB); larger is refused unread.
MAX_TOKENIZER_BYTES = 20_000_000


def read_tokenizer(path: Path) -> Any:
    """The tokenizer a run folder's tokenizer.json describes. The file is JSON (no code, no
    pickle), capped in size, and must be exactly a character vocabulary or a BPE model as
    `nnlab.data.tokenizers.from_dict` defines them; anything else is refused with the reason."""
    import json

    from nnlab.data.tokenizers import from_dict

    try:
        if path.stat().st_size > MAX_TOKENIZER_BYTES:
            raise UntrustedConfigError(
                f"{path} is larger than {MAX_TOKENIZER_BYTES:,} bytes: not a tokenizer nnlab wrote. "
                "Use the tokenizer.json of an nnlab run."
            )
        payload = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise UntrustedConfigError(f"{path} is not UTF-8 text. Use the tokenizer.json of an nnlab run.") from None
    except json.JSONDecodeError as e:
        raise UntrustedConfigError(f"{path} is not valid JSON ({e.msg}, line {e.lineno}).") from None
    except OSError as e:
        raise UntrustedConfigError(f"Could not read {path} ({e.strerror}).") from None
    try:
        return from_dict(payload)
    except ValueError as e:
        raise UntrustedConfigError(f"{path} is not a tokenizer nnlab can use: {printable(e, 300)}") from None
