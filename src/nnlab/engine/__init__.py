"""The training engine: an explicit epoch/step loop (`trainer.py`) that calls a task for what a
step means, plus checkpointing, callbacks, precision and TensorBoard logging."""
