"""Proximal policy optimization: several epochs of clipped updates on each rollout."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nnlab.engine.optim import UpdateRules
from nnlab.engine.precision import Precision
from nnlab.envs.environment import Environment
from nnlab.errors import ConfigValueError, check_range
from nnlab.models.actor_critic import ActorCritic
from nnlab.tasks.rl.episodes import EpisodeTask
from nnlab.tasks.rl.rollout import check_policy_network, collect, gae


class PPO(EpisodeTask):
    """PPO (Schulman et al. 2017) with GAE, a clipped surrogate, a value loss and an entropy
    bonus; categorical actions, or a diagonal Gaussian for continuous ones.

    Each training batch collects `n_steps` steps of every environment with the current policy,
    then makes `n_epochs` passes over them in shuffled minibatches of `batch_size`. The
    clipping keeps each update close to the policy that collected the data, which is what
    lets PPO reuse a rollout many times where REINFORCE uses it once.

    Args:
        model: the policy network (the model zoo's, sized from the environment's spaces).
        critic: the value network, of the same architecture with one output.
        optimizer, scheduler: factories (Hydra partials); one optimizer trains both networks.
        env: the `nnlab.envs.environment.Environment` (env config group).
        n_steps: steps per environment in each rollout; a batch is n_steps x env.num_envs.
        batch_size: minibatch size of the updates.
        n_epochs: passes over each rollout.
        gamma: discount factor.
        gae_lambda: GAE's lambda: 1 = Monte Carlo returns (high variance), 0 = one-step TD
            (high bias); 0.8-0.95 is usual.
        clip_range: epsilon of the clipped ratio, e.g. 0.2.
        ent_coef: weight of the entropy bonus (more exploration); 0 for CartPole.
        vf_coef: weight of the value loss.
        normalize_advantage: standardize each minibatch's advantages.
        target_kl: stop a rollout's epochs once the approximate KL to the acting policy passes
            1.5 x this (null: never).
        anneal: decay the learning rate and the clip range linearly to 0 over the run (the RL
            Zoo's `lin_` schedules).
        log_std_init: the Gaussian's starting log standard deviation (continuous actions).
        ortho_init: orthogonal initialization of both networks (`ActorCritic`).
        gif_frames: frames of the test episode's GIF (0: none).
    """

    def __init__(
        self,
        model: nn.Module,
        critic: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        env: Environment,
        scheduler: Callable[..., Any] | None = None,
        n_steps: int = 32,
        batch_size: int = 256,
        n_epochs: int = 20,
        gamma: float = 0.98,
        gae_lambda: float = 0.8,
        clip_range: float = 0.2,
        ent_coef: float = 0.0,
        vf_coef: float = 0.5,
        normalize_advantage: bool = True,
        target_kl: float | None = None,
        anneal: bool = True,
        log_std_init: float = 0.0,
        ortho_init: bool = True,
        gif_frames: int = 100,
    ) -> None:
        check_range("task.n_steps", n_steps, 1)
        check_range("task.batch_size", batch_size, 1)
        check_range("task.n_epochs", n_epochs, 1)
        check_range("task.gamma", gamma, 0.0, 1.0)
        check_range("task.gae_lambda", gae_lambda, 0.0, 1.0)
        check_range("task.clip_range", clip_range, 0.0, low_inclusive=False)
        check_range("task.ent_coef", ent_coef, 0.0)
        check_range("task.vf_coef", vf_coef, 0.0)
        if target_kl is not None:
            check_range("task.target_kl", target_kl, 0.0, low_inclusive=False)
        check_policy_network(model, "ppo")
        self.setup_episodes(env, optimizer, scheduler, gif_frames)
        self.model = ActorCritic(model, critic, env.continuous, env.num_actions, log_std_init, ortho_init)
        if anneal and scheduler is not None:
            raise ConfigValueError(
                "task.anneal=true sets the learning rate itself (linearly to 0 over the run), so a scheduler would "
                "fight it. Use scheduler=none, or task.anneal=false to let the scheduler set it."
            )
        env.plan(n_steps)
        self.updates_per_batch = n_epochs * -(-(n_steps * env.num_envs) // batch_size)
        self.n_steps, self.batch_size, self.n_epochs = n_steps, batch_size, n_epochs
        self.gamma, self.gae_lambda, self.clip_range = gamma, gae_lambda, clip_range
        self.ent_coef, self.vf_coef = ent_coef, vf_coef
        self.normalize_advantage, self.target_kl, self.anneal = normalize_advantage, target_kl, anneal
        self.updates = 0  # rollouts learned from

    def configure(
        self, device: torch.device, precision: Precision, total_steps: int, rules: UpdateRules | None = None
    ) -> None:
        if rules is not None and rules.accumulate_grad_batches > 1:
            raise ConfigValueError(
                f"trainer.accumulate_grad_batches={rules.accumulate_grad_batches}: task=ppo makes its own minibatch "
                "updates over each rollout; set task.batch_size (and task.n_steps) for larger updates instead."
            )
        super().configure(device, precision, total_steps, rules)
        self.base_lrs = [group["lr"] for group in self.optim.optimizer.param_groups]

    def training_step(self, batch: Any, update: bool = True) -> dict[str, torch.Tensor]:
        rollout = collect(self.model, self.env, self.n_steps, self.gamma, self.device, self.precision)
        advantages, returns = gae(rollout, self.gamma, self.gae_lambda)
        obs, actions, old_log_probs, old_values, advantages, returns = rollout.flat(
            rollout.obs, rollout.actions, rollout.log_probs, rollout.values, advantages, returns
        )
        self.updates += 1
        remaining = max(1.0 - self.updates / self.total_batches, 0.0) if self.anneal else 1.0
        if self.anneal:
            for group, lr in zip(self.optim.optimizer.param_groups, self.base_lrs):
                group["lr"] = lr * remaining
        clip = self.clip_range * remaining if self.anneal else self.clip_range
        n = obs.shape[0]
        sums = torch.zeros(5, device=self.device)  # policy_loss, value_loss, entropy, approx_kl, clip_fraction
        count = 0
        for idx in self.minibatches(n):
            with self.precision.autocast():
                dist = self.model.distribution(obs[idx])
                values = self.model.value(obs[idx]).float()
            log_probs = dist.log_prob(actions[idx])
            adv = advantages[idx]
            if self.normalize_advantage and len(idx) > 1:
                adv = (adv - adv.mean()) / (adv.std() + 1e-8)
            log_ratio = log_probs - old_log_probs[idx]
            ratio = log_ratio.exp()
            # The clipped surrogate objective: maximise E[min(r A, clip(r, 1 - eps, 1 + eps) A)],
            # r = pi(a|s) / pi_old(a|s). The min takes the pessimistic bound, so moving r outside
            # [1 - eps, 1 + eps] gains nothing and the update stays near the acting policy.
            surrogate = torch.min(ratio * adv, ratio.clamp(1 - clip, 1 + clip) * adv)
            policy_loss = -surrogate.mean()
            # The value function regresses the GAE returns; the entropy bonus keeps the policy
            # from collapsing onto one action before it has seen enough.
            value_loss = F.mse_loss(values, returns[idx])
            entropy = dist.entropy().mean()
            loss = policy_loss + self.vf_coef * value_loss - self.ent_coef * entropy
            with torch.no_grad():
                approx_kl = ((ratio - 1) - log_ratio).mean()  # Schulman's low-variance KL estimate
                clipped = ((ratio - 1).abs() > clip).float().mean()
            if self.target_kl is not None and approx_kl.item() > 1.5 * self.target_kl:
                break  # (the remaining epochs too)
            self.optim.step(loss)
            sums += torch.stack([policy_loss.detach(), value_loss.detach(), entropy.detach(), approx_kl, clipped])
            count += 1
        means = sums / max(count, 1)
        explained = 1 - (returns - old_values).var() / returns.var().clamp_min(1e-8)
        names = ("policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction")
        metrics = dict(zip(names, means.unbind()))
        metrics["explained_variance"] = explained
        metrics["clip_range"] = torch.tensor(clip)
        return metrics

    def minibatches(self, n: int) -> Iterator[torch.Tensor]:
        """Indices of each minibatch, `n_epochs` passes over the rollout's `n` transitions, each
        pass in a new random order."""
        for _ in range(self.n_epochs):
            order = torch.randperm(n, device=self.device)
            for start in range(0, n, self.batch_size):
                yield order[start : start + self.batch_size]

    def algorithm_state(self) -> dict[str, Any]:
        return {"updates": self.updates}

    def load_algorithm_state(self, state: dict[str, Any]) -> None:
        self.updates = int(state["updates"])
