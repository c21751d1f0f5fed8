"""An earlier run, rebuilt from one of its checkpoints: the config it was trained with, its data,
its model with the weights it was tested with, and its task.

    ckpt -> the run's config (stored inside) -> data, model, task (nnlab.runs.build.build_model)
         -> the weights (the EMA of the weights when the run kept one) -> eval mode

Every command that works on a trained run starts here: nnlab-eval, nnlab-predict, nnlab-explain,
nnlab-attack, nnlab-export, nnlab-ensemble. A checkpoint may come from anyone: its tensors are
read with `weights_only=True` (`nnlab.engine.checkpoint.load_checkpoint`), and the config stored
in it passes `nnlab.checks.untrusted.stored_run_config` (no `${`, only nnlab's own `_target_`s) before
anything is built from it, so a file from elsewhere cannot run code.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from nnlab.checks.untrusted import read_tokenizer, stored_run_config
from nnlab.engine.checkpoint import load_checkpoint, mismatch
from nnlab.engine.devices import resolve_device
from nnlab.engine.precision import Precision
from nnlab.errors import UserError
from nnlab.models.transfer import trained_weights

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


def checkpoint_of(cfg: DictConfig) -> str:
    """A command's `ckpt_path`, or a UserError that says how to set it."""
    if OmegaConf.is_missing(cfg, "ckpt_path") or not cfg.get("ckpt_path"):
        raise UserError(
            "ckpt_path is not set. Name the checkpoint of a trained run, e.g. "
            "ckpt_path=outputs/runs/<run>/checkpoints/best.ckpt"
        )
    return str(cfg.ckpt_path)


def load_run(
    ckpt_path: str | Path,
    data: DictConfig | None = None,
    device: str = "auto",
    trust_config: bool = False,
    config: DictConfig | None = None,
) -> Restored:
    """Rebuild the run that wrote `ckpt_path`. `data` replaces the run's data config (another
    dataset of the same input shape and classes); `device` is auto, cpu, cuda or cuda:N;
    `trust_config` builds the stored config unchecked (see `nnlab.checks.untrusted.buildable`).
    `config` is the caller's own config of the run, built instead of the stored one (only the
    checkpoint's tensors are used): nnlab-ensemble's members, composed in this process."""
    path = Path(ckpt_path)
    state = load_checkpoint(path, map_location="cpu")
    if config is not None:
        cfg = copy.deepcopy(config)
    else:
        cfg = stored_run_config(state, path, trust_config)
    if data is not None:
        with open_dict(cfg):
            # The user's own data config, resolved against its own command's config (data.seed is
            # ${seed} there), so nothing in it is looked up in the stored one.
            cfg.data = OmegaConf.to_container(data, resolve=True) if OmegaConf.is_config(data) else data
    from nnlab.runs.build import build_model

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
    if getattr(built_data, "tokenizer", None) is not None:
        built_data.tokenizer = run_tokenizer(path, built_data.tokenizer)
    built_data.setup(dev)
    task.configure(dev, Precision(cfg.trainer.get("precision", 32), dev), total_steps=1)
    if getattr(task, "prepare_when_restored", False):  # (its data-dependent setup leaves the weights alone)
        task.prepare(built_data)
    model.to(dev).eval()
    log.info("Loaded %s (epoch %s) of a %s", path, state.get("epoch"), type(model).__name__)
    return Restored(cfg, path, state, built_data, model, task, dev)


def run_tokenizer(ckpt_path: Path, rebuilt: Any) -> Any:
    """The tokenizer the run saved (its folder's tokenizer.json, read through the untrusted-file
    gate), which must be the one the data were rebuilt with: the model's token ids mean what they
    meant in training. Without the file (a checkpoint moved on its own), the rebuilt one."""
    saved_path = ckpt_path.resolve().parent.parent / "tokenizer.json"
    if not saved_path.is_file():
        log.warning("No tokenizer.json beside %s: using the tokenizer rebuilt from the run's data", ckpt_path)
        return rebuilt
    saved = read_tokenizer(saved_path)
    if saved.to_dict() != rebuilt.to_dict():
        raise UserError(
            f"The data's tokenizer is not the run's ({saved_path}): its token ids would mean other tokens to the "
            "model. Evaluate on the run's own data (leave `data` unset), or on text encoded with the run's tokenizer."
        )
    return saved
