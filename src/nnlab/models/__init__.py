"""The model zoo: plain `nn.Module`s, one family per file. Each takes `input_shape` and
`num_outputs` (supplied by the dataset at build time) plus flat, typed layer choices."""
