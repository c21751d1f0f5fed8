"""`nnlab-bench`: how much nnlab's engine costs per training step, against the limit.

The same model, data, batch size, seed and number of steps go through several implementations
in one process (`nnlab.bench.loops`): nnlab's engine as `nnlab-train` builds it, a hand-written
PyTorch loop over pre-built in-memory batches (the limit), a tutorial `DataLoader` loop,
PyTorch Lightning, and scikit-learn / MiniSom where they apply. The cases live in
`nnlab.bench.cases`; the command, its table and its JSON in `nnlab.bench.main`.
"""
