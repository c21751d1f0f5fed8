"""nnlab's PPO and DQN against Stable-Baselines3's on CartPole-v1, with the RL Zoo's tuned settings.

    python benchmarks/rl_vs_sb3.py --write      # 3 seeds; the table into docs/benchmarks.md
    python benchmarks/rl_vs_sb3.py --quick      # a smoke run: 2,048 steps of each, seed 0, nothing written
    python benchmarks/rl_vs_sb3.py --from-json benchmarks/rl_vs_sb3.json --write   # saved results' table

For each algorithm and seed, in one process, both libraries train on CPU for the Zoo's number of
environment steps (PPO 100,000, DQN 50,000): Stable-Baselines3 with the Zoo's hyperparameters
(hyperparams/ppo.yml and dqn.yml, CartPole-v1), nnlab with `experiment=cartpole_ppo` /
`cartpole_dqn` (the same values) as one epoch of that many steps, early stopping off. The two
take turns (which goes first alternates by seed), so a drift of the machine's speed hits both.

Measured per run:
  steps to 475  the first environment step, checked after every batch of 256 steps, at which the
                mean return of the last 20 completed training episodes reaches 475 (CartPole's
                solved threshold). SB3: its Monitor's episodes, recorded in a callback; nnlab:
                `rollout/return_mean` in the run's TensorBoard events (trainer.log_every_n_steps=1).
  final return  the final policy's mean return over 20 deterministic episodes (SB3's
                `evaluate_policy`; nnlab's test split with trainer.test_ckpt=last).
  time          seconds of building the environments, networks and optimizer plus training
                (SB3: `make_vec_env`, the constructor, `learn`; nnlab: `build(cfg)`, `trainer.fit`,
                with nnlab-train's defaults: TensorBoard, checkpoint, health monitor, log lines).
                Imports, config composition and the final evaluation are outside the clock, and
                an untimed warm-up run of each library and algorithm comes first. Torch's default
                number of threads unless --threads (the table's header says how many).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections import deque
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]  # the checkout: docs/ and the benchmarks package
if str(ROOT) not in sys.path:  # run as `python benchmarks/rl_vs_sb3.py`, not only with -m
    sys.path.insert(0, str(ROOT))

from benchmarks.provenance import environment, write_between  # noqa: E402  (after the path)

DOC = ROOT / "docs" / "benchmarks.md"
RESULTS = ROOT / "benchmarks" / "rl_vs_sb3.json"
START, END = "<!-- rl-vs-sb3:start -->", "<!-- rl-vs-sb3:end -->"
SOLVED = 475.0  # CartPole-v1's reward threshold
WINDOW = 20  # completed training episodes the mean is taken over (nnlab's RECENT_EPISODES)
BATCH = 256  # environment steps per batch in both algorithms: the criterion's resolution
TIMESTEPS = {"ppo": 100_000, "dqn": 50_000}  # the Zoo's n_timesteps
QUICK_TIMESTEPS = 2_048  # --quick: 8 batches (DQN learns from the 4th, after learning_starts=1000)
WARMUP_TIMESTEPS = 1_280  # an untimed run of each first: 5 batches, so DQN's updates run too


def linear(start: float) -> Any:
    """The Zoo's `lin_<start>` schedule: start x progress remaining (1 -> 0 over the run)."""
    return lambda progress_remaining: progress_remaining * start


def sb3_run(algo: str, seed: int, timesteps: int) -> dict[str, Any]:
    """Train Stable-Baselines3's PPO or DQN with the Zoo's CartPole-v1 settings; evaluate the final policy."""
    from stable_baselines3 import DQN, PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.evaluation import evaluate_policy

    episodes: list[tuple[int, float]] = []  # (environment steps when it ended, its return)

    def record(locals_: dict[str, Any], globals_: dict[str, Any]) -> bool:
        # Called after every vector step; make_vec_env's Monitor puts an ended episode in its info.
        for info in locals_["infos"]:
            if "episode" in info:
                episodes.append((locals_["self"].num_timesteps, float(info["episode"]["r"])))
        return True

    start = time.perf_counter()
    if algo == "ppo":
        env = make_vec_env("CartPole-v1", n_envs=8, seed=seed)
        # Zoo: n_steps 32, batch 256, gae_lambda 0.8, gamma 0.98, 20 epochs, ent_coef 0, lin_0.001, lin_0.2.
        # SB3's defaults give the rest: [64, 64] tanh, separate pi/vf, ortho init, Adam eps 1e-5, max_grad_norm 0.5.
        model = PPO(
            "MlpPolicy", env, n_steps=32, batch_size=256, gae_lambda=0.8, gamma=0.98, n_epochs=20, ent_coef=0.0,
            learning_rate=linear(1e-3), clip_range=linear(0.2), seed=seed, device="cpu", verbose=0,
        )  # fmt: skip
    else:
        env = make_vec_env("CartPole-v1", n_envs=1, seed=seed)
        # Zoo: lr 2.3e-3, batch 64, buffer 100k, learning_starts 1000, gamma 0.99, target every 10 steps,
        # 128 updates every 256 steps, epsilon to 0.04 over 16%, [256, 256] (ReLU, max_grad_norm 10: SB3's defaults).
        model = DQN(
            "MlpPolicy", env, learning_rate=2.3e-3, batch_size=64, buffer_size=100_000, learning_starts=1000,
            gamma=0.99, target_update_interval=10, train_freq=256, gradient_steps=128, exploration_fraction=0.16,
            exploration_final_eps=0.04, policy_kwargs={"net_arch": [256, 256]}, seed=seed, device="cpu", verbose=0,
        )  # fmt: skip
    built = time.perf_counter()
    model.learn(total_timesteps=timesteps, callback=record)
    seconds = time.perf_counter() - start
    # The same resolution as nnlab's log: the window's mean after each batch of 256 steps.
    curve, recent, i = [], deque(maxlen=WINDOW), 0
    for step in range(BATCH, model.num_timesteps + 1, BATCH):
        while i < len(episodes) and episodes[i][0] <= step:
            recent.append(episodes[i][1])
            i += 1
        if recent:
            curve.append((step, statistics.fmean(recent)))
    eval_env = make_vec_env("CartPole-v1", n_envs=1, seed=seed + 10_000)  # other starts than training's
    returns, _ = evaluate_policy(model, eval_env, n_eval_episodes=20, deterministic=True, return_episode_rewards=True)
    env.close()
    eval_env.close()
    return outcome(curve, statistics.fmean(returns), seconds, built - start, model.num_timesteps)


def nnlab_run(algo: str, seed: int, timesteps: int, folder: Path) -> dict[str, Any]:
    """`nnlab-train experiment=cartpole_<algo>` in this process, as one epoch of `timesteps` steps."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from benchmarks.loops import nnlab_train_logging
    from nnlab.checks.validation import validate_config
    from nnlab.commands.train import compose_run
    from nnlab.engine.rng import seed_everything
    from nnlab.runs.build import build

    overrides = [
        f"experiment=cartpole_{algo}",
        f"seed={seed}",
        "trainer.device=cpu",
        # One epoch holding the whole run: the same steps and schedules as SB3 (lr, clip range and epsilon
        # anneal over the run), and nnlab's per-epoch validation (10 deterministic episodes) only once, at the end.
        f"env.epoch_steps={timesteps}",
        "trainer.max_epochs=1",
        "callbacks.early_stopping.stopping_threshold=null",
        "trainer.log_every_n_steps=1",  # rollout/return_mean after every batch of 256 steps
        "trainer.test_ckpt=last",  # test the final policy, as SB3's evaluation does
        "task.gif_frames=0",  # no rendered test episode (pygame), which SB3 does not make either
    ]
    cfg = compose_run(overrides, folder)
    validate_config(cfg)
    folder.mkdir(parents=True, exist_ok=True)
    with nnlab_train_logging(folder):
        seed_everything(cfg.seed)
        start = time.perf_counter()
        parts = build(cfg)
        built = time.perf_counter()
        parts.trainer.fit(parts.task, parts.data)
        seconds = time.perf_counter() - start
        test = parts.trainer.test(parts.task, parts.data)
        parts.logger.close()  # every event on disk before it is read
        parts.data.close()
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0})  # 0: keep every value
    events.Reload()
    curve = [(e.step, e.value) for e in events.Scalars("rollout/return_mean")]
    return outcome(curve, test["test/return_mean"], seconds, built - start, parts.data.total_steps)


def outcome(curve: list[tuple[int, float]], final: float, seconds: float, build_s: float, steps: int) -> dict:
    """One run's record: the criterion read off its curve, and the raw values behind it."""
    reached = next((step for step, mean in curve if mean >= SOLVED), None)
    return {
        "steps_to_475": reached,
        "final_return": float(final),
        "seconds": seconds,
        "build_seconds": build_s,
        "env_steps": int(steps),
        "curve": [[int(s), float(m)] for s, m in curve],
    }


def median(values: list[float | None]) -> float | None:
    """The median, None (the threshold never reached) counting as larger than any number: with
    an even count, a middle pair holding a None gives None (the median is not reached)."""
    ordered = sorted(values, key=lambda v: float("inf") if v is None else v)
    low, high = ordered[(len(ordered) - 1) // 2], ordered[len(ordered) // 2]
    return None if low is None or high is None else (low + high) / 2


def show(value: float | None, fmt: str) -> str:
    return "not reached" if value is None else format(value, fmt)


def cell(values: list[float | None], fmt: str) -> str:
    """'**median** (seed 0, seed 1, ...)', or the one value of a single seed."""
    if len(values) == 1:
        return show(values[0], fmt)
    return f"**{show(median(values), fmt)}** ({', '.join(show(v, fmt) for v in values)})"


def markdown(results: dict[str, Any]) -> str:
    env, v = results["environment"], results["environment"]["versions"]
    lines = [
        f"Measured with `{results['command']}` on {results['date']}: seeds {', '.join(map(str, results['seeds']))}; "
        "each cell is the median over seeds, then each seed's value.",
        "",
        f"Machine: {env['cpu']}, {env['cpu_count']} cores, torch threads {env['torch_threads']} "
        f"({'--threads' if results['threads_set'] else 'torch default'}, both libraries), device cpu; "
        f"load average at the end {', '.join(f'{x:.2f}' for x in env['load_average'])}.",
        f"Versions: Python {v['python']}, torch {v['torch']}, gymnasium {v['gymnasium']}, stable-baselines3 "
        f"{v['stable-baselines3']}, nnlab {v['nnlab']}.",
        "",
        "| algorithm | library | env steps to a mean return of 475 (last 20 training episodes) "
        "| final return (20 deterministic episodes) | time: build + train, s |",
        "|---|---|---:|---:|---:|",
    ]
    for algo in results["algorithms"]:
        for library in ("Stable-Baselines3", "nnlab"):
            runs = [r for r in results["runs"] if r["algorithm"] == algo and r["library"] == library]
            steps = [r["steps_to_475"] for r in runs]
            lines.append(
                f"| {algo.upper()}, {runs[0]['env_steps']:,} steps | {library} | {cell(steps, ',.0f')} "
                f"| {cell([r['final_return'] for r in runs], '.1f')} | {cell([r['seconds'] for r in runs], '.1f')} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/rl_vs_sb3.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", help="seeds (default: 0 1 2; --quick: 0)")
    parser.add_argument("--algorithms", nargs="+", choices=list(TIMESTEPS), default=list(TIMESTEPS))
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_TIMESTEPS:,} steps of each: does it run?")
    parser.add_argument("--write", action="store_true", help=f"put the table between the markers of {DOC.name}")
    parser.add_argument("--out", type=Path, help=f"raw results as JSON (default: {RESULTS.name} without --quick)")
    parser.add_argument("--workdir", type=Path, help="keep nnlab's run folders here (default: a temporary folder)")
    parser.add_argument("--threads", type=int, help="torch CPU threads for both (default: torch's own)")
    parser.add_argument("--from-json", type=Path, help="make the table of saved results (no runs)")
    args = parser.parse_args(argv)
    if args.quick and args.write:
        parser.error("--write puts measured figures into the docs; a --quick run is only a smoke test")
    if args.from_json:
        table = markdown(json.loads(args.from_json.read_text(encoding="utf-8")))
        print(table)
        if args.write:
            write_between(DOC, START, END, table)
        return 0
    seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    work = args.workdir or Path(tempfile.mkdtemp(prefix="rl_vs_sb3_"))
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    # Warm-up, untimed: the first run in a process pays one-off costs (lazy imports such as
    # torch._dynamo, which the first optimizer's constructor loads, ~1-2 s); whichever library ran
    # first would be charged for them.
    for algo in args.algorithms:
        sb3_run(algo, 0, WARMUP_TIMESTEPS)
        nnlab_run(algo, 0, WARMUP_TIMESTEPS, work / f"warmup_{algo}")
    results: dict[str, Any] = {
        "command": "python benchmarks/rl_vs_sb3.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d"),
        "seeds": seeds,
        "algorithms": args.algorithms,
        "threads_set": bool(args.threads),
        "runs": [],
    }
    for i, seed in enumerate(seeds):
        for algo in args.algorithms:
            steps = QUICK_TIMESTEPS if args.quick else TIMESTEPS[algo]
            # Turns: SB3 first for even seeds, nnlab first for odd ones.
            order = ("Stable-Baselines3", "nnlab") if i % 2 == 0 else ("nnlab", "Stable-Baselines3")
            for library in order:
                if library == "nnlab":
                    run = nnlab_run(algo, seed, steps, work / f"{algo}_seed{seed}")
                else:
                    run = sb3_run(algo, seed, steps)
                results["runs"].append({"library": library, "algorithm": algo, "seed": seed, **run})
                print(
                    f"{algo} seed {seed} {library}: steps to 475 {run['steps_to_475']}, final return "
                    f"{run['final_return']:.1f}, {run['seconds']:.1f} s",
                    file=sys.stderr,
                    flush=True,
                )
    results["environment"] = environment(("nnlab", "torch", "gymnasium", "stable-baselines3", "numpy"))
    table = markdown(results)
    print(table)
    out = args.out or (None if args.quick else RESULTS)
    if out is not None:
        out.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
        print(f"\nRaw results: {out}", file=sys.stderr)
    if args.write:
        write_between(DOC, START, END, table)
        print(f"Table written into {DOC}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
