"""Regenerate the README's tables of config groups and experiments from the config folders, so
that a config added without touching the README is caught instead of silently left out.

    python scripts/readme_tables.py           # rewrite the generated tables in README.md
    python scripts/readme_tables.py --check   # exit 1, naming each stale table, if README.md differs

The config folders are the catalogue (STYLE.md, habit 5): a group is a folder of
src/nnlab/configs/ with YAML files in it and its choices are their file names, as
`nnlab-train --help` lists them. What this script cannot read from the files, what each group
sets, is written once below in WHAT_IT_SETS, whose order is the order of the table's rows.

Each experiment YAML starts with the command that runs it (after `# @package _global_`); the
table shows that first command, without the parenthesis that may follow it, and the first sentence
of the description: the paragraph that starts at the first comment line after the command that
starts with a capital letter.

Each table sits in README.md between two markers, e.g. for the groups:

    <!-- BEGIN generated: groups (python scripts/readme_tables.py) -->

    | group | choices | what it sets |
    ...

    <!-- END generated: groups -->

Only the text between them is rewritten; everything else in README.md stays as it is.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the checkout, where README.md lives
README = ROOT / "README.md"
CONFIGS = ROOT / "src" / "nnlab" / "configs"

# What each group sets, by hand: the one column a script cannot derive. The order is the table's.
WHAT_IT_SETS = {
    "data": "dataset, seeded stratified train/val/test split, scaling fitted on the train split only "
    "(`normalize=standard\\|minmax\\|none`), batch size, in-memory or DataLoader batching; text "
    "(python_docs, word_language, text, text_csv): its tokenizer (`char` or `bpe`), fitted on the training "
    "split and saved in the run folder",
    "env": "reinforcement learning: a Gymnasium environment to act in, in the data's place (CartPole, Acrobot, "
    "Pendulum with continuous actions, MountainCar, or any `env.id`), vectorised over `num_envs`, seeded per "
    "episode; `epoch_steps` environment steps per epoch, deterministic `val_episodes` and `test_episodes`",
    "data_edit": "row edits (keep classes, blank values, k-fold, imbalance, held-out classes, few labels, "
    "bootstrap, imputation, target outliers, epoch order), applied in the listed order, each with its options "
    "under its name: `data_edit=[imbalance,balanced_sampling] data_edit.imbalance.ratio=0.3` "
    "(docs/concepts.md, Row edits)",
    "augmentation": "random image transforms of training batches, run on the device",
    "imbalance_remedy": "one remedy for class imbalance, setting `data_edit.balanced_sampling`, "
    "`task.class_weight` and `augmentation` together (`none` undoes one chosen before it)",
    "model": "mlp: hidden sizes, activation (relu, leaky_relu, tanh, sigmoid, gelu), dropout, batch norm; "
    "mlp_one_hidden: one tanh hidden layer; deep_*: 10-layer MLPs for the vanishing-gradient experiment; "
    "linear: the MLP without hidden layers (softmax/logistic regression); perceptron: threshold units "
    "trained by the perceptron rule; cnn/cnn1d: conv blocks (channels, kernel, stride, padding, batch norm, "
    "dropout, max/avg pooling) and a global-pooling head, 2-D for images and 1-D for signals; lenet5: the "
    "classic LeNet-5; resnet: a CIFAR-style ResNet for 32x32 images; rnn/lstm/gru: layers, hidden size, "
    "bidirectional, dropout, readout, for sequences and images read row by row; autoencoder/vae: dense or "
    "conv, bottleneck, denoising; encoder_classifier: an autoencoder's encoder plus a linear head; gan: "
    "DCGAN or MLP, conditional; som: Kohonen map, rectangular or hexagonal; transformer/vit: pre-norm "
    "self-attention encoder over tokens, signal steps or image patches, [CLS] or mean pooling; gpt: a "
    "decoder-only causal language model (nanoGPT-style, tied weights); text_lstm/text_cnn/char_lstm: the "
    "RNN and 1-D CNN over token embeddings (char_lstm: a score per position, for language modelling); "
    "policy: the tanh MLP of reinforcement learning (policy and value networks, sized from the environment). "
    "Every family with hidden layers "
    "takes `dropout` (the GAN: `d_dropout`, in D)",
    "init": "re-draws every Linear, Conv and recurrent weight of any model after it is built (`init.std` for "
    "normal, `init.bias=zeros\\|default`, `init.nonlinearity` for the gain)",
    "task": "what a step means: loss (cross_entropy, nll, bce, hinge, kl_div; mse, mae, huber), label "
    "smoothing, class weights; perceptron: the perceptron learning rule; reconstruction (β-VAE, anomaly "
    "scores), gan (D then G, two optimizers), som (online or batch SOM rule): each chosen by its model; "
    "language_model: next-token cross-entropy, perplexity and bits per character beside an n-gram baseline, "
    "a sampled continuation each epoch; reinforce, dqn, ppo: reinforcement learning in an `env` (REINFORCE "
    "with a learned baseline; DQN with replay, target network, epsilon-greedy, Double DQN; PPO with GAE, "
    "clipping, entropy bonus, Gaussian policies for continuous actions)",
    "optimizer": "learning rate, weight decay, ...; sgd takes `momentum` and `nesterov`, which sgd_plain, "
    "sgd_momentum and nesterov set for you",
    "scheduler": "learning-rate schedule (onecycle and cosine_warmup step every update, the others every epoch)",
    "regularization": "`l1`, `l2` (loss penalties), `max_norm`, `ema_decay`: all off by default, any combination on",
    "trainer": "epochs, `device=auto\\|cpu\\|cuda\\|cuda:N`, `precision=32\\|bf16\\|16-mixed`, logging "
    "interval, `gradient_clip_val`, `accumulate_grad_batches`, `nonfinite=stop\\|skip`, `resume=auto`, "
    "`strategy=auto\\|ddp`",
    "callbacks": "checkpoints (`last.ckpt`, `best.ckpt` by `monitor`, which defaults to `optimized_metric` "
    "with `optimized_mode` min or max; top-k; every N epochs or steps), the progress bar, the "
    "training-health monitor, episode returns against environment steps (RL); early_stopping adds early "
    "stopping (on a plateau, or on reaching `stopping_threshold`)",
    "logger": "TensorBoard event files",
    "paths": "data and output folders (`NNLAB_ROOT` moves both)",
    "hydra": "run directory layout, log format; `hydra/launcher=joblib\\|slurm\\|submitit_local` for parallel "
    "or cluster trials",
    "hparams_search": "a Bayesian search for `-m` runs (Optuna)",
    "experiment": "named experiments, each setting several groups at once; every one is in the table below "
    "the model zoo results, with its command",
    "debug": "quick checks: a few batches of one epoch; overfitting one batch",
}

TABLES = ("groups", "experiments")


class ReadmeError(Exception):
    """A mistake this script reports in one message instead of a traceback."""


def begin_marker(name: str) -> str:
    return f"<!-- BEGIN generated: {name} (python scripts/readme_tables.py) -->"


def end_marker(name: str) -> str:
    return f"<!-- END generated: {name} -->"


def groups(configs: Path = CONFIGS) -> dict[str, list[str]]:
    """Every config group and its choices: the folders holding YAML files, and those files' names."""
    found = {}
    for folder in sorted(p for p in configs.iterdir() if p.is_dir()):
        choices = sorted(f.stem for f in folder.glob("*.yaml"))
        if choices:
            found[folder.name] = choices
    return found


def cell(text: str) -> str:
    """Text for one Markdown table cell: a `|` would end the cell, so it is escaped."""
    return re.sub(r"(?<!\\)\|", r"\\|", text)


def groups_table(configs: Path = CONFIGS) -> str:
    found = groups(configs)
    undescribed = sorted(set(found) - set(WHAT_IT_SETS))
    gone = sorted(set(WHAT_IT_SETS) - set(found))
    if undescribed or gone:
        problems = []
        if undescribed:
            problems.append(f"config group(s) {', '.join(undescribed)} have no 'what it sets' text")
        if gone:
            problems.append(f"WHAT_IT_SETS describes group(s) {', '.join(gone)}, which have no YAML files in {configs}")
        raise ReadmeError("; ".join(problems) + ". Edit WHAT_IT_SETS in scripts/readme_tables.py to match the folders.")
    lines = ["| group | choices | what it sets |", "|---|---|---|"]
    for group, what in WHAT_IT_SETS.items():
        lines.append(f"| `{group}` | {', '.join(found[group])} | {what} |")
    return "\n".join(lines)


def comment_block(path: Path) -> list[str]:
    """The comment lines a YAML file starts with, without `# ` and `# @package` (indents kept)."""
    texts = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        text = line[2:].rstrip() if line.startswith("# ") else line[1:].rstrip()
        if not text.startswith("@package"):
            texts.append(text)
    return texts


def first_sentence(text: str) -> str:
    """Up to the first full stop followed by a space or the end, abbreviations (e.g., et al.) aside.
    A paragraph that ends in a colon (a list follows it) ends in a full stop instead."""
    match = re.search(r"(?<!\be\.g)(?<!\bi\.e)(?<!\bvs)(?<!\bal)(?<!\bcf)\.(?=\s|$)", text)
    sentence = text[: match.end()] if match else text
    return sentence[:-1] + "." if sentence.endswith(":") else sentence


def experiment_entry(path: Path) -> tuple[str, str]:
    """(command, one-sentence description) from the comments an experiment YAML starts with."""
    texts = comment_block(path)
    if not texts or not texts[0].startswith("nnlab-"):
        raise ReadmeError(
            f"{path.relative_to(ROOT)} does not start with the command that runs it: its first comment line "
            f"after '# @package _global_' must be e.g. '# nnlab-train experiment={path.stem}'."
        )
    # Two or more spaces and a parenthesis end the command: `nnlab-train -m experiment=x   (the comparison...)`.
    command = re.split(r"\s{2,}\(", texts[0])[0].strip()
    start = next((i for i, t in enumerate(texts) if i > 0 and t[:1].isupper()), None)
    if start is None:
        raise ReadmeError(
            f"{path.relative_to(ROOT)} has no description: after its command, a comment line starting with a "
            "capital letter should say what the experiment shows."
        )
    paragraph = []
    for text in texts[start:]:
        if not text or text[:1].isspace():  # a blank comment line or an indented list ends it
            break
        paragraph.append(text)
    return command, first_sentence(" ".join(paragraph))


def experiments_table(configs: Path = CONFIGS) -> str:
    lines = ["| experiment | command | what it is |", "|---|---|---|"]
    for path in sorted((configs / "experiment").glob("*.yaml")):
        command, description = experiment_entry(path)
        lines.append(f"| {path.stem} | `{cell(command)}` | {cell(description)} |")
    return "\n".join(lines)


def generate(name: str) -> str:
    return {"groups": groups_table, "experiments": experiments_table}[name]()


def block_span(readme: str, name: str) -> tuple[int, int]:
    """Where the generated text of table `name` starts and ends in the README's text."""
    begin, end = begin_marker(name), end_marker(name)
    if readme.count(begin) != 1 or readme.count(end) != 1:
        raise ReadmeError(
            f"README.md must hold the line '{begin}' and the line '{end}' once each, around the {name} "
            "table; put them back where the table belongs and run python scripts/readme_tables.py."
        )
    start = readme.index(begin) + len(begin) + 1  # what is generated starts on the line after it
    stop = readme.index(end)
    if stop < start:
        raise ReadmeError(f"README.md has '{end}' before '{begin}'.")
    return start, stop


def rewrite(readme: str) -> tuple[str, list[str]]:
    """The README with every generated table rewritten, and the names of the tables that changed."""
    stale = []
    for name in TABLES:
        start, stop = block_span(readme, name)
        table = "\n" + generate(name) + "\n\n"  # blank lines keep the markers out of the table
        if readme[start:stop] != table:
            stale.append(name)
            readme = readme[:start] + table + readme[stop:]
    return readme, stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a table is stale")
    args = parser.parse_args(argv)
    try:
        current = README.read_text(encoding="utf-8")
        updated, stale = rewrite(current)
    except ReadmeError as err:
        print(f"Error: {err}", file=sys.stderr)
        return 1
    if args.check:
        if stale:
            print(
                f"README.md is stale: the {' and '.join(stale)} table(s) differ from the config folders. "
                "Run python scripts/readme_tables.py to regenerate them.",
                file=sys.stderr,
            )
            return 1
        print("README.md's generated tables match the config folders.")
        return 0
    if stale:
        README.write_text(updated, encoding="utf-8")
        print(f"README.md: rewrote the {' and '.join(stale)} table(s).")
    else:
        print("README.md: the generated tables were already up to date.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
