"""Environments for reinforcement learning: Gymnasium's, as a run's data (`env` config group)."""
