"""Tasks: what one training step means for a family of models (see `nnlab.engine.task.Task`)."""
