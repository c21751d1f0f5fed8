"""Reinforcement-learning tasks: REINFORCE, DQN and PPO, acting in an `env`."""
