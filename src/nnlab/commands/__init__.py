"""The commands a user types (`nnlab-train`, `nnlab-eval`, ...), one thin module each: Hydra composes
the config, the module calls into `nnlab.runs`, the engine and the analysis code, and returns."""
