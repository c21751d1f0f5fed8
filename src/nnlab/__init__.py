"""nnlab: a PyTorch experiment framework.

Hydra YAML configs compose a model, a dataset, an optimizer and a task into one training
engine (`nnlab.engine.trainer.Trainer`) that logs to TensorBoard and runs on CPU or CUDA.
Start at `nnlab.commands.train`, the entry point behind the `nnlab-train` command, and `nnlab.runs.pipeline`,
the run it starts.
"""

# The one place the version is written: pyproject.toml reads it from here. (Asking the installed
# metadata instead means importing importlib.metadata, which slows every command's start-up.)
__version__ = "0.1.0"
