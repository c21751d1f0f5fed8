"""One run and its folder: the pipeline of a training run, a run rebuilt from its checkpoint, the
folder's lock, log and records, and a sweep's folder read back."""
