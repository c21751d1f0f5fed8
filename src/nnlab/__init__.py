"""nnlab: a PyTorch experiment framework.

Hydra YAML configs compose a model, a dataset, an optimizer and a task into one training
engine (`nnlab.engine.Trainer`) that logs to TensorBoard and runs on CPU or CUDA.
Start at `nnlab.train`, the entry point behind the `nnlab-train` command, and `nnlab.pipeline`,
the run it starts.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("nnlab")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
