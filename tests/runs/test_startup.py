"""Start-up stays fast: the entry point and the default run import no optional heavy package
(torchvision, captum, onnx, optuna, matplotlib, ...) until a feature that needs it is used."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

OPTIONAL = ("torchvision", "captum", "onnx", "onnxruntime", "optuna", "matplotlib", "lightning", "sklearn", "scipy")


def imported_after(code: str, cwd: Path) -> set[str]:
    """The top-level packages in sys.modules after running `code` in a fresh interpreter."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))"
    out = subprocess.run([sys.executable, "-c", probe], cwd=cwd, capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_the_entry_point_imports_no_torch(tmp_path: Path) -> None:
    """`nnlab.commands.train` only composes the config: the process that launches a sweep never imports torch."""
    loaded = imported_after("import nnlab.commands.train", tmp_path)
    assert "hydra" in loaded
    assert loaded.isdisjoint({"torch", *OPTIONAL}), sorted(loaded & {"torch", *OPTIONAL})


def test_building_the_default_run_imports_no_optional_package(tmp_path: Path) -> None:
    """Everything up to the first training step of the default experiment (compose, validate,
    build data, model, task, callbacks, logger, trainer) needs torch and nothing optional."""
    code = f"""
import sys
sys.path.insert(0, {str(Path(__file__).parents[1])!r})
from helpers import compose_config
from nnlab.runs.build import build
from nnlab.checks.validation import validate_config
cfg = compose_config([], {str(tmp_path / "run")!r})
validate_config(cfg)
build(cfg)
"""
    loaded = imported_after(code, tmp_path)
    assert "torch" in loaded
    assert loaded.isdisjoint(OPTIONAL), sorted(loaded & set(OPTIONAL))


def test_warm_up_freezes_what_the_engine_import_made_once() -> None:
    """After torch and the engine are imported, their objects are frozen (the cyclic collector
    no longer scans them); a second call, as in a sweep's next trial, freezes nothing more."""
    code = (
        "import gc; from nnlab.commands.train import warm_up; "
        "before = gc.get_freeze_count(); warm_up(); first = gc.get_freeze_count(); "
        "object(); [[] for _ in range(1000)]; warm_up(); "
        "print(before, first, gc.get_freeze_count(), 'torch' in __import__('sys').modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    before, first, again, torch_loaded = int(out[0]), int(out[1]), int(out[2]), out[3]
    assert before == 0 and first > 100_000 and again == first and torch_loaded == "True"
