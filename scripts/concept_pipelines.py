"""The concept lab's comparisons that take more than one command (docs/concepts.md, concepts 20-30):
a training run or sweep, then a tool on what it trained, run as a user would type them, timed,
and gathered into one table.

    python scripts/concept_pipelines.py adversarial               # one pipeline
    python scripts/concept_pipelines.py --all                     # every pipeline, one after another
    python scripts/concept_pipelines.py ensembles -- trainer.max_epochs=2   # extra overrides for every training command

    adversarial        nnlab-train -m experiment=adversarial, then nnlab-attack on each trial
    transfer_learning  nnlab-train experiment=digits04_pretrain, then
                       nnlab-train -m experiment=transfer_learning pretrained_ckpt=<its best.ckpt>
    ensembles          nnlab-train -m experiment=ensembles (the single models), then
                       nnlab-ensemble experiment=ensembles with ensemble.vary=seed and =bootstrap
    edge_deployment    nnlab-train -m experiment=edge_deployment, then nnlab-export on each trial
    ssl_pretraining    nnlab-train experiment=digits_ssl_pretrain trainer.max_epochs=100, then
                       nnlab-train -m experiment=ssl_pretraining pretrained_ckpt=<its best.ckpt>
    attention          nnlab-train -m experiment=attention, then nnlab-explain on each trial (its
                       attention maps) and the share of [CLS]'s attention on the marked steps
    reinforcement_learning
                       nnlab-train -m experiment=reinforcement_learning (REINFORCE, DQN and PPO on
                       CartPole, seeds 0-2), then per algorithm the seeds solved, the environment
                       steps each took to solve it (read from its TensorBoard curves) and a figure
                       of the validation return against environment steps

Every command runs in a subprocess (`python -m nnlab.<tool>`, what the `nnlab-<tool>` script
runs) started in outputs/concept_pipelines/<name>/<date>_<time>/, with paths relative to it
(sweep/, pretrain/, attack_<n>/, ...) and its output in a log file there. A trial's checkpoint is
sweep/<n>/checkpoints/best.ckpt. Then `nnlab-report` on the sweep, and into
docs/figures/concepts/<name>/: table.md and table.json (the table, each command and its wall
time), timing.json (the whole pipeline, as scripts/concepts.py writes it for one command), the
sweep's report.md, report.png and curves.png, and the tools' figures.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from concepts import cpu_seconds, print_summary, split_argv, timing_record  # scripts/concepts.py, beside this one
from nnlab.runs.curves import Series, read_scalars
from nnlab.runs.sweepfolder import Trial, find_trials

ROOT = Path(__file__).resolve().parents[1]
TOOLS = {"nnlab-" + t: "nnlab.commands." + t for t in ("train", "attack", "export", "ensemble", "report", "explain")}
TRAINING = ("nnlab-train", "nnlab-ensemble")  # the commands the extra overrides go to
EXPORTED = ("pytorch", "torchscript", "onnx", "onnx_int8", "pytorch_int8")  # nnlab-export's rows, in order
KEPT = ("report.md", "report.png", "curves.png")  # nnlab-report's files, as scripts/concepts.py keeps them


class PipelineFailed(RuntimeError):
    """A command of the pipeline exited non-zero."""


@dataclass
class Runner:
    """Runs nnlab commands one after another, each logged to a file in `out`, and keeps their wall
    times and the figures worth copying to the docs."""

    out: Path
    extra: list[str] = field(default_factory=list)  # appended to every training command
    steps: list[dict[str, Any]] = field(default_factory=list)
    figures: dict[str, Path] = field(default_factory=dict)  # name in the docs -> file

    def __call__(self, tool: str, *args: str) -> None:
        # Run in `out`, with the paths in it relative: the commands, the trials' recorded overrides and
        # nnlab-report's legends read `sweep/0/checkpoints/best.ckpt`, not a long absolute path.
        args = tuple(a.replace(f"{self.out}/", "") for a in ((*args, *self.extra) if tool in TRAINING else args))
        shown = shlex.join([tool, *args])
        log = self.out / f"{len(self.steps):02d}_{tool}.log"
        print(f"  $ {shown}", flush=True)
        start = time.perf_counter()
        cmd = [sys.executable, "-m", TOOLS[tool], *args]  # what the nnlab-<tool> script runs
        with log.open("w") as f:
            done = subprocess.run(cmd, cwd=self.out, stdout=f, stderr=subprocess.STDOUT)
        wall = time.perf_counter() - start
        self.steps.append({"command": shown, "wall_s": round(wall, 1), "returncode": done.returncode})
        print(f"    {wall:.1f} s", flush=True)
        if done.returncode:
            tail = "".join(log.read_text().splitlines(keepends=True)[-15:])
            raise PipelineFailed(f"{shown} exited with {done.returncode}; its log, {log}, ends:\n{tail}")


def shorten(path: str) -> str:
    """`path` relative to the repository when it is inside it, for what the script prints."""
    return path.replace(f"{ROOT}/", "")


def read_metrics(folder: Path) -> dict[str, float]:
    return json.loads((folder / "metrics.json").read_text())


def best_ckpt(trial: Trial) -> str:
    return str(trial.dir / "checkpoints" / "best.ckpt")


# -- the tables: plain functions of the runs' metrics (tests/concepts/test_concepts_pipelines.py) -------


def robustness_rows(attacks: dict[str, dict[str, float]]) -> list[dict[str, Any]]:
    """One row per eps, a column per (model, method): accuracy under attack. `attacks` maps a
    model's label to the metrics.json of its nnlab-attack (`fgsm/eps_0.1/acc`, ...)."""
    found = [re.fullmatch(r"(\w+)/eps_([\d.e+-]+)/acc", k) for m in attacks.values() for k in m]
    eps_list = sorted({float(f[2]) for f in found if f})
    methods = list(dict.fromkeys(f[1] for f in found if f))
    rows = []
    for eps in eps_list:
        row: dict[str, Any] = {"eps": eps}
        for label, metrics in attacks.items():
            for method in methods:
                row[f"{label}: {method}"] = metrics.get(f"{method}/eps_{eps:g}/acc")
        rows.append(row)
    return rows


def few_label_rows(trials: list[Trial], metric: str = "test/acc") -> list[dict[str, Any]]:
    """One row per label count (the swept data_edit.few_labels.per_class): `metric` from scratch
    (transfer.init_from=null), fine-tuned from the pretrained checkpoint, and the gain in points."""
    by_labels: dict[int, dict[str, float]] = {}
    for t in trials:
        start = "scratch" if t.value("transfer.init_from") in (None, "null") else "fine-tuned"
        by_labels.setdefault(int(t.value("data_edit.few_labels.per_class")), {})[start] = t.metrics[metric]
    rows = []
    for labels, acc in sorted(by_labels.items()):
        gain = 100 * (acc["fine-tuned"] - acc["scratch"]) if len(acc) == 2 else None
        rows.append({"labels per class": labels, **acc, "gain (points)": gain})
    return rows


def lists_bootstrap(trial: Trial) -> bool:
    """Whether the trial's row edits include the bootstrap: the ensembles sweep runs each seed with
    `data_edit=[]` and with `data_edit=[bootstrap]`."""
    edits = (trial.value("data_edit") or "").strip("[]").split(",")
    return "bootstrap" in (e.strip() for e in edits)


def ensemble_rows(singles: list[Trial], ensembles: dict[str, dict[str, float]]) -> list[dict[str, Any]]:
    """One row per way of varying the members: the single models of the sweep (no row edit for
    vary=seed, the bootstrap for vary=bootstrap), their mean and best, and each combination of
    nnlab-ensemble's metrics.json; `same models` checks that it trained the sweep's models."""
    rows = []
    for vary, metrics in ensembles.items():
        accs = [t.metrics["test/acc"] for t in singles if lists_bootstrap(t) == (vary == "bootstrap")]
        members = [v for k, v in sorted(metrics.items()) if re.fullmatch(r"member_\d+/test/acc", k)]
        row: dict[str, Any] = {
            "members vary by": vary,
            "single models": " ".join(f"{a:.3f}" for a in accs),
            "single: mean": sum(accs) / len(accs),
            "single: best": max(accs),
        }
        for method in ("mean", "vote", "stacking"):
            if f"ensemble/{method}/test/acc" in metrics:
                row[f"ensemble: {method}"] = metrics[f"ensemble/{method}/test/acc"]
        row["same models"] = "yes" if [round(a, 6) for a in accs] == [round(m, 6) for m in members] else "no"
        rows.append(row)
    return rows


def export_rows(exports: dict[str, dict[str, float]]) -> list[dict[str, Any]]:
    """One row per (model, artifact) from each nnlab-export's metrics.json (`onnx_int8/size_kb`, ...):
    size, latency per batch size, test score; artifacts in nnlab-export's order (its JSON is sorted)."""
    rows = []
    for model, metrics in exports.items():
        fields: dict[str, dict[str, float]] = {}
        for key, value in metrics.items():
            artifact, _, name = key.partition("/")
            if name in ("size_kb", "test_acc", "test_mse") or name.startswith("latency_b"):
                fields.setdefault(artifact, {})[name] = value
        for artifact in sorted(fields, key=lambda a: EXPORTED.index(a) if a in EXPORTED else len(EXPORTED)):
            # size, then latency by batch size (latency_b1_ms, latency_b64_ms, ...), then the score
            names = sorted(fields[artifact], key=lambda n: (n != "size_kb", n.startswith("test"), batch_size(n)))
            rows.append({"model": model, "artifact": artifact, **{n: fields[artifact][n] for n in names}})
    return rows


def batch_size(name: str) -> int:
    digits = re.sub(r"\D", "", name)
    return int(digits) if digits else 0


def markdown(rows: list[dict[str, Any]]) -> str:
    """A Markdown table; numbers to 4 significant digits, a missing value as '-'."""
    columns = list(dict.fromkeys(k for r in rows for k in r))

    def cell(v: Any) -> str:
        return "-" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


# -- the pipelines: each runs its commands and returns (table rows, the sweep folder) ----------


def adversarial(run: Runner) -> tuple[list[dict[str, Any]], Path]:
    sweep = run.out / "sweep"
    run("nnlab-train", "-m", "experiment=adversarial", f"hydra.sweep.dir={sweep}")
    attacks = {}
    for trial in find_trials(sweep):
        label = f"adversarial={trial.value('task.adversarial')}"
        out = run.out / f"attack_{trial.name}"
        run("nnlab-attack", f"ckpt_path={best_ckpt(trial)}", f"hydra.run.dir={out}")
        attacks[label] = read_metrics(out)
    rows = robustness_rows(attacks)
    run.figures["accuracy_vs_eps.png"] = line_plot(rows, "eps", "test accuracy", run.out / "accuracy_vs_eps.png")
    return rows, sweep


def line_plot(rows: list[dict[str, Any]], x: str, ylabel: str, path: Path) -> Path:
    """Every column of `rows` but `x` as a line against `x` (one figure for all the trials)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for column in [c for c in rows[0] if c != x]:
        ax.plot([r[x] for r in rows], [r[column] for r in rows], marker="o", label=column)
    ax.set(xlabel=x, ylabel=ylabel, ylim=(0, 1.02))
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def few_labels(experiment: str, *pretrain: str) -> Callable[[Runner], tuple[list[dict[str, Any]], Path]]:
    """Pretrain with `nnlab-train <pretrain>`, then the experiment's sweep from its checkpoint."""

    def pipeline(run: Runner) -> tuple[list[dict[str, Any]], Path]:
        pretrained, sweep = run.out / "pretrain", run.out / "sweep"
        run("nnlab-train", *pretrain, f"hydra.run.dir={pretrained}")
        ckpt = pretrained / "checkpoints" / "best.ckpt"
        run("nnlab-train", "-m", f"experiment={experiment}", f"pretrained_ckpt={ckpt}", f"hydra.sweep.dir={sweep}")
        return few_label_rows(find_trials(sweep)), sweep

    return pipeline


def ensembles(run: Runner) -> tuple[list[dict[str, Any]], Path]:
    sweep = run.out / "sweep"
    run("nnlab-train", "-m", "experiment=ensembles", f"hydra.sweep.dir={sweep}")
    combined = {}
    for vary in ("seed", "bootstrap"):
        out = run.out / f"ensemble_{vary}"
        run("nnlab-ensemble", "experiment=ensembles", f"ensemble.vary={vary}", f"hydra.run.dir={out}")
        combined[vary] = read_metrics(out)
        run.figures[f"ensemble_{vary}.png"] = out / "figures" / "ensemble.png"
    return ensemble_rows(find_trials(sweep), combined), sweep


def edge_deployment(run: Runner) -> tuple[list[dict[str, Any]], Path]:
    sweep = run.out / "sweep"
    run("nnlab-train", "-m", "experiment=edge_deployment", f"hydra.sweep.dir={sweep}")
    exports = {}
    for trial in find_trials(sweep):
        out = run.out / f"export_{trial.name}"
        run("nnlab-export", f"ckpt_path={best_ckpt(trial)}", f"hydra.run.dir={out}")
        exports[trial.value("model") or trial.name] = read_metrics(out)
    return export_rows(exports), sweep


def attention(run: Runner) -> tuple[list[dict[str, Any]], Path]:
    sweep = run.out / "sweep"
    run("nnlab-train", "-m", "experiment=attention", f"hydra.sweep.dir={sweep}")
    rows = []
    for trial in find_trials(sweep):
        heads = trial.value("model.num_heads")
        out = run.out / f"explain_{trial.name}"
        run("nnlab-explain", f"ckpt_path={best_ckpt(trial)}", "explain.num_samples=3", f"hydra.run.dir={out}")
        run.figures[f"attention_{heads}_heads.png"] = out / "figures" / "attention.png"
        shares = marked_attention(trial.dir / "checkpoints" / "best.ckpt")
        for (layer, head), share in shares.items():
            rows.append({"heads": int(heads), "layer": layer, "head": head, "share on the 2 marked steps": share})
        rows[-1]["test/mse"] = trial.metrics["test/mse"]
    return rows, sweep


def marked_attention(ckpt: Path) -> dict[tuple[int, int], float]:
    """For an adding-problem Transformer with a [CLS] token: per (layer, head), the mean share of
    the [CLS] query's attention that falls on the two marked steps, over the test split."""
    import torch

    from nnlab.runs.restore import load_run

    r = load_run(ckpt, device="cpu")
    x = torch.cat([xb for xb, _ in r.data.eval_batches("test")])  # (N, 2, T): values, markers
    marked = x[:, 1, :]  # (N, T), two 1s per row
    maps = r.model.attention_maps(x)  # per layer (N, heads, T + 1, T + 1); position 0 is [CLS]
    return {
        (layer + 1, head): float((m[:, head, 0, 1:] * marked).sum(1).mean())
        for layer, m in enumerate(maps)
        for head in range(m.shape[1])
    }


# -- reinforcement learning: how many environment steps each algorithm needs -------------------

# The return at which a CartPole run counts as solved: every validation episode lasts the time
# limit (the cartpole_* experiments' callbacks.early_stopping.stopping_threshold, where they stop).
SOLVED_VAL_RETURN = 500.0


@dataclass
class AgentRun:
    """One trial of the reinforcement-learning sweep, as the table and the figure read it."""

    algorithm: str  # reinforce, dqn, ppo
    seed: int
    val: Series  # (env steps, val/return_mean) at each epoch's validation
    rollout: Series  # (env steps, rollout/return_mean): the recent training episodes
    test_return: float | None  # test/return_mean of best.ckpt (None: the trial failed)
    solved: bool  # test/solved: the test return reached the environment's solved return (475)
    wall_s: float | None

    @property
    def steps_to_solve(self) -> int | None:
        """Environment steps at the first validation that reached SOLVED_VAL_RETURN (where early
        stopping ended the run); None when none did."""
        return next((int(s) for s, r in zip(*self.val) if r >= SOLVED_VAL_RETURN), None)


def against_env_steps(env_steps: Series, values: Series) -> Series:
    """Epoch curves drawn against environment steps: `values` (epoch -> value) at the epochs where
    `env_steps` (epoch -> train/env_steps, the steps taken by then) is known."""
    steps = dict(zip(*env_steps))
    known = [(steps[epoch], v) for epoch, v in zip(*values) if epoch in steps]
    return [int(s) for s, _ in known], [v for _, v in known]


def agent_run(trial: Trial) -> AgentRun:
    """A trial of `experiment=reinforcement_learning` read back: its TensorBoard curves, metrics, wall time."""
    curves = read_scalars(trial.dir, ["train/env_steps", "val/return_mean", "rollout/return_mean"])
    empty: Series = ([], [])
    return AgentRun(
        algorithm=(trial.value("experiment@_global_") or "?").removeprefix("cartpole_"),
        seed=int(trial.value("seed") or 0),
        val=against_env_steps(curves.get("train/env_steps", empty), curves.get("val/return_mean", empty)),
        rollout=curves.get("rollout/return_mean", empty),
        test_return=trial.metrics.get("test/return_mean"),
        solved=trial.metrics.get("test/solved", 0.0) >= 1.0,
        wall_s=trial.wall_s,
    )


def solve_rows(runs: list[AgentRun]) -> list[dict[str, Any]]:
    """One row per algorithm (in the sweep's order) over its seeds: how many the test counts as
    solved, the environment steps to solve (median and range, over the seeds that did), the test
    return (mean and sample standard deviation over the seeds) and the wall time per run."""
    rows = []
    for algorithm in dict.fromkeys(r.algorithm for r in runs):
        mine = [r for r in runs if r.algorithm == algorithm]
        steps = sorted(r.steps_to_solve for r in mine if r.steps_to_solve is not None)
        returns = [r.test_return for r in mine if r.test_return is not None]
        walls = [r.wall_s for r in mine if r.wall_s is not None]
        rows.append(
            {
                "algorithm": algorithm,
                "seeds solved (test >= 475)": f"{sum(r.solved for r in mine)}/{len(mine)}",
                "env steps to solve: median": f"{int(statistics.median(steps)):,}" if steps else None,
                "range": f"{steps[0]:,}-{steps[-1]:,}" if steps else None,
                "test return": mean_std(returns),
                "wall s per run: median": round(statistics.median(walls), 1) if walls else None,
                "range (s)": f"{min(walls):.0f}-{max(walls):.0f}" if walls else None,
            }
        )
    return rows


def mean_std(values: list[float]) -> str | None:
    """'mean ± std' (the sample standard deviation; 0 for a single value); None for no value."""
    if not values:
        return None
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.1f} ± {std:.1f}"


def run_rows(runs: list[AgentRun]) -> list[dict[str, Any]]:
    """One row per trial: what `solve_rows` summarises."""
    return [
        {
            "algorithm": r.algorithm,
            "seed": r.seed,
            "validations": len(r.val[0]),
            "env steps to solve": None if r.steps_to_solve is None else f"{r.steps_to_solve:,}",
            "test return": r.test_return,
            "wall s": None if r.wall_s is None else round(r.wall_s, 1),
        }
        for r in runs
    ]


def return_plot(runs: list[AgentRun], path: Path) -> Path:
    """The validation return (left) and the recent training episodes' return (right) against
    environment steps: a colour per algorithm, a line style per seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    algorithms = list(dict.fromkeys(r.algorithm for r in runs))
    seeds = sorted({r.seed for r in runs})
    styles = ["-", "--", ":", "-."]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    panels = [
        ("val/return_mean (10 deterministic episodes)", "val"),
        ("rollout/return_mean (training episodes)", "rollout"),
    ]
    for ax, (title, curve) in zip(axes, panels):
        for r in runs:
            steps, values = getattr(r, curve)
            ax.plot(
                steps,
                values,
                color=f"C{algorithms.index(r.algorithm)}",
                linestyle=styles[seeds.index(r.seed) % len(styles)],
                marker="o" if curve == "val" else None,
                markersize=3,
                label=f"{r.algorithm}, seed {r.seed}",
            )
        ax.axhline(475, color="grey", linewidth=0.8, linestyle="--")  # CartPole's solved return
        ax.set(title=title, xlabel="environment steps", ylim=(0, 520))
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("return")
    axes[1].legend(fontsize=7, ncol=len(algorithms), loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def reinforcement_learning(run: Runner) -> tuple[list[dict[str, Any]], Path]:
    sweep = run.out / "sweep"
    run("nnlab-train", "-m", "experiment=reinforcement_learning", f"hydra.sweep.dir={sweep}")
    runs = [agent_run(trial) for trial in find_trials(sweep)]
    run.figures["return_vs_env_steps.png"] = return_plot(runs, run.out / "return_vs_env_steps.png")
    (run.out / "runs.md").write_text(markdown(run_rows(runs)))
    run.figures["runs.md"] = run.out / "runs.md"
    return solve_rows(runs), sweep


def interpretability(run: Runner) -> tuple[list[dict[str, Any]], Path]:
    """SHAP vs LIME vs gradients by faithfulness: the sweep trains the breast_cancer MLP and the
    digits CNN, nnlab-explain scores every method on 32 test rows of each. One row per method
    (ordered by the first model's deletion AUC, the random order last), per model its deletion AUC
    (lower = more faithful), infidelity (lower = better) and sanity-check Spearman (lower = the map
    depends more on the trained weights); '-' where a method does not apply (Grad-CAM on an MLP)."""
    sweep = run.out / "sweep"
    run("nnlab-train", "-m", "experiment=interpretability", f"hydra.sweep.dir={sweep}")
    scores: dict[str, dict[str, float]] = {}
    for trial in find_trials(sweep):
        model = trial.value("experiment@_global_") or trial.name
        out = run.out / f"explain_{model}"
        run("nnlab-explain", f"ckpt_path={best_ckpt(trial)}", "explain.num_samples=32", f"hydra.run.dir={out}")
        scores[model] = read_metrics(out)
        for figure in ("deletion_curves", "attributions", "shap_samples", "shap_importance"):
            if (out / "figures" / f"{figure}.png").is_file():
                run.figures[f"{model}_{figure}.png"] = out / "figures" / f"{figure}.png"
    found = [re.fullmatch(r"faithfulness/(\w+)/deletion_auc", k) for m in scores.values() for k in m]
    methods = sorted({f[1] for f in found if f} - {"random"})
    first = next(iter(scores.values()), {})
    methods.sort(key=lambda m: first.get(f"faithfulness/{m}/deletion_auc", float("inf")))
    rows = []
    for method in [*methods, "random"]:
        row: dict[str, Any] = {"method": method}
        sanity = "ig" if method == "integrated_gradients" else method  # nnlab-explain's short name
        for model, metrics in scores.items():
            row[f"{model}: deletion AUC"] = metrics.get(f"faithfulness/{method}/deletion_auc")
            row[f"{model}: infidelity"] = metrics.get(f"faithfulness/{method}/infidelity")
            row[f"{model}: sanity rho"] = metrics.get(f"sanity/{sanity}/spearman")
        rows.append(row)
    return rows, sweep


PIPELINES: dict[str, Callable[[Runner], tuple[list[dict[str, Any]], Path]]] = {
    "attention": attention,
    "adversarial": adversarial,
    "transfer_learning": few_labels("transfer_learning", "experiment=digits04_pretrain"),
    "ensembles": ensembles,
    "edge_deployment": edge_deployment,
    # 100 epochs: a better reconstruction code transfers better than the config's 30 (docs/transfer.md)
    "ssl_pretraining": few_labels("ssl_pretraining", "experiment=digits_ssl_pretrain", "trainer.max_epochs=100"),
    "reinforcement_learning": reinforcement_learning,
    "interpretability": interpretability,
}


def run_pipeline(name: str, runs_dir: Path, docs_dir: Path, extra: list[str]) -> dict[str, Any]:
    """Run pipeline `name` and, when every command succeeded, write its table, timing and figures
    into `docs_dir/name`; returns the timing."""
    out = runs_dir / name / datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    out.mkdir(parents=True)
    run = Runner(out, extra)
    print(f"\n=== {name} (in {shorten(str(out))})", flush=True)
    load, cpu0, start = os.getloadavg()[0], cpu_seconds(), time.perf_counter()
    error = None
    try:
        rows, sweep = PIPELINES[name](run)
        run("nnlab-report", str(sweep))
    except PipelineFailed as e:
        rows, sweep, error = [], None, str(e)
        print(error, file=sys.stderr)
    wall, cpu = time.perf_counter() - start, cpu_seconds() - cpu0
    extra_shown = f" -- {shlex.join(extra)}" if extra else ""
    command = f"python scripts/concept_pipelines.py {name}{extra_shown}"
    timing = timing_record(name, command, 1 if error else 0, wall, cpu, load, out)
    if error:
        return timing  # the docs keep the files of the last run that succeeded
    target = docs_dir / name
    target.mkdir(parents=True, exist_ok=True)
    (target / "timing.json").write_text(json.dumps(timing, indent=2) + "\n")
    steps = "\n".join(f"| `{s['command']}` | {s['wall_s']} |" for s in run.steps)
    (target / "table.md").write_text(
        f"## {name}\n\n{markdown(rows)}\nCommands, run in {timing['run_dir']}/:\n\n"
        f"| command | wall s |\n|---|---:|\n{steps}\n| total | {timing['wall_s']} |\n"
    )
    (target / "table.json").write_text(json.dumps({"rows": rows, "steps": run.steps, **timing}, indent=2) + "\n")
    copies = {**{f: sweep / f for f in KEPT}, **run.figures}
    for dest, src in copies.items():
        (target / dest).unlink(missing_ok=True)  # no figure left from an earlier run
        if src.is_file():
            shutil.copy2(src, target / dest)
    print(markdown(rows))
    return timing


def main() -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # small models on a shared 2-core CPU: one thread each
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help=f"pipelines: {', '.join(PIPELINES)}")
    parser.add_argument("--all", action="store_true", help="every pipeline")
    parser.add_argument("--runs-dir", type=Path, default=ROOT / "outputs" / "concept_pipelines")
    parser.add_argument("--docs-dir", type=Path, default=ROOT / "docs" / "figures" / "concepts")
    own, extra = split_argv(sys.argv[1:])
    args = parser.parse_args(own)
    names = list(PIPELINES) if args.all else args.names
    unknown = [n for n in names if n not in PIPELINES]
    if not names or unknown:
        parser.error(f"unknown pipeline(s) {unknown}; choose from: {', '.join(PIPELINES)}")
    results = [run_pipeline(n, args.runs_dir.resolve(), args.docs_dir, extra) for n in names]
    print_summary(results, "pipeline")
    sys.exit(max((r["returncode"] for r in results), default=0))


if __name__ == "__main__":
    main()
