"""`nnlab-predict ckpt_path=<run>/checkpoints/best.ckpt input=file.csv|file.npy` (also `python -m
nnlab.commands.predict`): a trained run's predictions for new inputs.

    input file -> rows of features in the dataset's raw units -> the run's scaling (train split's
    mean and std) -> model -> predictions.csv (class and per-class probabilities, or values)

Input formats:
  - .npy: an array of shape (N, *input_shape) or (N, features), e.g. (N, 1, 8, 8) or (N, 64) for digits.
  - .csv: one row per sample, `features` numbers per row (an image flattened row by row); a first
    line that is not numeric is read as a header.
  - .txt, for a run trained on text: one text per line, encoded with the run's tokenizer.

A reinforcement-learning run acts instead: each row is an observation of its environment (raw,
as the environment gives it), and actions.csv holds the deterministic policy's action for it
with the network's outputs (the policy's logits or Gaussian means, or DQN's Q-values).

A language model's run generates text instead: `nnlab-predict ckpt_path=... prompt="The "
max_new_tokens=200 temperature=0.8 top_k=20` continues the prompt and writes generated.txt.
"""

from __future__ import annotations

import csv
import logging
import math
from pathlib import Path

import hydra
import numpy as np
from omegaconf import DictConfig

from nnlab.cli import app
from nnlab.cli.app import guarded
from nnlab.cli.overrides import explain
from nnlab.errors import UserError

log = logging.getLogger(__name__)


def read_inputs(path: Path, input_shape: tuple[int, ...]) -> np.ndarray:
    """The rows of `path` as float32, shape (N, *input_shape); a UserError names what is wrong."""
    features = math.prod(input_shape)
    if not path.is_file():
        raise UserError(f"input={path}: no such file. Give a .csv or .npy file of {features} features per row.")
    if path.suffix == ".npy":
        try:
            x = np.load(path, allow_pickle=False)
        except ValueError as e:
            raise UserError(f"input={path}: not a plain NumPy array ({e}). Save it with np.save(path, array).") from e
        if x.ndim < 1 or not np.issubdtype(x.dtype, np.number):
            raise UserError(f"input={path}: holds a {x.dtype} array of shape {x.shape}; expected numbers.")
        x = x.reshape(len(x), -1) if x.ndim > 1 else x.reshape(1, -1)
    elif path.suffix == ".csv":
        x = read_csv(path, features)
    else:
        raise UserError(f"input={path}: unknown format '{path.suffix}'. Give a .csv or a .npy file.")
    if x.shape[1] != features:
        shape = "x".join(map(str, input_shape))
        raise UserError(
            f"input={path} has {x.shape[1]} features per row, but the model takes {features} "
            f"(input shape {shape}). Give {features} values per row, in the order of the training data."
        )
    if not np.isfinite(x).all():
        bad = int(np.argwhere(~np.isfinite(x).all(axis=1))[0, 0])
        raise UserError(f"input={path}: row {bad} has a missing or non-finite value. Fill or drop it.")
    return x.astype(np.float32).reshape(len(x), *input_shape)


def read_csv(path: Path, features: int) -> np.ndarray:
    """The numeric rows of a CSV (a non-numeric first line is a header); `features`, the model's
    number of inputs, is named in the messages."""
    with open(path, newline="") as f:
        rows = [row for row in csv.reader(f) if row and any(c.strip() for c in row)]
    if rows and not _numeric(rows[0]):
        rows = rows[1:]  # a header
    fix = f"Give {features} values per row, in the order of the training data."
    if not rows:
        raise UserError(f"input={path} has no data rows. {fix}")
    widths = {len(r) for r in rows}
    if len(widths) > 1:
        first = next(i for i, r in enumerate(rows) if len(r) != len(rows[0]))
        raise UserError(
            f"input={path}: rows have different numbers of values ({sorted(widths)}); data row {first + 1} "
            f"has {len(rows[first])}, the first has {len(rows[0])}. {fix}"
        )
    for i, row in enumerate(rows):
        if not _numeric(row):
            cell = next(c for c in row if not _is_number(c))
            raise UserError(f"input={path}: data row {i + 1} has a non-numeric value {cell!r}. {fix}")
    return np.array(rows, dtype=np.float64)


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _numeric(row: list[str]) -> bool:
    return all(_is_number(c) for c in row)


def predict(cfg: DictConfig) -> dict[str, float]:
    import torch

    from nnlab.runs.posthoc import Report
    from nnlab.runs.restore import checkpoint_of, load_run

    run = load_run(checkpoint_of(cfg), device=cfg.device, trust_config=cfg.trust_config)
    report = Report(cfg.paths.output_dir, cfg)
    if run.data.kind == "language_model":
        return report.finish(generate(run, cfg))
    if run.data.kind == "reinforcement":
        return report.finish(act(run, cfg))
    if not cfg.get("input"):
        what = "input=texts.txt (one text per line)" if run.data.tokenizer is not None else "input=file.csv or .npy"
        raise UserError(f"input is not set. Give the rows to predict: {what}.")
    if run.data.tokenizer is not None:
        x = torch.from_numpy(read_texts(Path(cfg.input), run.data.tokenizer, run.data.input_shape[0])).to(run.device)
    else:
        x_raw = read_inputs(Path(cfg.input), tuple(run.data.input_shape))
        x = torch.from_numpy(run.data.transform(x_raw)).to(run.device)
    with torch.no_grad():
        out = torch.cat([run.model(x[i : i + 1024]).float() for i in range(0, len(x), 1024)]).cpu()
    out_path = Path(cfg.paths.output_dir) / "predictions.csv"
    with open(out_path, "w", newline="") as f:
        writer = csv.writer(f)
        if run.classifier:
            names = run.data.class_names or [str(i) for i in range(out.shape[1])]
            probs = torch.softmax(out, dim=1).numpy()
            writer.writerow(["row", "prediction", *(f"p_{n}" for n in names)])
            for i, p in enumerate(probs):
                writer.writerow([i, names[int(p.argmax())], *(f"{v:.6f}" for v in p)])
            counts = np.bincount(probs.argmax(1), minlength=len(names))
            summary = {f"predicted/{n}": int(c) for n, c in zip(names, counts)}
        else:
            values = run.data.untransform_target(out.numpy().reshape(len(out), -1))
            columns = ["prediction"] if values.shape[1] == 1 else [f"prediction_{j}" for j in range(values.shape[1])]
            writer.writerow(["row", *columns])
            for i, v in enumerate(values):
                writer.writerow([i, *(f"{a:.6g}" for a in v)])
            summary = {"prediction/mean": float(values.mean()), "prediction/std": float(values.std())}
    log.info("Wrote %d predictions to %s", len(out), out_path)
    return report.finish({"rows": len(out), **summary})


def act(run, cfg: DictConfig) -> dict[str, float]:
    """The deterministic actions of a reinforcement-learning run's policy for the observations in
    `cfg.input`, written to actions.csv with the network's outputs."""
    import torch

    if not cfg.get("input"):
        n = run.data.input_shape[0]
        raise UserError(
            f"input is not set. Give the observations to act on: input=file.csv or .npy ({n} values per row)."
        )
    obs = read_inputs(Path(cfg.input), tuple(run.data.input_shape))
    actions = run.task.greedy(obs)
    with torch.no_grad():
        outputs = run.model(torch.from_numpy(obs).to(run.device)).float().cpu().numpy()
    actions = actions.reshape(len(obs), -1)
    out_path = Path(cfg.paths.output_dir) / "actions.csv"
    with open(out_path, "w", newline="") as f:
        writer = csv.writer(f)
        names = ["action"] if actions.shape[1] == 1 else [f"action_{j}" for j in range(actions.shape[1])]
        writer.writerow(["row", *names, *(f"output_{j}" for j in range(outputs.shape[1]))])
        for i in range(len(obs)):
            writer.writerow([i, *(f"{a:.6g}" for a in actions[i]), *(f"{v:.6g}" for v in outputs[i])])
    log.info("Wrote %d actions to %s", len(obs), out_path)
    summary = {"rows": len(obs)}
    if not run.data.continuous:
        counts = np.bincount(actions[:, 0].astype(np.int64), minlength=run.data.num_actions)
        summary.update({f"action/{a}": int(c) for a, c in enumerate(counts)})
    return summary


def read_texts(path: Path, tokenizer, length: int) -> np.ndarray:
    """One text per line of `path` as token ids (N, length): encoded with the run's tokenizer,
    cut or padded (PAD = 0) to the length the model was trained on."""
    if not path.is_file() or path.suffix != ".txt":
        raise UserError(f"input={path}: give an existing .txt file with one text per line (this run reads text).")
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except UnicodeDecodeError as e:
        raise UserError(f"input={path}: not UTF-8 text (byte {e.start}). Save the file as UTF-8.") from None
    lines = [line for line in lines if line]
    if not lines:
        raise UserError(f"input={path} has no text: give one text per line.")
    x = np.zeros((len(lines), length), dtype=np.int64)
    for i, line in enumerate(lines):
        ids = tokenizer.encode(line)[:length]
        x[i, : len(ids)] = ids
    return x


def generate(run, cfg: DictConfig) -> dict[str, float]:
    """A language model's continuation of `prompt` (`LanguageModel.generate`, the sampler of its
    epoch samples), printed and written to generated.txt."""
    prompt = cfg.get("prompt")
    if prompt is None or prompt == "":
        raise UserError('This run is a language model: give the text to continue, e.g. prompt="The ".')
    ids = run.data.tokenizer.encode(str(prompt))
    if not ids:
        raise UserError(f"prompt={prompt!r} encodes to no tokens with the run's tokenizer. Give some text.")
    top_k = cfg.get("top_k")
    if cfg.max_new_tokens < 1 or cfg.temperature < 0 or (top_k is not None and top_k < 1):
        raise UserError(
            f"max_new_tokens={cfg.max_new_tokens}, temperature={cfg.temperature}, top_k={top_k}: need "
            "max_new_tokens >= 1, temperature >= 0 (0 = always the likeliest token) and top_k >= 1 or null."
        )
    text = run.task.generate(str(prompt), int(cfg.max_new_tokens), float(cfg.temperature), top_k, int(cfg.seed))
    path = Path(cfg.paths.output_dir) / "generated.txt"
    path.write_text(text + "\n", encoding="utf-8")
    print(text)
    log.info("Wrote %d generated tokens to %s", cfg.max_new_tokens, path)
    return {"prompt_tokens": len(ids), "generated_tokens": int(cfg.max_new_tokens)}


@hydra.main(version_base="1.3", config_path="pkg://nnlab.configs", config_name="predict")
def main(cfg: DictConfig) -> None:
    guarded(lambda: predict(cfg), output_dir=cfg.paths.output_dir)


def cli() -> None:
    """The `nnlab-predict` command."""
    app.cli(main, explain)


if __name__ == "__main__":
    cli()
