"""`nnlab-export ckpt_path=<run>/checkpoints/best.ckpt` (also `python -m nnlab.commands.export`): a trained
run's model as files to deploy, each checked against PyTorch and timed on the CPU.

    checkpoint -> the run's model, data (nnlab.runs.restore), on the CPU
      -> model.ts (TorchScript), model.onnx (dynamic batch), model.int8.onnx, torch int8
      -> parity on the test split: |artifact - PyTorch| <= export.atol and the same classes, else exit 2
      -> export.md/.csv and metrics.json: size, median latency at each batch size, test accuracy (or MSE)

    nnlab-export ckpt_path=outputs/runs/<run>/checkpoints/best.ckpt
    nnlab-export ckpt_path=... export.formats=[onnx] export.quantize=false export.threads=2

Only models that map a batch of inputs to one output tensor export (the supervised task's MLPs,
CNNs, RNNs and Transformers, language models, and the perceptron); a SOM, a GAN or an
autoencoder is refused with an error.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from nnlab.cli import app
from nnlab.cli.app import guarded
from nnlab.cli.overrides import explain
from nnlab.errors import UserError, check_choice, check_range

log = logging.getLogger(__name__)

FORMATS = ("torchscript", "onnx")
# Tasks whose model is a plain function x -> outputs (B, K): the only kind a single-graph file can hold.
EXPORTABLE_TASKS = (
    "nnlab.tasks.supervised.Supervised",
    "nnlab.tasks.perceptron.PerceptronRule",
    "nnlab.tasks.language_model.LanguageModel",  # token ids (B, T) -> next-token logits (B, T, V)
)


@dataclass
class Artifact:
    """One deployable form of the model: a name for the table, its file (or none), how to run it."""

    name: str
    predict: Any  # nnlab.deploy.runtime.Predictor
    size_bytes: int
    path: Path | None = None
    checks: dict[str, float] = field(default_factory=dict)


def export(cfg: DictConfig) -> dict[str, float]:
    """Export `cfg.ckpt_path`'s model in `cfg.export.formats`, check and time every artifact."""
    import torch

    from nnlab.deploy import checks, convert, runtime
    from nnlab.runs.posthoc import Report
    from nnlab.runs.restore import checkpoint_of, load_run

    opts = cfg.export
    validate(opts)
    # The CPU throughout: it is where these files are deployed, and the latencies are CPU ones.
    run = load_run(checkpoint_of(cfg), device="cpu", trust_config=cfg.trust_config)
    refuse_unexportable(run)
    torch.set_num_threads(opts.threads)
    report = Report(cfg.paths.output_dir, cfg)
    out = Path(cfg.paths.output_dir)
    test = list(run.data.eval_batches("test"))  # small datasets: held once, reused by every check
    classes = run.data.kind in ("classification", "language_model")
    example = test[0][0][:8]
    reference = runtime.torch_predictor(run.model)

    artifacts = [Artifact("pytorch", reference, convert.state_dict_bytes(run.model))]
    if "torchscript" in opts.formats:
        path = out / "model.ts"
        traced = runtime.torch_predictor(convert.to_torchscript(run.model, example, path))
        artifacts.append(Artifact("torchscript", traced, path.stat().st_size, path))
    if "onnx" in opts.formats:
        path = convert.to_onnx(run.model, example, out / "model.onnx", opts.opset, opts.onnx_exporter)
        artifacts.append(Artifact("onnx", runtime.onnx_predictor(path, opts.threads), path.stat().st_size, path))
        if opts.quantize:
            q = convert.quantize_onnx(path, out / "model.int8.onnx")
            artifacts.append(Artifact("onnx_int8", runtime.onnx_predictor(q, opts.threads), q.stat().st_size, q))
    if opts.quantize:
        int8 = convert.quantize_torch(run.model)
        artifacts.append(Artifact("pytorch_int8", runtime.torch_predictor(int8), convert.state_dict_bytes(int8)))

    for a in artifacts:
        if a.name in ("torchscript", "onnx"):  # exact conversions: they must match; int8 ones may not
            a.checks = checks.check_parity(a.name, a.predict, reference, test, opts.atol, classes)
            log.info("Parity of %s: max |diff| %.3g, classes agree %.4f", a.name, *a.checks.values())
    rows, metrics = [], {"threads": float(opts.threads)}
    for a in artifacts:
        row: dict[str, Any] = {
            "artifact": a.name,
            "file": a.path.name if a.path else "-",
            "size_kb": a.size_bytes / 1024,
        }
        for b in opts.batch_sizes:
            x = checks.batch_of(test, b)
            row[f"latency_b{b}_ms"] = checks.median_latency_ms(a.predict, x, opts.repeats, opts.warmup)
        row.update({f"test_{k}": v for k, v in checks.score(a.predict, test, run.data.kind).items()})
        if a.checks:
            row["max_abs_diff"] = a.checks["max_abs_diff"]
        rows.append(row)
        metrics.update({f"{a.name}/{k}": float(v) for k, v in row.items() if isinstance(v, (int, float))})
        metrics.update({f"{a.name}/{k}": v for k, v in a.checks.items()})
    columns = list(dict.fromkeys(k for r in rows for k in r))  # max_abs_diff only on some rows
    report.table(
        "export", [{c: r.get(c, "-") for c in columns} for r in rows], title=f"Export ({opts.threads} thread(s))"
    )
    return report.finish(metrics)


def validate(opts: DictConfig) -> None:
    """The export options, each named in the error when wrong."""
    from nnlab.deploy.convert import ONNX_EXPORTERS

    if not opts.formats:
        raise UserError(f"export.formats is empty. Name one or more of: {', '.join(FORMATS)}.")
    for f in opts.formats:
        check_choice("export.formats", f, FORMATS)
    check_choice("export.onnx_exporter", opts.onnx_exporter, ONNX_EXPORTERS)
    check_range("export.opset", opts.opset, 9, 25)
    check_range("export.atol", opts.atol, 0.0, low_inclusive=False)
    check_range("export.repeats", opts.repeats, 1)
    check_range("export.warmup", opts.warmup, 0)
    check_range("export.threads", opts.threads, 1)
    for b in opts.batch_sizes:
        check_range("export.batch_sizes", b, 1)


def refuse_unexportable(run: Any) -> None:
    """A UserError naming the model unless it is a plain x -> outputs function (see EXPORTABLE_TASKS)."""
    task = f"{type(run.task).__module__}.{type(run.task).__qualname__}"
    if task not in EXPORTABLE_TASKS:
        model = run.cfg.model.get("_target_", type(run.model).__name__)
        raise UserError(
            f"nnlab-export cannot export the model of {run.ckpt_path}: {model} (trained by {task}) is not "
            "a single function from inputs to outputs. Export exports classifiers and regressors "
            "(model=mlp, cnn, cnn1d, lenet5, rnn, lstm, gru, linear, perceptron, transformer, vit, text_lstm, "
            "text_cnn) and language models (model=gpt, char_lstm); a SOM, a GAN or an "
            "autoencoder has no such graph to export."
        )


@hydra.main(version_base="1.3", config_path="pkg://nnlab.configs", config_name="export")
def main(cfg: DictConfig) -> None:
    guarded(lambda: export(cfg), output_dir=cfg.paths.output_dir)


def cli() -> None:
    """The `nnlab-export` command."""
    app.cli(main, explain)


if __name__ == "__main__":
    cli()
