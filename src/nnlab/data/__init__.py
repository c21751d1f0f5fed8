"""Datasets and their splits. A dataset function returns an `ArrayDataset`; a `DataModule` splits,
standardizes and batches it."""
