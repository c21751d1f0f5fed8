"""One nnlab run, read top to bottom like a checklist (the body of `nnlab-train`):

    seed -> data -> model -> task -> callbacks, logger, trainer -> fit -> test -> metrics.json

`run` returns the value of `optimized_metric`, so Hydra sweepers (grid, Optuna) can optimize
runs with no extra code.
"""

from __future__ import annotations

import copy
import gc
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

import nnlab
from nnlab import app
from nnlab.console import print_config_tree, print_metrics_table
from nnlab.engine import distributed
from nnlab.engine.rng import seed_everything
from nnlab.errors import ConfigValueError, DataMismatchError, OptionError, UserError, did_you_mean
from nnlab.runfolder import lock_run_folder
from nnlab.runinfo import run_info, write_json, write_status
from nnlab.validation import validate_config
from nnlab.write_errors import write_status_anyway

log = logging.getLogger(__name__)

# Config groups whose values are the run's hyperparameters in TensorBoard's HParams tab.
HPARAM_GROUPS = ("data", "model", "init", "task", "optimizer", "scheduler", "regularization", "trainer")


def train(cfg: DictConfig) -> dict[str, float]:
    """Validate, build every part the config names, train, test; return the final metrics.
    With `data_edit=kfold`, do that once per fold and return the folds' means."""
    if cfg.trainer.get("strategy") == "ddp":
        join_process_group(cfg)
    if (cfg.get("data_edit") or {}).get("kfold"):
        return cross_validate(cfg)
    return train_once(cfg)


def join_process_group(cfg: DictConfig) -> None:
    """Data-parallel run (started by torchrun): join the process group, and make every rank use
    rank 0's run folder (each rank's Hydra picked its own timestamp). Ranks other than 0 write
    nothing and log only errors."""
    info = distributed.init_distributed(cfg.trainer.device, cfg.trainer.get("ddp_timeout_s", 300.0))
    own = Path(cfg.paths.output_dir).resolve()
    shared = Path(distributed.broadcast_object(str(own)))
    if info.is_zero:
        return
    logging.getLogger().setLevel(logging.ERROR)
    if own != shared and own.is_dir() and {p.name for p in own.iterdir()} <= {"train.log"}:
        shutil.rmtree(own, ignore_errors=True)  # the folder Hydra made for this rank: one run, one folder
    with open_dict(cfg):
        cfg.paths.output_dir = str(shared)


def cross_validate(cfg: DictConfig) -> dict[str, float]:
    """k-fold cross-validation: one run per fold in `<run>/fold_<i>/` (each with its own
    checkpoints, TensorBoard run and metrics.json), all tested on the same held-out test split.

    The run's metrics.json holds each metric's mean over the folds under its own name (so
    `optimized_metric: val/loss` is the cross-validated mean a sweeper optimizes), its standard
    deviation as `<name>_std`, and every fold's value as `fold_<i>/<name>`.
    """
    validate_config(cfg)
    root = Path(cfg.paths.output_dir)
    k = int(cfg.data_edit.kfold.folds)
    save_run_record(cfg, root)
    started = time.time()
    write_status(root, "running", started)
    folds: list[dict[str, float]] = []
    for i in range(k):
        fold_cfg = copy.deepcopy(cfg)
        with open_dict(fold_cfg):
            fold_cfg.data_edit.kfold.fold = i
            fold_cfg.paths.output_dir = str(root / f"fold_{i}")
        log.info("Cross-validation: fold %d of %d", i + 1, k)
        folds.append(train_once(fold_cfg, show_table=False))
    metrics: dict[str, float] = {}
    for name in sorted(set.intersection(*(set(f) for f in folds))):
        values = np.array([f[name] for f in folds], dtype=float)
        metrics[name] = float(values.mean())
        metrics[f"{name}_std"] = float(values.std(ddof=1))
    for i, fold in enumerate(folds):
        metrics.update({f"fold_{i}/{name}": v for name, v in fold.items()})
    write_json(metrics, root / "metrics.json")
    write_status(root, "completed", started)
    shown = {name: v for name, v in metrics.items() if not name.startswith("fold_") and not name.endswith("_std")}
    print_metrics_table(shown, stds={name: metrics[f"{name}_std"] for name in shown}, title=f"{k}-fold mean ± std")
    log.info("Results in %s", root)
    return metrics


def train_once(cfg: DictConfig, show_table: bool = True) -> dict[str, float]:
    """One run: validate, build, fit, test, write metrics.json; in its run folder, locked
    (`nnlab.runfolder`: the command's own folder is locked already; a fold's or member's
    sub-folder, or the folder of the run `ckpt_path` continues, is locked here)."""
    validate_config(cfg)
    if cfg.get("print_config"):
        print_config_tree(cfg)
    output_dir = continue_in_run_folder(cfg)
    with lock_run_folder(output_dir):
        return fit_and_test(cfg, output_dir, show_table)


def fit_and_test(cfg: DictConfig, output_dir: Path, show_table: bool) -> dict[str, float]:
    """`train_once` in its locked run folder: seed, build, fit, test, write metrics.json."""
    seed_everything(cfg.seed)

    parts = build(cfg)
    data, task, trainer, logger = parts.data, parts.task, parts.trainer, parts.logger
    trainer.extra_state = {"config": OmegaConf.to_yaml(cfg, resolve=True), "nnlab_version": nnlab.__version__}
    resuming = bool(cfg.get("ckpt_path")) or (cfg.trainer.get("resume") == "auto" and trainer.last_checkpoint())
    rank_zero = distributed.current().is_zero
    started = time.time()

    recorded = False

    def record() -> None:
        """Once the checkpoint it continues from (if any) is restored: a bad checkpoint must not
        touch the record of the run it was taken from."""
        nonlocal recorded
        if rank_zero:
            save_run_record(cfg, output_dir, resuming=bool(resuming))
            write_status(output_dir, "running", started)
            recorded = True

    try:
        trainer.fit(task, data, ckpt_path=cfg.get("ckpt_path"), on_start=record)
        if not rank_zero:  # data-parallel: rank 0 tests and writes the results
            return trainer.metrics
        metrics = {**trainer.metrics, **trainer.test(task, data)}
        if logger is not None:
            logger.log_hparams(hyperparameters(cfg), metrics)
            logger.close()  # its last events on disk (or its write error raised) before the run is done
        metrics = dict(sorted(metrics.items()))
        write_json(metrics, output_dir / "metrics.json")
        write_status(output_dir, "completed", started)
    except Exception as e:
        if recorded and not app.in_sweep():  # (a sweep's trial records its failure in app.guarded)
            error = app.user_error_message(e, output_dir) or f"{type(e).__name__}: {e}"
            write_status_anyway(output_dir, "failed", started, error=error)  # (also on a full disk)
        raise
    finally:
        if logger is not None:
            try:
                logger.close()  # flushes event files, also on Ctrl-C or an error
            except OSError:  # a full disk: the error already on its way says so
                pass

    if show_table:
        print_metrics_table(metrics)
    log.info("Results in %s", output_dir)
    return metrics


def continue_in_run_folder(cfg: DictConfig) -> Path:
    """The run's folder. With `ckpt_path=<run>/checkpoints/x.ckpt` from an earlier nnlab run,
    that run's folder: the resumed run keeps writing its TensorBoard run and checkpoints."""
    output_dir = Path(cfg.paths.output_dir)
    ckpt_path = cfg.get("ckpt_path")
    if not ckpt_path:
        return output_dir
    ckpt = Path(ckpt_path)
    if not ckpt.is_file():
        raise UserError(
            f"ckpt_path={ckpt_path}: no such file. Point it at a checkpoint, e.g. "
            "outputs/runs/<run>/checkpoints/last.ckpt, or use trainer.resume=auto hydra.run.dir=<run folder>."
        )
    run_dir = ckpt.resolve().parent.parent
    if (run_dir / ".hydra").is_dir() and run_dir != output_dir.resolve():
        log.info("Continuing the run in %s (the folder %s belongs to)", run_dir, ckpt)
        cfg.paths.output_dir = str(run_dir)  # the logger's and the checkpoints' folders follow it
        return run_dir
    return output_dir


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

    data = build_data(cfg, augment)

    log.info("Building model <%s>", cfg.model._target_)
    try:
        model = instantiate(cfg.model, input_shape=data.input_shape, num_outputs=data.num_outputs)
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
        optimizer=instantiate(cfg.optimizer),
        scheduler=scheduler,
        kind=data.kind,
        class_names=data.class_names,
        class_counts=data.class_counts,
    )
    transfer.check_task_support(task, cfg.get("transfer"))
    return data, model, task


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


def pairing() -> str:
    """'model=cnn and data=diabetes': the chosen model and data, for messages about the pair."""
    choices = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}
    return f"model={choices.get('model', '?')} and data={choices.get('data', '?')}"


def save_run_record(cfg: DictConfig, output_dir: Path, resuming: bool = False) -> None:
    """Write .hydra/{config,hydra,overrides}.yaml (config resolved) and run_info.json: what the run
    was built from. A resumed run keeps the record of the run it continues and adds its own as
    .hydra/resume/{config,overrides}.yaml (the latest resume).

    Hydra would write .hydra/ before the config is checked (`hydra.output_subdir: null` turns that
    off); writing it here, after every part was built, keeps a rejected run from overwriting the
    record of an earlier run in the same folder.
    """
    hydra_dir = output_dir / ".hydra"
    if resuming and (hydra_dir / "config.yaml").is_file():
        hydra_dir = hydra_dir / "resume"
    hydra_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, hydra_dir / "config.yaml", resolve=True)  # as run: no interpolations left
    if HydraConfig.initialized():
        hydra_cfg = HydraConfig.get()
        OmegaConf.save(OmegaConf.create({"hydra": hydra_cfg}), hydra_dir / "hydra.yaml")
        OmegaConf.save(hydra_cfg.overrides.task, hydra_dir / "overrides.yaml")
    write_json(run_info(), output_dir / "run_info.json")


def hyperparameters(cfg: DictConfig) -> dict[str, Any]:
    """Flat {"data": "digits", "optimizer.lr": 0.001, ...}: the chosen config of each group plus
    every plain value in the groups that shape training."""
    params: dict[str, Any] = {}
    if HydraConfig.initialized():
        params.update({k: str(v) for k, v in HydraConfig.get().runtime.choices.items() if not k.startswith("hydra")})
    params["seed"] = cfg.seed

    def flatten(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if not str(k).startswith("_"):
                    flatten(v, f"{prefix}.{k}")
        else:
            params[prefix] = node if isinstance(node, (bool, int, float, str)) else str(node)

    for group in HPARAM_GROUPS:
        if cfg.get(group):
            flatten(OmegaConf.to_container(cfg[group], resolve=True), group)
    params.pop("trainer.output_dir", None)
    return params


def optimized_value(metrics: dict[str, float], name: str) -> float:
    if name not in metrics:
        raise UserError(
            f"optimized_metric='{name}' is not a metric of this run.{did_you_mean(name, metrics)} "
            f"Choose one of: {', '.join(metrics)}."
        )
    return metrics[name]


def run(cfg: DictConfig) -> float | None:
    """`nnlab-train`'s body: train; return the optimized metric. A user's mistake ends in one
    paragraph (exit 2), Ctrl-C in exit 130 (SIGTERM: 143) with the run's files kept."""

    def body() -> float | None:
        metrics = train(cfg)
        return optimized_value(metrics, cfg.optimized_metric) if cfg.get("optimized_metric") else None

    output_dir = cfg.paths.output_dir
    stopped = f"The last checkpoint and the TensorBoard logs are in {output_dir}"
    ended_well = False
    try:
        result = app.guarded(body, interrupted=stopped, output_dir=output_dir)
        ended_well = True
        return result
    finally:
        distributed.shutdown(wait_for_peers=ended_well)
        if app.in_sweep():
            # A sweep's worker process runs trial after trial, then exits: collect this trial's
            # garbage and freeze what is left (mostly imported modules), so later collections
            # and the worker's exit skip it (docs/benchmarks.md has the figure).
            gc.collect()
            gc.freeze()
