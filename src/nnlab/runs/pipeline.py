"""One nnlab run, read top to bottom like a checklist (the body of `nnlab-train`):

    seed -> data -> model -> task -> callbacks, logger, trainer -> fit -> test -> metrics.json

`run` returns the value of `optimized_metric`, so Hydra sweepers (grid, Optuna) can optimize
runs with no extra code.
"""

from __future__ import annotations

import copy
import gc
import logging
import shlex
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

import nnlab
from nnlab.checks.validation import validate_config
from nnlab.cli import app
from nnlab.cli.console import print_config_tree, print_metrics_table
from nnlab.cli.write_errors import write_status_anyway
from nnlab.engine import distributed
from nnlab.engine.rng import seed_everything
from nnlab.errors import UserError, did_you_mean
from nnlab.runs.build import build
from nnlab.runs.runfolder import lock_run_folder
from nnlab.runs.runinfo import run_info, write_json, write_status

log = logging.getLogger(__name__)


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
    (`nnlab.runs.runfolder`: the command's own folder is locked already; a fold's or member's
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
    check_beyond_accuracy(cfg, parts)
    resolved = OmegaConf.to_yaml(cfg, resolve=True)
    trainer.extra_state = {"config": resolved, "nnlab_version": nnlab.__version__}
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
            if getattr(data, "tokenizer", None) is not None:  # text: eval and predict encode with this one
                from nnlab.data.tokenizers import save

                save(data.tokenizer, output_dir / "tokenizer.json")
            write_status(output_dir, "running", started)
            if logger is not None:  # TensorBoard's Text tab: what reproduces the run, and what it ran with
                logger.log_text("run/command", indented(rerun_command()))
                logger.log_text("run/config", indented(resolved))
            recorded = True

    try:
        trainer.fit(task, data, ckpt_path=cfg.get("ckpt_path"), on_start=record)
        if not rank_zero:  # data-parallel: rank 0 tests and writes the results
            return trainer.metrics
        metrics = {**trainer.metrics, **trainer.test(task, data)}
        network_s = time.time() - started  # the network's fit and test: its time beside the baselines'
        metrics.update(beyond_accuracy(cfg, parts, metrics, network_s, output_dir, show_table))
        if logger is not None:
            logger.log_hparams(hyperparameters(cfg), metrics, trainer.epoch)
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
        if hasattr(data, "close"):  # an environment's worker processes (env.vectorization=async)
            data.close()

    if show_table:
        print_metrics_table(metrics, network_s=network_s)  # (and the baselines' comparison, when any ran)
    log.info("Results in %s", output_dir)
    return metrics


def check_beyond_accuracy(cfg: DictConfig, parts: Any) -> None:
    """The options of what runs after the test (baselines, fairness), checked before training: a
    mistake there is refused before the run spends its time, not after."""
    from nnlab.analysis.classical import check_baselines

    check_baselines(cfg.get("baselines", "auto"), parts.data, parts.task)
    if getattr(parts.data, "groups", None) is not None:
        from nnlab.analysis.fairness import check_options

        check_options(**(cfg.get("fairness") or {}))


def beyond_accuracy(
    cfg: DictConfig, parts: Any, metrics: dict[str, float], network_s: float, output_dir: Path, show: bool
) -> dict[str, float]:
    """After the test: classical models fitted on the same rows, beside the network (`baselines`:
    auto | a list | []), and, with data.sensitive, the test predictions' fairness per group."""
    from nnlab.analysis.classical import compare_baselines

    data, task, logger = parts.data, parts.task, parts.logger
    epoch = parts.trainer.epoch
    extra = compare_baselines(cfg.get("baselines", "auto"), data, task, metrics, network_s, cfg.seed, logger, epoch)
    if getattr(data, "groups", None) is not None:
        from nnlab.analysis.fairness import audit_fairness

        options = cfg.get("fairness") or {}  # mitigation, constraints, objective (train.yaml)
        extra.update(audit_fairness(parts.trainer, task, data, logger, output_dir, seed=cfg.seed, show=show, **options))
    return extra


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


# Config groups and keys that set how a run is watched or stored, not what it learns: never
# hyperparameters in TensorBoard's HParams tab.
NOT_HYPERPARAMETERS = ("callbacks", "logger", "paths", "hydra", "debug", "hparams_search")


def hyperparameters(cfg: DictConfig) -> dict[str, Any]:
    """The run's hyperparameters as TensorBoard's HParams tab lists them: the seed, each config
    group whose choice differs from train.yaml's defaults ({"experiment": "digits_gan",
    "model": "cnn"}), and every value the command line set ("optimizer.lr": 0.01; a sweep's
    swept keys among them), as the run resolved it. What is left out is the defaults' (and
    the chosen groups' YAML), so the table's first columns are what makes the runs differ."""
    params: dict[str, Any] = {"seed": cfg.seed}
    overrides: list[str] = []
    groups: set[str] = set()
    if HydraConfig.initialized():
        hydra_cfg = HydraConfig.get()
        defaults = default_choices()
        groups = set(hydra_cfg.runtime.choices)
        for group, choice in hydra_cfg.runtime.choices.items():
            if group.split("/")[0] not in NOT_HYPERPARAMETERS and str(choice) != defaults.get(group, "None"):
                params[group] = str(choice)
        overrides = list(hydra_cfg.overrides.task)
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if "=" not in override or key in params or key in groups or key.split(".")[0] in NOT_HYPERPARAMETERS:
            continue  # (a group's choice is listed above when it differs from the default)
        value = OmegaConf.select(cfg, key, default=None)
        if OmegaConf.is_config(value):
            value = OmegaConf.to_container(value, resolve=True)
        params[key] = value if isinstance(value, (bool, int, float, str)) else str(value)
    return params


def default_choices() -> dict[str, str]:
    """{group: choice} of train.yaml's defaults list, as Hydra's runtime choices spell them."""
    from importlib.resources import files

    entries = OmegaConf.load(files("nnlab.configs").joinpath("train.yaml")).defaults
    pairs = [next(iter(entry.items())) for entry in entries if OmegaConf.is_dict(entry)]
    return {str(group): str(choice) for group, choice in pairs}


def rerun_command() -> str:
    """`nnlab-train` with this run's command-line overrides (Hydra's own keys left out, so the
    rerun gets a folder of its own): the command that trains this run again."""
    overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    return shlex.join(["nnlab-train", *(o for o in overrides if not o.lstrip("+~").startswith("hydra."))])


def indented(text: str) -> str:
    """`text` as a Markdown code block (TensorBoard's Text tab renders Markdown)."""
    return "\n".join(f"    {line}" for line in text.splitlines())


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
