"""Every YAML under src/nnlab/configs composes, says what it sets, and every object it names builds.

The files are found with a recursive glob, so a new option is tested the moment it exists
(torchtune's non-recursive glob once validated 3 of its 197 configs).
"""

from __future__ import annotations

import inspect
import itertools
import re
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf

from datafiles import offline_data
from helpers import CONFIG_DIR, one_in, options, run_cli
from nnlab.checks.validation import TOP_LEVEL, validate_config
from nnlab.envs.environment import Environment
from nnlab.errors import ConfigValueError
from nnlab.runs.build import build, row_edits

ALL_YAML = sorted(CONFIG_DIR.rglob("*.yaml"))
# Hydra's own settings (run dirs, logging) are not options of train's groups: parsed, not composed.
HYDRA_YAML = [p for p in ALL_YAML if p.relative_to(CONFIG_DIR).parts[0] == "hydra"]
# Primary configs other than train.yaml (lr_find.yaml, eval.yaml, ...: one per command) are apps,
# not choices of train's groups; tests/commands/test_commands.py composes each of them.
PRIMARY = sorted(p for p in CONFIG_DIR.glob("*.yaml") if p.name != "train.yaml")
COMPOSABLE = [p for p in ALL_YAML if p not in HYDRA_YAML and p not in PRIMARY]
EXPERIMENTS = sorted((CONFIG_DIR / "experiment").rglob("*.yaml"))
# Files that carry the command that runs them on their first line (after Hydra's header).
COMMANDED = (
    EXPERIMENTS
    + sorted((CONFIG_DIR / "debug").rglob("*.yaml"))
    + sorted((CONFIG_DIR / "hparams_search").rglob("*.yaml"))
)

# Parts train() builds, by config path; a `_target_` below one of them is built with it (`init`
# builds the Initializer that build() applies to the model).
BUILT_PARTS = (
    "data", "env", "data_edit.*", "augmentation", "model", "init", "optimizer", "scheduler", "regularization",
    "task", "trainer", "logger", "callbacks.*",
)  # fmt: skip


def rel(path: Path) -> str:
    return path.relative_to(CONFIG_DIR).as_posix()


def params(paths: list[Path]) -> list[Any]:
    return [pytest.param(p, id=rel(p)) for p in paths]


def primary_groups() -> set[str]:
    """Groups with an entry in train.yaml's defaults list."""
    defaults = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "train.yaml"))["defaults"]
    return {next(iter(d)) for d in defaults if isinstance(d, dict)}


def overrides_for(path: Path) -> list[str]:
    """The command line that selects `path`: `group=option`, or `+group=option` for a group
    train.yaml does not list (Hydra refuses to override what is not in the defaults list)."""
    if path == CONFIG_DIR / "train.yaml":
        return []
    group, option = path.parent.relative_to(CONFIG_DIR).as_posix(), path.stem
    return [f"{group}={option}" if group in primary_groups() else f"+{group}={option}", *PARTNERS.get(rel(path), [])]


def acts_in_an_environment(path: Path) -> bool:
    """A task config whose class takes an `env`: it learns by acting (task=ppo), not from data."""
    target = (yaml.safe_load(path.read_text()) or {}).get("_target_")
    return target is not None and "env" in inspect.signature(get_object(target)).parameters


RL_TASKS = sorted(p.stem for p in (CONFIG_DIR / "task").glob("*.yaml") if acts_in_an_environment(p))


# Choices that only work with another choice, which normally selects them (model=perceptron
# picks task=perceptron from its own YAML), or with a kind of data the default digits are not
# (row edits of a table's values, of regression targets).
PARTNERS = {
    "task/perceptron.yaml": ["model=perceptron"],
    "task/reconstruction.yaml": ["model=autoencoder"],
    "task/gan.yaml": ["model=gan"],
    "task/som.yaml": ["model=som"],
    "data_edit/missing.yaml": ["data=wine"],
    "data_edit/impute.yaml": ["data=wine"],
    "data_edit/outliers.yaml": ["data=diabetes"],
    # Text: token ids need a model with an embedding; language models need a language-model task.
    "task/language_model.yaml": ["data=python_docs", "model=gpt"],
    "model/gpt.yaml": ["data=python_docs", "task=language_model"],
    "model/char_lstm.yaml": ["data=python_docs", "task=language_model"],
    "data/python_docs.yaml": ["model=gpt", "task=language_model"],
    "data/text.yaml": ["model=gpt", "task=language_model"],
    "data/text_csv.yaml": ["model=text_cnn"],
    "data/word_language.yaml": ["model=text_cnn"],
    # Reinforcement learning: an environment needs a task that acts in it, and a task that acts
    # needs an environment; the policy network has no batch norm or dropout (model=policy).
    **{f"env/{name}.yaml": ["task=ppo", "model=policy"] for name in options("env")},
    **{f"task/{name}.yaml": ["env=cartpole", "model=policy"] for name in RL_TASKS},
}


def package_of(path: Path) -> str:
    """Where a file's keys land: the root for train.yaml and `# @package _global_` files, else the group."""
    if path == CONFIG_DIR / "train.yaml" or "# @package _global_" in path.read_text():
        return ""
    return path.parent.relative_to(CONFIG_DIR).as_posix().replace("/", ".")


def assert_contains(actual: Any, expected: Any, where: str) -> None:
    """Every key of `expected` is in `actual` with the same (unresolved) value."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict), f"{where}: expected a mapping, got {actual!r}"
        for key, value in expected.items():
            assert key in actual, f"{where}.{key} is missing from the composed config"
            assert_contains(actual[key], value, f"{where}.{key}")
    else:
        assert actual == expected, f"{where}: composed {actual!r}, the file says {expected!r}"


def target_paths(node: Any, path: str = "") -> list[str]:
    """Dotted paths of every node with a `_target_` in a plain (to_container) config."""
    found = []
    if isinstance(node, dict):
        if "_target_" in node:
            found.append(path)
        for key, value in node.items():
            found += target_paths(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += target_paths(value, f"{path}[{i}]")
    return found


def is_built(path: str) -> bool:
    return any(
        path == part or path.startswith(part + ".") or (part.endswith(".*") and path.startswith(part[:-1]))
        for part in BUILT_PARTS
    )


def build_all(cfg: DictConfig) -> dict[str, Any]:
    """Build every part with nnlab.runs.build.build, as a run does, keyed by config path."""
    parts = build(cfg)
    if parts.logger is not None:
        parts.logger.close()
    callbacks = {f"callbacks.{name}": obj for name, obj in parts.callbacks.items()}
    if cfg.get("env"):  # reinforcement learning: the environment is built in the data's place
        inputs = {"env": parts.data}
        # cfg.model is the policy network; PPO and REINFORCE wrap it with its critic (ActorCritic).
        parts.model = getattr(parts.model, "policy", parts.model)
    else:
        # The row edits, as build() hands them to the data module: listed order, a null node left out.
        listed = [f"data_edit.{name}" for name, node in (cfg.get("data_edit") or {}).items() if node]
        inputs = {
            **dict(zip(listed, row_edits(cfg), strict=True)),
            "data": parts.data,
            "augmentation": parts.data.augment,
        }
    built = {
        **inputs,
        "model": parts.model,
        "task": parts.task,
        "logger": parts.logger,
        "trainer": parts.trainer,
        "regularization": parts.trainer.regularization,
        **callbacks,
    }
    task = parts.task
    # The optimizer and scheduler partials get their params/optimizer when the task is configured.
    task.configure(built["trainer"].device, built["trainer"].precision, total_steps=10)
    optim = getattr(task, "optim", None)  # a task without gradients (the perceptron rule) has none
    if optim is not None:
        built["optimizer"], built["scheduler"] = optim.optimizer, optim.scheduler
    return built


def test_the_glob_sees_the_whole_tree() -> None:
    names = [rel(p) for p in ALL_YAML]
    assert len(ALL_YAML) > 30, names
    assert "hydra/job_logging/rich.yaml" in names  # two levels down: the glob is recursive
    for group in primary_groups() - {"hydra"}:
        assert any(n.startswith(f"{group}/") for n in names), f"train.yaml names group {group!r} with no files"


def test_compose_helper_points_the_run_at_tmp_path(compose_cfg, tmp_path: Path) -> None:
    """The fixture every in-process run uses: paths.output_dir (${hydra:runtime.output_dir}) and
    everything that interpolates it land in tmp_path, and `hydra` is gone as in a real job."""
    cfg = compose_cfg(["data=iris"], tmp_path)
    assert cfg.paths.output_dir == str(tmp_path.resolve())
    assert cfg.trainer.output_dir == str(tmp_path.resolve())
    assert cfg.logger.save_dir == str(tmp_path.resolve())  # TensorBoard names the run by its folder
    assert "hydra" not in cfg
    assert HydraConfig.get().runtime.choices["data"] == "iris"


@pytest.mark.parametrize("path", params(HYDRA_YAML))
def test_hydra_settings_parse(path: Path) -> None:
    content = yaml.safe_load(path.read_text())
    assert isinstance(content, dict) and content, f"{rel(path)} is not a non-empty mapping"


@pytest.mark.parametrize("path", one_in(3, params(COMPOSABLE)))
def test_composes_with_the_values_it_sets(path: Path, compose_cfg, tmp_path: Path) -> None:
    cfg = compose_cfg(overrides_for(path), tmp_path)
    if path != CONFIG_DIR / "train.yaml":
        group = path.parent.relative_to(CONFIG_DIR).as_posix()
        assert HydraConfig.get().runtime.choices[group] == path.stem

    own = OmegaConf.to_container(OmegaConf.load(path), resolve=False) or {}
    defaults = [d for d in own.pop("defaults", None) or [] if d != "_self_"]
    package = package_of(path)
    if not package:
        own.pop("hydra", None)  # the hydra node is not part of the task's config
    composed = OmegaConf.to_container(OmegaConf.select(cfg, package) if package else cfg, resolve=False)
    validate_config(cfg)  # what train() checks first: keys and types against the constructors
    if own:
        assert_contains(composed, own, package or "<root>")
    elif defaults:  # a file that only names others (a sweep over an experiment) composes exactly as they do
        entries = [(k, v) for d in defaults for k, v in d.items()] if all(isinstance(d, dict) for d in defaults) else []
        named = [f"{k.removeprefix('override ').lstrip('/').split('@')[0]}={v}" for k, v in entries]
        assert named, f"{rel(path)} sets nothing and names no other file of a group"
        alias = compose_cfg(named, tmp_path)
        assert composed == OmegaConf.to_container(alias, resolve=False), f"{rel(path)} composes unlike {named}"
    else:  # an empty option (none.yaml) switches its group off
        assert composed in ({}, None), f"{rel(path)} is empty but {package} composed to {composed!r}"


@pytest.mark.parametrize("path", one_in(3, params(COMPOSABLE)[1:] + params(COMPOSABLE)[:1]))  # (a third apart)
def test_every_target_instantiates(path: Path, compose_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A data config that reads files (MNIST, a CSV) is pointed at tiny stand-ins: no downloads in tests.
    files = offline_data(path.stem, tmp_path / "data", monkeypatch) if path.parent.name == "data" else []
    cfg = compose_cfg([*overrides_for(path), *files], tmp_path / "run")
    targets = target_paths(OmegaConf.to_container(cfg, resolve=False))
    assert not [t for t in targets if not is_built(t)], "a _target_ outside the parts train() builds"

    needs_cuda = str(cfg.trainer.device).startswith("cuda") and not torch.cuda.is_available()
    if needs_cuda:  # e.g. trainer=gpu on a CPU machine: the error must name the key and the fix
        with pytest.raises(InstantiationException) as info:
            build_all(cfg)
        assert isinstance(info.value.__cause__, ConfigValueError)
        assert "trainer.device" in str(info.value.__cause__)
        assert "trainer.device=cpu" in str(info.value.__cause__)
        return

    built = build_all(cfg)
    for target in targets:
        obj = get_object(OmegaConf.select(cfg, target)._target_)
        if target in built and isinstance(obj, type):
            assert isinstance(built[target], obj), f"{target} built a {type(built[target]).__name__}"

    if cfg.get("env"):
        assert_agent_acts(cfg, built)
        return
    data, model = built["data"], built["model"]
    data.setup(torch.device("cpu"))
    x, _ = next(data.train_batches(0))
    model.to("cpu").eval()
    with torch.no_grad():
        if hasattr(model, "discriminator"):  # a GAN scores samples (one logit each) rather than predicting y
            assert model.discriminator(x).shape == (len(x),)
        elif hasattr(model, "decoder"):  # an autoencoder rebuilds x
            assert model(x).recon.shape == x.shape
        elif data.kind == "language_model":  # a score for every token of the vocabulary at every position
            assert model(x).shape == (*x.shape, data.num_outputs)
        else:
            assert model(x).shape == (len(x), data.num_outputs)


def assert_agent_acts(cfg: DictConfig, built: dict[str, Any]) -> None:
    """An RL run's parts fit together: the environment's tickets count its steps, the policy is
    sized from its spaces (a critic, when the task learns one, gives one value per
    observation) and the task's deterministic actions are ones the environment takes."""
    env, task = built["env"], built["task"]
    model = task.model  # the policy network, or an ActorCritic holding it and its critic
    assert isinstance(env, Environment) and env.id == cfg.env.id
    assert task.env is env and built["model"] in (model, getattr(model, "policy", None))
    if getattr(model, "critic", None) is not None:  # the same architecture as the policy, one output
        assert type(model.critic) is type(model.policy)
        assert list(model.critic.parameters())[-1].shape == (1,)
    env.setup(torch.device("cpu"))
    try:
        (tickets,) = next(env.train_batches(0))
        assert torch.equal(tickets, torch.arange(env.batch_env_steps))
        assert env.batch_env_steps == env.rollout_steps * env.num_envs and env.rollout_steps > 1
        obs = torch.as_tensor(env.obs, dtype=torch.float32)
        assert obs.shape == (env.num_envs, *env.input_shape)
        model.to("cpu").eval()
        with torch.no_grad():
            assert model(obs).shape == (env.num_envs, env.num_outputs)
            if getattr(model, "critic", None) is not None:  # PPO's and REINFORCE's value function
                assert model.value(obs).shape == (env.num_envs,)
        actions = task.greedy(env.obs)
        assert len(actions) == env.num_envs
        assert all(env.action_space.contains(a) for a in actions), actions
        next_obs, rewards, *_ = env.step(actions)
        assert next_obs.shape == tuple(obs.shape) and rewards.shape == (env.num_envs,)
        assert env.total_steps == env.num_envs
    finally:
        env.close()


@pytest.mark.parametrize("path", params(COMMANDED))
def test_file_starts_with_its_command(path: Path) -> None:
    """An experiment or debug file opens with the command that runs it, right after Hydra's header.

    Hydra reads `# @package _global_` only from the leading `# @...` lines and stops at the first
    other line, so the directive must come first and the command follows it. (A command on line 1
    silently demotes the file to package `experiment`, and none of its values apply.)
    """
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    body = list(itertools.dropwhile(lambda line: re.match(r"\s*#\s*@", line), lines))
    group = path.parent.relative_to(CONFIG_DIR).as_posix()
    name = path.relative_to(CONFIG_DIR / group).with_suffix("").as_posix()
    assert body and re.match(rf"# nnlab-train (-m )?{group}={re.escape(name)}(\s|$)", body[0]), lines[:3]


def test_top_level_types_name_exactly_the_plain_keys_of_train_yaml() -> None:
    """nnlab.checks.validation.TOP_LEVEL types train.yaml's plain top-level values (seed, optimized_metric,
    ...): a key added to or dropped from train.yaml must be added to or dropped from the table."""
    train = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "train.yaml"))
    plain = {k: v for k, v in train.items() if k != "defaults" and not isinstance(v, dict | list)}
    assert sorted(TOP_LEVEL) == sorted(plain)
    validate_config(OmegaConf.create(plain))  # each packaged value fits its type


def test_there_are_experiments() -> None:
    assert len(EXPERIMENTS) >= 1


@pytest.mark.parametrize("choice", options("callbacks"))
def test_every_callbacks_entry_is_a_callback_or_off(choice: str, compose_cfg, tmp_path: Path) -> None:
    """build() instantiates every truthy entry of `callbacks` and skips a null one, so a stray
    option at the group's top level (an indentation slip) would be silently ignored: a null
    entry must switch off a callback that some choice of the group defines."""
    callbacks = set()
    for path in sorted((CONFIG_DIR / "callbacks").glob("*.yaml")):
        content = yaml.safe_load(path.read_text()) or {}
        callbacks |= {name for name, node in content.items() if isinstance(node, dict) and "_target_" in node}
    cfg = compose_cfg([f"callbacks={choice}"], tmp_path)
    for name, node in (cfg.callbacks or {}).items():
        is_callback = isinstance(node, DictConfig) and "_target_" in node
        assert is_callback or (node is None and name in callbacks), (
            f"callbacks/{choice}.yaml: callbacks.{name} = {node!r} is neither a callback (a _target_) nor one off"
        )


def test_the_rl_choices_are_found_and_paired() -> None:
    """The RL tasks are recognised from their classes, and every environment and RL task is
    composed with its partners above (a test of the lists the other tests rely on)."""
    assert {"dqn", "ppo", "reinforce"} <= set(RL_TASKS)
    assert "supervised" not in RL_TASKS
    assert {"cartpole", "acrobot", "pendulum", "mountain_car"} <= set(options("env"))
    for path in COMPOSABLE:
        if rel(path).startswith("env/") or rel(path) in {f"task/{t}.yaml" for t in RL_TASKS}:
            assert {"model=policy"} <= set(PARTNERS[rel(path)]), rel(path)


def test_help_lists_every_group_and_its_choices(tmp_path: Path) -> None:
    """`nnlab-train --help` is generated from the config folders, so it cannot drift from them."""
    result = run_cli(["--help"], tmp_path)
    assert result.returncode == 0, result.stderr
    section = result.stdout.split("== Configuration groups ==")[1].split("== Config ==")[0]
    listed = dict(re.findall(r"^(\w+): (.+)$", section, flags=re.MULTILINE))
    groups = {p.name for p in CONFIG_DIR.iterdir() if p.is_dir() and p.name != "hydra" and list(p.glob("*.yaml"))}
    assert set(listed) == groups
    for group, choices in listed.items():
        assert choices.split(", ") == options(group), group


def test_a_user_config_dir_adds_choices(compose_cfg, tmp_path: Path) -> None:
    """README: your own YAML folder on Hydra's search path adds choices beside the built-in ones."""
    (tmp_path / "myconfigs" / "model").mkdir(parents=True)
    (tmp_path / "myconfigs" / "model" / "wide.yaml").write_text("_target_: nnlab.models.mlp.MLP\nhidden_sizes: [512]\n")
    cfg = compose_cfg([f"hydra.searchpath=[file://{tmp_path / 'myconfigs'}]", "model=wide"], tmp_path / "run")
    assert HydraConfig.get().runtime.choices["model"] == "wide"
    assert cfg.model.hidden_sizes == [512]
    assert cfg.data.dataset._target_ == "nnlab.data.sklearn.digits"  # the built-in defaults still apply


@pytest.mark.parametrize("path", params(ALL_YAML))
def test_no_config_sets_hydra_mode(path: Path) -> None:
    """nnlab.cli.app skips Hydra's compose that only reads hydra.mode (~0.1 s a launch) unless the
    command line brings in configs of the user's: it relies on no packaged file setting it."""
    content = yaml.safe_load(path.read_text()) or {}
    settings = content if path in HYDRA_YAML else content.get("hydra") or {}
    assert "mode" not in settings, f"{rel(path)} sets hydra.mode"


@pytest.mark.parametrize(
    ("argv", "skipped"),
    [
        ([], True),
        (["experiment=mnist1d_cnn", "-m", "optimizer.lr=0.1,0.01"], True),
        (["hydra.mode=MULTIRUN"], False),
        (["+hydra.mode=MULTIRUN"], False),
        (["--config-dir", "myconfigs"], False),
        (["-cd=myconfigs"], False),
        (["hydra.searchpath=[file://myconfigs]"], False),
        (["--config-name", "mine"], False),
    ],
)
def test_the_mode_compose_is_skipped_only_without_configs_of_the_users(argv: list[str], skipped: bool) -> None:
    from hydra._internal.hydra import Hydra

    from nnlab.cli.app import _one_compose

    original = Hydra.get_mode
    with _one_compose(argv):
        assert (Hydra.get_mode is not original) == skipped
        if skipped:
            assert Hydra.get_mode(object(), "train", argv) is None
    assert Hydra.get_mode is original
