"""Benchmark nnlab's engine against a raw PyTorch loop, a DataLoader loop, Lightning, scikit-learn
and MiniSom: the `nnlab-bench` command, runnable from a checkout. See docs/benchmarks.md.

    python scripts/bench.py [--cases mlp_digits,cnn_mnist1d] [--epochs N] [--repeats 3] [--out bench.json]
"""

from nnlab.bench.main import cli

if __name__ == "__main__":
    cli()
