# The Hydra config tree, shipped inside the package so that `pkg://nnlab.configs` finds it in
# editable and wheel installs alike. `configs/` at the repository root links here.
