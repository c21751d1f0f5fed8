"""The benchmark cases: which `nnlab-train` config each one runs, and through what.

A case is a list of `nnlab-train` overrides, so every implementation trains exactly the model,
data, optimizer and schedule that `nnlab-train <overrides>` would; `compose` turns it into that
config. The config folders stay the one catalogue of names: a case names config choices only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

import nnlab.configs
from nnlab.commands.train import compose_run

CONFIG_DIR = Path(nnlab.configs.__file__).parent


@dataclass(frozen=True)
class Case:
    """One benchmark setting.

    Attributes:
        name: what `--cases` selects.
        overrides: the `nnlab-train` overrides of the run (an experiment, or model= data=).
        epochs: default number of epochs (`--epochs` replaces it): small enough that the whole
            default invocation stays under about 3 minutes on a 2-core CPU.
        implementations: the loops it runs (names in `benchmarks.bench.loops()`, or "som").
        needs_cuda: skipped with a note on a machine without CUDA.
        description: one line for the table's title.
    """

    name: str
    overrides: tuple[str, ...]
    epochs: int
    implementations: tuple[str, ...]
    needs_cuda: bool = False
    description: str = ""

    def missing_configs(self) -> list[str]:
        """The `group=choice` overrides whose YAML file does not exist (yet) in the config folders."""
        missing = []
        for override in self.overrides:
            group, _, choice = override.partition("=")
            if "." not in group and not (CONFIG_DIR / group / f"{choice}.yaml").is_file():
                missing.append(override)
        return missing


TORCH_LOOPS = ("nnlab", "nnlab_lean", "raw", "raw_pytorch_update", "dataloader", "lightning")

CASES: dict[str, Case] = {
    case.name: case
    for case in (
        Case(
            "mlp_digits",
            ("experiment=digits_mlp",),
            30,
            (*TORCH_LOOPS, "sklearn"),
            description="the default experiment: MLP [256, 128] (batch norm, dropout 0.2) on digits, batch 64, Adam",
        ),
        Case(
            "cnn_mnist1d",
            ("experiment=mnist1d_cnn",),
            5,
            TORCH_LOOPS,
            description="experiment=mnist1d_cnn: 1-D CNN [32, 64, 128] on MNIST-1D, batch 64, Adam + cosine",
        ),
        Case(
            "lstm_mnist1d",
            ("model=lstm", "data=mnist1d"),
            3,
            TORCH_LOOPS,
            description="model=lstm data=mnist1d: LSTM (128 hidden, 40 steps) on MNIST-1D, batch 64, Adam",
        ),
        Case(
            "transformer_mnist1d",
            # Clipping off: the raw loop does not clip, and both must do the same work.
            ("experiment=mnist1d_transformer", "trainer.gradient_clip_val=null"),
            3,
            TORCH_LOOPS,
            description="experiment=mnist1d_transformer: Transformer encoder (3 blocks of 64, 10 patches + [CLS]) on "
            "MNIST-1D, batch 64, AdamW + warm-up cosine, no clipping",
        ),
        Case(
            "som_digits",
            ("experiment=digits_som",),
            30,
            ("som",),
            description="experiment=digits_som: 10x10 batch SOM on digits against MiniSom (benchmarks/bench_som.py)",
        ),
        Case(
            "gpu_resnet",
            ("model=resnet", "data=fake_cifar"),
            2,
            ("nnlab", "raw", "raw_pytorch_update"),
            needs_cuda=True,
            description="model=resnet data=fake_cifar: ResNet-style CNN on synthetic 3x32x32 images (CUDA only)",
        ),
    )
}


def compose(overrides: Sequence[str], run_dir: str | Path) -> DictConfig:
    """The config `nnlab-train <overrides>` would run, with `run_dir` as its run folder."""
    return compose_run(overrides, run_dir)
