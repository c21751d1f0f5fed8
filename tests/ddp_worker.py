"""Started by torchrun from tests/engine/test_ddp.py: one rank of a data-parallel fit that saves the
weights it ends with (the run itself writes only rank 0's), so the test can compare ranks.

    python -m torch.distributed.run --nproc_per_node=2 tests/ddp_worker.py OUT_DIR RUN_DIR OVERRIDE...
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))  # tests/helpers.py

from helpers import compose_config  # noqa: E402
from nnlab.engine import distributed  # noqa: E402
from nnlab.engine.rng import seed_everything  # noqa: E402
from nnlab.runs.build import build  # noqa: E402
from nnlab.runs.pipeline import join_process_group  # noqa: E402


def main(out_dir: str, run_dir: str, overrides: list[str]) -> None:
    cfg = compose_config(overrides, run_dir)
    join_process_group(cfg)
    seed_everything(cfg.seed)
    parts = build(cfg)
    parts.trainer.fit(parts.task, parts.data)
    rank = distributed.current().rank
    torch.save(parts.model.state_dict(), Path(out_dir) / f"rank{rank}.pt")
    distributed.shutdown()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
