"""Files from elsewhere never run code: a checkpoint's tensors load with weights_only, and the run
config stored in it may only name the `_target_`s of nnlab's own config files."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from helpers import run_command, train_tiny
from nnlab.checks.untrusted import catalogue_targets
from nnlab.engine.checkpoint import load_checkpoint
from nnlab.errors import UserError
from nnlab.runs.restore import load_run


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_tiny([], tmp_path_factory.mktemp("run")).dir / "checkpoints" / "last.ckpt"


def doctored(ckpt: Path, folder: Path, marker: Path) -> Path:
    """`ckpt` with its stored config's model replaced by a call of os.system that would create
    `marker`: only plain strings and tensors, so weights_only loads it without complaint."""
    state = load_checkpoint(ckpt)
    cfg = OmegaConf.create(state["config"])
    cfg.model = {"_target_": "os.system", "command": f"touch {marker}"}
    state["config"] = OmegaConf.to_yaml(cfg)
    path = folder / "doctored.ckpt"
    torch.save(state, path)
    return path


def test_the_catalogue_holds_nnlabs_own_targets_only() -> None:
    targets = catalogue_targets()
    assert {"nnlab.models.mlp.MLP", "torch.optim.Adam", "nnlab.engine.trainer.Trainer"} <= targets
    assert not {t for t in targets if t.startswith(("os.", "subprocess.", "builtins."))}


def test_a_stored_config_naming_a_foreign_target_is_refused_before_anything_is_built(
    tiny_ckpt: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    path = doctored(tiny_ckpt, tmp_path, marker)
    with pytest.raises(UserError, match=r"Refused to build the run stored in .*'os\.system'.*trust_config=true"):
        load_run(path, device="cpu")
    assert not marker.exists()


@pytest.mark.parametrize("command", ["eval", "predict", "export"])
def test_every_command_refuses_it_with_one_line_and_runs_nothing(command: str, tiny_ckpt: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = doctored(tiny_ckpt, tmp_path, marker)
    args = [f"ckpt_path={path}", f"hydra.run.dir={tmp_path / 'out'}"]
    if command == "predict":
        args.append(f"input={tmp_path / 'rows.csv'}")
        (tmp_path / "rows.csv").write_text(",".join(["0"] * 64) + "\n")
    result = run_command(command, args, tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: Refused to build") and "os.system" in lines[0]
    assert "Traceback" not in result.stdout + result.stderr
    assert not marker.exists()


def test_an_untouched_checkpoint_still_loads(tiny_ckpt: Path) -> None:
    assert load_run(tiny_ckpt, device="cpu").model is not None


@pytest.mark.parametrize(
    "version, refused", [("2.5.1", True), ("2.9.1+cu126", True), ("2.10.0", False), ("2.14.1+cpu", False)]
)
def test_checkpoints_are_only_unpickled_by_a_torch_without_known_weights_only_holes(
    version: str, refused: bool
) -> None:
    from nnlab.engine.checkpoint import require_safe_torch

    if refused:
        with pytest.raises(UserError, match=rf"torch {re.escape(version)} is installed.*CVE-2025-32434.*pip install"):
            require_safe_torch(version)
    else:
        require_safe_torch(version)
