"""nnlab's benchmarks: what the engine costs against the limit, and against other libraries.

They ship with the repository, not with the package (`pip install nnlab` installs none of them,
and nnlab never imports them or the libraries they compare with). Run each as a module from the
root of a checkout, after `pip install -e ".[bench]"` (Lightning and MiniSom for the comparisons):

    python -m benchmarks.bench           # one model through nnlab and the alternatives (docs/benchmarks.md)
    python -m benchmarks.bench_paired    # the engine's cost per epoch, epochs paired with the raw loop's
    python -m benchmarks.bench_fused     # each optimizer with and without its fused update
    python -m benchmarks.bench_som       # nnlab's SOM against MiniSom
    python -m benchmarks.bench_health    # what the training-health monitor costs
    python -m benchmarks.bench_sweep     # parallel sweep trials, and what a trial costs to start
    python -m benchmarks.time_main_job   # the README's main job, wall time and launch -> first step
    python -m benchmarks.startup_imports # what the main job imports beyond the plain-PyTorch floor
    python -m benchmarks.defaults_before_after --before REV   # start-up and epoch pairs of two revisions
    python -m benchmarks.rl_vs_sb3       # PPO and DQN on CartPole against Stable-Baselines3
    python -m benchmarks.ddp_scaling     # 1, 2, ... gloo processes, and what the all-reduce costs
    python -m benchmarks.shap_agreement  # nnlab's Kernel SHAP against the shap library's KernelExplainer

`python -m benchmarks.bench` trains the same model, data, batch size, seed and number of steps
through several implementations in one process (`benchmarks.loops`): nnlab's engine as
`nnlab-train` builds it, a hand-written PyTorch loop over pre-built in-memory batches (the
limit), a tutorial `DataLoader` loop, PyTorch Lightning (`benchmarks.lightning_loop`), and
scikit-learn / MiniSom (`benchmarks.bench_som`) where they apply. The cases live in
`benchmarks.cases`; the command, its table and its JSON in `benchmarks.bench`. The benchmarks that
write into the docs record the machine and write their tables with `benchmarks.provenance`.
"""
