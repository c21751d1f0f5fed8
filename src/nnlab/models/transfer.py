"""Transfer learning: start a model from another run's weights, freeze part of it, or train the
transferred part at a smaller learning rate.

    transfer.init_from=<run>/checkpoints/best.ckpt    copy every tensor whose name and shape match
    transfer.reinit=[net.9]                           ... except these, even if they fit
    transfer.freeze=[backbone]                        ... and keep the copied tensors fixed
    transfer.freeze=[net.0, net.1]                    ... or the parameters under these prefixes
    transfer.backbone_lr_scale=0.1                    ... or train the copied tensors at lr x 0.1

Copying by name and shape is what makes one rule fit every case: an MLP pretrained on digits
0-4 (5 outputs) gives its hidden layers to an MLP for digits 5-9, whose new 5-way head does not
fit the old one's place and keeps its fresh initialisation; an autoencoder's `encoder.*` goes to
an `EncoderClassifier` (same `encoder.*` names) and its decoder is simply not wanted. A head
that fits by shape but not by meaning (digits 0-4 -> digits 5-9: five outputs each, other
classes) is left out with `reinit`. The log
says what was copied and what was not, so a silent mismatch cannot pass for a transfer.

Frozen BatchNorm layers are held in eval mode during training (a forward pre-hook switches
them back after every `model.train()`): they normalise with the running statistics they were
pretrained with, and those statistics stop moving. Updating them from the new data while the
layer's scale and shift stay fixed would change what the frozen layer computes, which is what
freezing promises not to do (the usual choice, e.g. torchvision's FrozenBatchNorm2d).

The options sit in the `transfer` config node, not in the model's: they are not arguments of
the model's constructor (its signature is its schema). `nnlab.runs.build.build_model` applies them
right after the model is built and initialised, then checks them against what the task it builds
declares it supports (`check_task_support`); `Supervised.configure` reads the copied names back
(`optimizer_params`) to make the two learning-rate groups.

This module works on a model and a checkpoint only: it imports nothing of `nnlab.tasks` or of the
commands (tasks import it, never the reverse), and learns what a task supports from the task's
declarations (`nnlab.engine.task.Task`), never from its type.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nnlab.engine.checkpoint import load_checkpoint
from nnlab.errors import ConfigValueError, UserError, check_range, did_you_mean

log = logging.getLogger(__name__)

# The word in `transfer.freeze` that stands for every copied tensor.
BACKBONE = "backbone"

# Where the result of `apply_transfer` is kept on the model, for the task's optimizer.
ATTRIBUTE = "nnlab_transfer"


@dataclass
class Transfer:
    """What `apply_transfer` did to a model."""

    copied: list[str] = field(default_factory=list)  # state_dict names copied from the checkpoint
    reinitialised: list[str] = field(default_factory=list)  # state_dict names left as initialised
    frozen: list[str] = field(default_factory=list)  # parameter names with requires_grad=False
    backbone_lr_scale: float = 1.0


def transfer_options() -> dict[str, Any]:
    """The `transfer` config node's keys and their defaults (nothing transferred): the keyword
    arguments of `apply_transfer`, whose signature is the schema (train.yaml's node spells them
    out for the user; tests/models/test_transfer.py checks the two agree)."""
    parameters = list(inspect.signature(apply_transfer).parameters.values())[1:]  # all but `model`
    return {p.name: p.default for p in parameters}


def _plain(value: Any) -> Any:
    """A sequence option as a list (YAML gives lists, the signature tuples), else the value."""
    return list(value) if isinstance(value, Sequence) and not isinstance(value, str) else value


def from_config(model: nn.Module, node: Mapping[str, Any] | None) -> Transfer | None:
    """Apply the `transfer` config node (None or all defaults: nothing happens, returns None)."""
    defaults = transfer_options()
    options = dict(node or {})
    unknown = [k for k in options if k not in defaults]
    if unknown:
        raise ConfigValueError(
            f"Unknown key 'transfer.{unknown[0]}'.{did_you_mean(str(unknown[0]), defaults)} "
            f"The transfer options are: {', '.join(defaults)}."
        )
    options = {**defaults, **options}
    if all(_plain(options[k]) == _plain(v) for k, v in defaults.items()):
        return None
    return apply_transfer(
        model,
        options["init_from"],
        list(options["reinit"] or []),
        list(options["freeze"] or []),
        options["backbone_lr_scale"],
    )


def apply_transfer(
    model: nn.Module,
    init_from: str | Path | None = None,
    reinit: Sequence[str] = (),
    freeze: Sequence[str] = (),
    backbone_lr_scale: float = 1.0,
) -> Transfer:
    """Copy matching weights from `init_from`, freeze `freeze`, and remember the lr scale.

    Args:
        model: the freshly built and initialised model; changed in place.
        init_from: a checkpoint written by nnlab-train (its EMA weights when it kept them). Every
            state_dict entry (parameters and buffers such as BatchNorm statistics) whose name and
            shape match is copied; the rest keep their initialisation. No parameter matching
            means the wrong checkpoint: a UserError.
        reinit: parameter-name prefixes never copied, even when they fit: a head whose classes
            differ from the pretrained one's (`net.9` for the default MLP). Without init_from
            there is nothing to copy, so an experiment can set it for both of its arms.
        freeze: parameter-name prefixes (`net.0` freezes `net.0.weight` and `net.0.bias`), or
            `backbone`: every copied parameter. Frozen parameters get requires_grad=False.
        backbone_lr_scale: the copied parameters train at the optimizer's lr times this (the
            others at the lr itself); 0.1 is a common choice, 1.0 changes nothing.
    """
    check_range("transfer.backbone_lr_scale", backbone_lr_scale, 0.0)
    result = Transfer(backbone_lr_scale=float(backbone_lr_scale))
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    if not trainable:  # a SOM's task draws its start from the data, which would undo a copy
        raise ConfigValueError(
            f"The transfer options need a model trained by gradients, but {type(model).__name__} sets its "
            "weights by its own rule (and its task picks its starting weights). Remove the transfer.* overrides."
        )
    if (BACKBONE in freeze or backbone_lr_scale != 1.0) and not init_from:
        raise ConfigValueError(
            "transfer.freeze=[backbone] and transfer.backbone_lr_scale name the tensors copied by "
            "transfer.init_from, which is not set. Set transfer.init_from=<run>/checkpoints/best.ckpt."
        )
    skipped = [name for prefix in reinit for name in under(model, prefix, "transfer.reinit")]
    if init_from:
        if not Path(init_from).is_file():
            raise UserError(
                f"transfer.init_from={init_from}: no such checkpoint file. Give the checkpoint of an earlier "
                "run, e.g. transfer.init_from=outputs/runs/<run>/checkpoints/best.ckpt."
            )
        result.copied, result.reinitialised = copy_matching(model, init_from, skip=skipped)
    params = [name for name, _ in model.named_parameters()]
    copied = set(result.copied)
    for prefix in freeze:
        chosen = [n for n in params if n in copied] if prefix == BACKBONE else under(model, prefix, "transfer.freeze")
        result.frozen += [name for name in chosen if name not in result.frozen]
    if result.frozen and set(result.frozen) >= set(trainable):
        raise ConfigValueError(
            f"transfer.freeze={list(freeze)} freezes every trainable parameter of {type(model).__name__}, "
            "so training would change nothing. Leave some layers (at least the head) unfrozen."
        )
    if result.frozen:
        freeze_parameters(model, result.frozen)
        log.info("Froze %d of %d parameter tensors: %s", len(result.frozen), len(params), result.frozen)
    setattr(model, ATTRIBUTE, result)
    return result


def under(model: nn.Module, prefix: str, key: str) -> list[str]:
    """The parameter names under `prefix` (`net.0` -> net.0.weight, net.0.bias); none is an error."""
    chosen = [name for name, _ in model.named_parameters() if name == prefix or name.startswith(f"{prefix}.")]
    if not chosen:
        modules = [
            name for name, m in model.named_modules() if name and next(m.parameters(recurse=False), None) is not None
        ]
        raise ConfigValueError(
            f"{key}: '{prefix}' is no parameter prefix of {type(model).__name__}.{did_you_mean(str(prefix), modules)} "
            f"Its layers with parameters are: {', '.join(modules)}"
            + (f" (or use '{BACKBONE}': every tensor copied by init_from)." if key == "transfer.freeze" else ".")
        )
    return chosen


def copy_matching(model: nn.Module, ckpt_path: str | Path, skip: Sequence[str] = ()) -> tuple[list[str], list[str]]:
    """Copy the tensors of `ckpt_path` whose name and shape match into `model`, except the
    parameters in `skip` (and the buffers of their layers); return the names copied and the
    names left as they were."""
    state = load_checkpoint(ckpt_path, map_location="cpu")
    if not isinstance(state, dict) or "model" not in state:
        raise UserError(
            f"transfer.init_from={ckpt_path} holds no model weights, so it was not written by nnlab-train. "
            "Point it at a run's checkpoints/best.ckpt or last.ckpt."
        )
    source = trained_weights(state)
    own = model.state_dict()
    skipped_layers = {name.rpartition(".")[0] for name in skip}  # a skipped BN keeps its fresh statistics too
    copied = [
        k
        for k, v in own.items()
        if k in source and source[k].shape == v.shape and k.rpartition(".")[0] not in skipped_layers
    ]
    param_names = {name for name, _ in model.named_parameters()}
    if not param_names & set(copied):
        theirs = ", ".join(f"{k} {tuple(v.shape)}" for k, v in list(source.items())[:4])
        ours = ", ".join(f"{k} {tuple(v.shape)}" for k, v in list(own.items())[:4])
        raise UserError(
            f"transfer.init_from={ckpt_path}: no parameter of {type(model).__name__} matches the checkpoint by "
            f"name and shape (checkpoint: {theirs}, ...; model: {ours}, ...). It was trained with another model "
            "or input size: choose a checkpoint of the same model family, e.g. pretrained with the same model= "
            "and data shape."
        )
    with torch.no_grad():
        for k in copied:
            own[k].copy_(source[k])
    reinitialised = [k for k in own if k not in set(copied)]
    log.info("transfer.init_from: copied %d tensors from %s, re-initialised: %s", len(copied), ckpt_path, reinitialised)
    return copied, reinitialised


def freeze_parameters(model: nn.Module, names: Iterable[str]) -> None:
    """requires_grad=False for `names`; BatchNorm layers whose parameters are all frozen are held
    in eval mode (see the module docstring)."""
    names = set(names)
    for name, p in model.named_parameters():
        if name in names:
            p.requires_grad_(False)
    for module_name, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            own = [f"{module_name}.{n}" for n, _ in m.named_parameters(recurse=False)]
            if own and all(n in names for n in own):
                m.register_forward_pre_hook(_hold_in_eval_mode)


def _hold_in_eval_mode(module: nn.Module, args: Any) -> None:
    # model.train() at each epoch's start turns every layer to training; a frozen BatchNorm goes
    # back to eval before it runs, so it neither updates nor uses batch statistics.
    module.train(False)


def optimizer_params(model: nn.Module) -> Iterable[torch.nn.Parameter] | list[dict[str, Any]]:
    """What a task hands its optimizer: `model.parameters()` when nothing was transferred (the
    default path, unchanged); else the trainable parameters, in two groups when
    `backbone_lr_scale` is not 1: the copied ones (`lr_scale` set) and the rest. Call
    `scale_group_lrs` on the optimizer once it is built."""
    transfer: Transfer | None = getattr(model, ATTRIBUTE, None)
    if transfer is None:
        return model.parameters()
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    if transfer.backbone_lr_scale == 1.0:
        return [p for _, p in named]
    copied = set(transfer.copied)
    backbone = [p for name, p in named if name in copied]
    rest = [p for name, p in named if name not in copied]
    return [g for g in ({"params": backbone, "lr_scale": transfer.backbone_lr_scale}, {"params": rest}) if g["params"]]


def scale_group_lrs(optimizer: torch.optim.Optimizer) -> None:
    """Multiply each parameter group's lr by its `lr_scale` (groups from `optimizer_params`).
    Done after the optimizer is built, so the base lr stays wherever the optimizer config put it;
    schedulers built afterwards scale each group's own lr (onecycle's single max_lr is the
    exception: it resets every group to the same peak)."""
    for group in optimizer.param_groups:
        group["lr"] = group["lr"] * group.get("lr_scale", 1.0)


def check_task_support(task: Any, node: Mapping[str, Any] | None) -> None:
    """Check the `transfer` options against what `task` declares it supports (see
    `nnlab.engine.task.Task`; a task that declares nothing supports neither):

    - transfer.backbone_lr_scale needs `task.supports_backbone_lr_scale` (a task that builds its
      optimizer with `optimizer_params`, as the supervised task does);
    - transfer.freeze must leave something to train in each of `task.own_optimizer_parts` (the
      submodules that train with an optimizer of their own, e.g. a GAN's generator and
      discriminator), or that optimizer would have nothing to step.
    """
    scale = (node or {}).get("backbone_lr_scale", 1.0)
    if scale != 1.0 and not task.supports_backbone_lr_scale:
        raise ConfigValueError(
            f"transfer.backbone_lr_scale={scale} is supported by the supervised task only, not by "
            f"{type(task).__name__}. Leave it at 1.0 (transfer.init_from and transfer.freeze work here)."
        )
    transfer: Transfer | None = getattr(task.model, ATTRIBUTE, None)  # None: nothing applied
    if transfer is None or not transfer.frozen:
        return
    frozen = set(transfer.frozen)
    freeze = list((node or {}).get("freeze") or [])
    for part in task.own_optimizer_parts:
        named = [(name, p) for name, p in task.model.named_parameters() if name.startswith(f"{part}.")]
        froze = [name for name, _ in named if name in frozen]
        if froze and not any(p.requires_grad for _, p in named):
            raise ConfigValueError(
                f"transfer.freeze={freeze} freezes the whole {part}, which the task ({type(task).__name__}) "
                f"trains with an optimizer of its own. Freeze some of its layers only, e.g. "
                f"[{froze[0].rsplit('.', 1)[0]}]."
            )


def trained_weights(state: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The weights the run was tested with: the exponential moving average of the weights when
    the run kept one (`regularization.ema_decay`), else the weights themselves. (Here, where both
    `copy_matching` and `nnlab.runs.restore` read it: restore imports models, never the reverse.)"""
    ema = state.get("ema")
    if ema:
        averaged = {k.removeprefix("module."): v for k, v in ema.items() if k.startswith("module.")}
        if averaged:
            return averaged
    return state["model"]
