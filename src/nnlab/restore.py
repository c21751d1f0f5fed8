"""An earlier run, rebuilt from one of its checkpoints: the config it was trained with, its data,
its model with the weights it was tested with, and its task.

    ckpt -> the run's config (stored inside) -> data, model, task (nnlab.pipeline.build_model)
         -> the weights (the EMA of the weights when the run kept one) -> eval mode

Every command that works on a trained run starts here: nnlab-eval, nnlab-predict, nnlab-explain,
nnlab-attack, nnlab-export, nnlab-ensemble. The checkpoint is read with `weights_only=True`
(`nnlab.engine.checkpoint.load_checkpoint`), and the config stored in it may only name the
`_target_`s of nnlab's own config files (`check_targets`), so a file from elsewhere cannot run
code.
"""

from __future__ import annotations

import functools
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from nnlab.engine.checkpoint import load_checkpoint, mismatch
from nnlab.engine.precision import Precision
from nnlab.engine.trainer import resolve_device
from nnlab.errors import UserError

log = logging.getLogger(__name__)


@dataclass
class Restored:
    """A trained run, ready to evaluate: `model` is on `device`, in eval mode."""

    cfg: DictConfig  # the config the run was trained with (with `data` replaced when asked)
    ckpt_path: Path
    state: dict[str, Any]  # the checkpoint (epoch, metrics, ...)
    data: Any  # the DataModule, set up on `device`
    model: torch.nn.Module
    task: Any
    device: torch.device

    @property
    def classifier(self) -> bool:
        return self.data.kind == "classification"


def run_config(state: dict[str, Any], path: Path, trust_config: bool = False) -> DictConfig:
    """The config stored in a checkpoint nnlab-train wrote, checked before anything is built
    from it (see `check_targets`)."""
    text = state.get("config")
    if not isinstance(text, str):
        raise UserError(
            f"{path} holds no run config, so it was not written by nnlab-train (or by an older nnlab). "
            "Point ckpt_path at a checkpoint in an nnlab run's checkpoints/ folder, e.g. "
            "outputs/runs/<run>/checkpoints/best.ckpt."
        )
    try:
        cfg = OmegaConf.create(text)
    except Exception as e:  # noqa: BLE001 - untrusted text: whatever breaks, it is no config
        raise UserError(f"The run config stored in {path} is not valid YAML ({e}). Use another checkpoint.") from e
    if not isinstance(cfg, DictConfig):
        raise UserError(f"The run config stored in {path} is not a mapping. Use another checkpoint.")
    if not trust_config:
        check_targets(cfg, path)
    return cfg


@functools.cache
def catalogue_targets() -> frozenset[str]:
    """Every `_target_` named in nnlab's own config files: the classes and functions a run
    composed from them can build."""
    import nnlab.configs

    folder = Path(nnlab.configs.__file__).parent
    found = set()
    for file in folder.rglob("*.yaml"):
        found.update(re.findall(r"^\s*_target_:\s*([\w.]+)", file.read_text(), flags=re.MULTILINE))
    return frozenset(found)


def check_targets(cfg: DictConfig, path: Path) -> None:
    """Refuse a checkpoint whose stored config names a `_target_` outside nnlab's catalogue.

    Building a config imports and calls what its `_target_` keys name, so a config is code; a
    checkpoint is a file that may come from anyone (its tensors are loaded with
    `weights_only=True`, but its config would still be built). A config written by nnlab-train
    from nnlab's own config files only names targets from them; anything else (os.system, say)
    is refused before any is imported, unless the user vouches for the file with
    `trust_config=true`."""
    allowed = catalogue_targets()
    foreign = sorted({t for t in _targets(OmegaConf.to_container(cfg, resolve=False)) if t not in allowed})
    if foreign:
        raise UserError(
            f"Refused to build the run stored in {path}: its config names {', '.join(map(repr, foreign))}, which "
            "nnlab's own configs do not. A checkpoint's config is run as code (Hydra imports and calls every "
            "_target_), so one from elsewhere could run anything. If you wrote it yourself (a model or dataset "
            "of your own) and trust the file, add trust_config=true to the command."
        )


def _targets(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [str(node["_target_"])] if "_target_" in node else []
        return found + [t for value in node.values() for t in _targets(value)]
    if isinstance(node, list):
        return [t for value in node for t in _targets(value)]
    return []


def checkpoint_of(cfg: DictConfig) -> str:
    """A command's `ckpt_path`, or a UserError that says how to set it."""
    if OmegaConf.is_missing(cfg, "ckpt_path") or not cfg.get("ckpt_path"):
        raise UserError(
            "ckpt_path is not set. Name the checkpoint of a trained run, e.g. "
            "ckpt_path=outputs/runs/<run>/checkpoints/best.ckpt"
        )
    return str(cfg.ckpt_path)


def load_run(
    ckpt_path: str | Path, data: DictConfig | None = None, device: str = "auto", trust_config: bool = False
) -> Restored:
    """Rebuild the run that wrote `ckpt_path`. `data` replaces the run's data config (another
    dataset of the same input shape and classes); `device` is auto, cpu, cuda or cuda:N;
    `trust_config` builds a stored config that names targets outside nnlab's catalogue."""
    path = Path(ckpt_path)
    state = load_checkpoint(path, map_location="cpu")
    cfg = run_config(state, path, trust_config)
    if data is not None:
        with open_dict(cfg):
            cfg.data = data
    from nnlab.pipeline import build_model

    dev = resolve_device(device)
    built_data, model, task = build_model(cfg, augment=False)
    weights = trained_weights(state)
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:
        detail = mismatch(model, weights) or str(e).strip().splitlines()[0]
        raise UserError(
            f"The weights in {path} do not fit the model its config builds for data "
            f"'{cfg.data.dataset._target_}': {detail}. Evaluate on a dataset with the run's input shape "
            "and number of outputs, or leave `data` unset to use the run's own."
        ) from e
    built_data.setup(dev)
    task.configure(dev, Precision(cfg.trainer.get("precision", 32), dev), total_steps=1)
    model.to(dev).eval()
    log.info("Loaded %s (epoch %s) of a %s", path, state.get("epoch"), type(model).__name__)
    return Restored(cfg, path, state, built_data, model, task, dev)


def trained_weights(state: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The weights the run was tested with: the exponential moving average of the weights when
    the run kept one (`regularization.ema_decay`), else the weights themselves."""
    ema = state.get("ema")
    if ema:
        averaged = {k.removeprefix("module."): v for k, v in ema.items() if k.startswith("module.")}
        if averaged:
            return averaged
    return state["model"]
