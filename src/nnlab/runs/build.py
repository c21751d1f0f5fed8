"""Every part a run's config names, built: the data (with its row edits), the model, the task,
the callbacks, the logger and the trainer, each handed what only the others know.

`preflight` first builds the data module and the model on a small stand-in, so an option that is
wrong whatever the data (`data.batch_size=0`, `model.dropout=1.5`) stops the run before the
dataset is read.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from nnlab.engine import distributed
from nnlab.engine.optim import optimizer_factory
from nnlab.errors import ConfigValueError, DataMismatchError, OptionError, UserError

log = logging.getLogger(__name__)


@dataclass
class Parts:
    """Everything a run is built from, by config group."""

    data: Any
    model: Any
    task: Any
    callbacks: dict[str, Any]
    logger: Any
    trainer: Any


def build(cfg: DictConfig) -> Parts:
    """Instantiate each part the config names, handing each what only the others know: the
    model its sizes from the data, the task its model and the data's kind, the trainer its
    callbacks and logger."""
    preflight(cfg)
    # The cheap parts first, so their bad values (trainer.max_epochs=-1, trainer.device=tpu, a
    # callback's option) stop the run before the data is loaded.
    callbacks = {name: instantiate(c) for name, c in (cfg.get("callbacks") or {}).items() if c}
    rank_zero = distributed.current().is_zero
    if not rank_zero:  # other ranks of a data-parallel run keep only callbacks that decide (early stopping)
        callbacks = {name: cb for name, cb in callbacks.items() if getattr(cb, "all_ranks", False)}
    logger = instantiate(cfg.logger) if cfg.get("logger") and rank_zero else None
    regularization = instantiate(cfg.regularization) if cfg.get("regularization") else None
    trainer = instantiate(cfg.trainer, callbacks=list(callbacks.values()), logger=logger, regularization=regularization)
    data, model, task = build_model(cfg)
    return Parts(data, model, task, callbacks, logger, trainer)


def build_model(cfg: DictConfig, augment: bool = True) -> tuple[Any, Any, Any]:
    """The data, the model (initialized, then started from `transfer.init_from` when set) and the
    task a config names. `augment=False` builds for commands that only evaluate a run: the
    training augmentation is left out, and so is `transfer.init_from` (the weights come from the
    run's own checkpoint)."""
    from nnlab.models import transfer

    if cfg.get("env"):
        return build_agent(cfg)
    check_not_agent(cfg.task._target_)
    data = build_data(cfg, augment)

    log.info("Building model <%s>", cfg.model._target_)
    sizes = {"input_shape": data.input_shape, "num_outputs": data.num_outputs}
    if getattr(data, "vocab_size", None) is not None:  # text: token ids, embedded by the model
        check_reads_tokens(cfg.model._target_)
        sizes["vocab_size"] = data.vocab_size
    try:
        model = instantiate(cfg.model, **sizes)
    except InstantiationException as e:
        if not isinstance(e.__cause__, DataMismatchError):
            raise
        raise UserError(f"{pairing()} do not fit together: {e.__cause__}") from e
    check_batch_norm_batches(model, data)
    if cfg.get("init"):
        initialized = instantiate(cfg.init)(model)
        if initialized:
            log.info("Initialized %d weight tensors with init=%s", initialized, cfg.init.scheme)
    if augment:
        transfer.from_config(model, cfg.get("transfer"))

    log.info("Building task <%s> with optimizer <%s>", cfg.task._target_, cfg.optimizer._target_)
    scheduler = instantiate(cfg.scheduler) if cfg.get("scheduler") else None
    task = instantiate(
        cfg.task,
        model=model,
        optimizer=optimizer_factory(instantiate(cfg.optimizer)),
        scheduler=scheduler,
        kind=data.kind,
        class_names=data.class_names,
        class_counts=data.class_counts,
    )
    transfer.check_task_support(task, cfg.get("transfer"))
    return data, model, task


def build_agent(cfg: DictConfig) -> tuple[Any, Any, Any]:
    """Reinforcement learning: the environment (`cfg.env`, in the data's place), the policy
    network sized from its spaces, a value network of the same architecture with one output
    when the task learns one (it takes `critic`), and the task acting in the environment."""
    import inspect

    from hydra.utils import get_object

    log.info("Building environment <%s>", cfg.env.id)
    env = instantiate(cfg.env)
    task_class = get_object(cfg.task._target_)
    parameters = inspect.signature(task_class).parameters
    if "env" not in parameters:
        raise UserError(
            f"env={chosen('env', cfg.env.id)} is an environment to act in, and task={chosen('task')} "
            "learns from data. Choose a reinforcement-learning task: task=ppo, task=dqn or task=reinforce "
            "(or drop env= to train on data)."
        )
    log.info("Building model <%s>", cfg.model._target_)
    networks = {"model": instantiate(cfg.model, input_shape=env.input_shape, num_outputs=env.num_outputs)}
    if "critic" in parameters:  # the task learns a value function: same architecture, one output
        networks["critic"] = instantiate(cfg.model, input_shape=env.input_shape, num_outputs=1)
    if cfg.get("init") and cfg.init.get("scheme", "default") != "default":
        if cfg.task.get("ortho_init"):
            raise UserError(
                f"init={cfg.init.scheme} and task.ortho_init=true would both initialise the policy: the task's "
                "orthogonal init (gain 0.01 on the policy's output) runs last and would overwrite yours. Add "
                f"task.ortho_init=false to use init={cfg.init.scheme}, or drop init= for the orthogonal start."
            )
        initializer = instantiate(cfg.init)
        for network in networks.values():
            initializer(network)
    log.info("Building task <%s> with optimizer <%s>", cfg.task._target_, cfg.optimizer._target_)
    scheduler = instantiate(cfg.scheduler) if cfg.get("scheduler") else None
    task = instantiate(
        cfg.task, **networks, optimizer=optimizer_factory(instantiate(cfg.optimizer)), scheduler=scheduler, env=env
    )
    return env, task.model, task


def check_not_agent(target: str) -> None:
    """A reinforcement-learning task without an environment: say how to give it one."""
    import inspect

    from hydra.utils import get_object

    if "env" in inspect.signature(get_object(target)).parameters:
        raise UserError(
            f"{target} learns by acting in an environment, and none is chosen: add env=cartpole (or env=acrobot, "
            "env=pendulum, env=mountain_car), or run one of the experiments, e.g. experiment=cartpole_ppo."
        )


def build_data(cfg: DictConfig, augment: bool = True) -> Any:
    """The data module `cfg.data` names, with the row edits `cfg.data_edit` lists (in its order)
    and, unless `augment=False`, the training augmentation."""
    log.info("Building data <%s>", cfg.data.dataset._target_)
    augmentation = instantiate(cfg.augmentation) if augment and cfg.get("augmentation") else None
    return instantiate(cfg.data, edits=row_edits(cfg), augment=augmentation)


def row_edits(cfg: DictConfig) -> list[Any]:
    """The row edits `cfg.data_edit` lists, built in order (a node set to null is off)."""
    edits = []
    for name, node in (cfg.get("data_edit") or {}).items():
        if not node:
            continue
        if not isinstance(node, DictConfig) or "_target_" not in node:
            # e.g. an experiment's data_edit.outliers.scale left behind by data_edit=[] on the command line
            raise ConfigValueError(
                f"data_edit.{name} sets options but names no edit (no _target_): is data_edit.{name} "
                f"missing from the data_edit list? Add it (data_edit=[...,{name}]) or turn it off with "
                f"data_edit.{name}=null."
            )
        edits.append(instantiate(node))
    return edits


def preflight(cfg: DictConfig) -> None:
    """The data module's and the model's option checks (`data.batch_size=0`, `model.dropout=1.5`),
    run before the dataset is read: each is built once, on a small stand-in dataset and input
    shape, and only an `OptionError` (an option wrong whatever the data) is raised. Everything
    else about the stand-ins (a shape the model cannot take, a class the stand-in lacks) is left
    to the real build. The random generators are left as they were."""
    import torch

    from nnlab.data.arrays import ArrayDataset

    rows = np.random.default_rng(0).normal(size=(200, 1, 8, 8)).astype(np.float32)
    stand_in = ArrayDataset(rows, np.arange(200) % 10, "classification", [str(c) for c in range(10)])
    with torch.random.fork_rng(devices=[]):
        if cfg.get("env"):  # reinforcement learning: the environment is the data (checked when built)
            _options_only(lambda: instantiate(cfg.model, input_shape=(4,), num_outputs=2))
            return
        _options_only(lambda: _call_with(cfg.data, dataset=stand_in, edits=row_edits(cfg), augment=None))
        _options_only(lambda: instantiate(cfg.model, input_shape=(1, 8, 8), num_outputs=10))


def _call_with(node: DictConfig, **objects: Any) -> Any:
    """Call `node`'s target with its plain options and `objects` in place of nested ones
    (Hydra's `instantiate` would turn a dataclass passed as a keyword into a config)."""
    from hydra.utils import get_object

    kwargs = {}
    for key in node:
        if str(key).startswith("_") or key in objects:
            continue
        value = node[key]  # resolved against the whole config (data.seed is ${seed})
        kwargs[str(key)] = OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
    return get_object(node._target_)(**kwargs, **objects)


def _options_only(build: Any) -> None:
    try:
        build()
    except InstantiationException as e:
        if isinstance(e.__cause__, OptionError):
            raise e.__cause__ from None
    except OptionError:
        raise
    except Exception:  # noqa: BLE001 - the stand-in's fault, or one the real build will report
        pass


def check_batch_norm_batches(model: Any, data: Any) -> None:
    """Batch norm cannot train on a batch of one row (one value per channel has no variance):
    refuse a batch size that makes one, rather than fail at the epoch's last step."""
    from torch.nn.modules.batchnorm import _BatchNorm

    if not any(isinstance(m, _BatchNorm) for m in model.modules()):
        return
    b, n = data.batch_size, data.size("train")
    if b == 1 or (not data.drop_last and n % b == 1):
        raise ConfigValueError(
            f"data.batch_size={b} leaves a training batch of 1 row ({n} training rows), on which the model's "
            f"batch norm cannot train. Set data.drop_last=true, another data.batch_size (e.g. {b + 1}), or "
            "model.batch_norm=false."
        )


def check_reads_tokens(target: str) -> None:
    """Text comes as token ids, which a model must embed: refuse a model that takes no
    `vocab_size` (an MLP would read the ids as numbers)."""
    import inspect

    from hydra.utils import get_object

    if "vocab_size" not in inspect.signature(get_object(target)).parameters:
        raise UserError(
            f"{pairing()} do not fit together: the data are text, token ids that a model must embed, and "
            f"{target} has no embedding. Choose a model that reads text: model=transformer, model=gpt (language "
            "modelling), model=text_lstm, model=text_cnn or model=char_lstm (language modelling)."
        )


def pairing() -> str:
    """'model=cnn and data=diabetes': the chosen model and data, for messages about the pair."""
    return f"model={chosen('model')} and data={chosen('data')}"


def chosen(group: str, default: str = "?") -> str:
    """The file chosen for config group `group` (Hydra's runtime choices), for messages."""
    choices = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}
    return choices.get(group) or default
