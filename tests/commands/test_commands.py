"""Every command in pyproject.toml exists, and every command's primary config composes."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import tomllib
from hydra import compose, initialize_config_module

from helpers import CONFIG_DIR

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
PRIMARY = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_every_console_script_points_at_a_cli(name: str) -> None:
    module, func = SCRIPTS[name].split(":")
    assert callable(getattr(importlib.import_module(module), func)), SCRIPTS[name]


@pytest.mark.parametrize("name", PRIMARY)
def test_every_primary_config_composes(name: str) -> None:
    with initialize_config_module("nnlab.configs", version_base="1.3"):
        cfg = compose(name, return_hydra_config=True)
    assert cfg.hydra.help.app_name.startswith("nnlab-")
    assert cfg.hydra.run.dir.startswith(f"{cfg.paths.log_dir}/")  # a run folder under outputs/
