"""The SOM case: nnlab's batch SOM (`experiment=digits_som`) against MiniSom.

The comparison itself lives in `scripts/bench_som.py` (settings, timing, the rows); this module
loads that script from the checkout and runs its nnlab row and its MiniSom rows, so the two
benchmarks cannot drift apart. Its rows carry train time, quantization error (qe) and
topographic error (te) rather than steps/s: the SOM learns without gradients or an optimizer.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from nnlab.bench.loops import Unavailable

SCRIPT = Path(__file__).resolve().parents[3] / "scripts" / "bench_som.py"


def load_script() -> ModuleType:
    """scripts/bench_som.py as a module (it ships with the repository, not with the package)."""
    if not SCRIPT.is_file():
        raise Unavailable(f"{SCRIPT} not found: the SOM case needs a checkout of the repository (pip install -e .).")
    spec = importlib.util.spec_from_file_location("nnlab_bench_som_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def som_rows(epochs: int, device: str, repeats: int) -> tuple[list[dict[str, Any]], list[str]]:
    """(rows, notes): nnlab batch SOM for `epochs` updates, then MiniSom at each of the script's
    sigmas (10 N samples, its default schedule). Each row: implementation, mode, iterations,
    train_s (median of `repeats` after a warm-up), qe, te; MiniSom rows add speedup (its time over
    nnlab's). Without MiniSom only nnlab's row, and a note."""
    script = load_script()
    from nnlab.engine.trainer import resolve_device

    dev = resolve_device(device)
    cfg = script.experiment([f"trainer.max_epochs={epochs}"])
    rows = [script.nnlab_row(cfg, dev, repeats)]
    notes = []
    try:
        import minisom
    except ImportError:
        notes.append("MiniSom is not installed, so its rows are skipped: pip install minisom")
        return rows, notes
    from hydra.utils import instantiate

    data = instantiate(cfg.data)
    data.setup(torch.device("cpu"))
    x = torch.cat([b[0].flatten(1) for b in data.eval_batches("train")]).double().numpy()
    topology = cfg.model.topology
    for sigma in script.MINISOM_SIGMAS:
        row = script.minisom_row(minisom, x, sigma, topology, repeats)
        row["speedup"] = row["train_s"] / rows[0]["train_s"]
        rows.append(row)
    return rows, notes
