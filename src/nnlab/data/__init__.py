"""Datasets and their splits. A dataset function returns an `ArrayDataset`; a `DataModule` splits,
scales and batches it, with the run's row edits (`nnlab.data.edits`) applied in the order listed."""
