"""Language modelling: predict every next token of a text, scored in the units people quote."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nnlab.data.tokenizers import PAD  # padding is never a target
from nnlab.engine.optim import Optimization, UpdateRules, build_scheduler
from nnlab.engine.precision import Precision
from nnlab.engine.task import TaskDefaults
from nnlab.errors import ConfigValueError, check_range
from nnlab.models import transfer
from nnlab.models.sampling import sample_tokens

log = logging.getLogger(__name__)


class LanguageModel(TaskDefaults):
    """Next-token prediction: minimise the cross-entropy of y[:, t] given x[:, :t+1].

    The data are windows of a text as token ids, x (B, T), with targets y (B, T) = the same
    window shifted by one token; the model (GPT, a character LSTM with readout=steps) maps x to
    logits (B, T, V) over the vocabulary, and each position is one prediction, so a window of
    T tokens is T training examples. A causal model sees only the tokens up to t.

    Metrics, over a whole split:
      - loss: mean negative log-likelihood in nats per token;
      - ppl: perplexity, exp(loss): the effective number of tokens the model hesitates between;
      - bpc: bits per character, loss / ln 2 / (characters per token): comparable across
        tokenizers (a BPE token is several characters) and with compression figures;
      - acc: how often the most likely next token is the right one.

    The baseline: a smoothed n-gram model (`nnlab.analysis.text_baselines`) is fitted on the
    same training windows, with its order picked on the validation windows, and scored on the
    same predictions the network makes. Its validation figures are logged every epoch as
    the run `baseline` (the same `epoch/bpc` chart as train and val), and its test figures beside
    the network's (`test/baseline_bpc`), so a network that does not beat counting is seen at once.

    Each epoch, the continuation of a fixed `prompt` (sampled with a fixed seed, `temperature`
    and `top_k`) goes to TensorBoard's Text tab as `val/sample`.

    Args:
        model: maps (B, T) token ids to (B, T, V) logits.
        optimizer, scheduler: factories, as for every task.
        kind: the dataset's kind; must be "language_model".
        prompt: the text the epoch samples continue.
        sample_tokens: tokens generated per sample.
        temperature: divides the logits before sampling: below 1 sharper, above 1 more random.
        top_k: sample among the k most likely tokens only (None: all).
        baseline: fit and log the n-gram baseline.
        baseline_max_order: the largest n-gram order tried (the order is chosen on val).
    """

    supports_ddp = True  # trains only through model(x)
    supports_backbone_lr_scale = True
    own_optimizer_parts: tuple[str, ...] = ()
    prepare_when_restored = True  # `prepare` reads the data (tokenizer, baselines) and leaves the weights alone

    def __init__(
        self,
        model: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        kind: str = "language_model",
        class_names: list[str] | None = None,
        class_counts: list[int] | None = None,
        prompt: str = "The ",
        sample_tokens: int = 200,
        temperature: float = 0.8,
        top_k: int | None = 20,
        baseline: bool = True,
        baseline_max_order: int = 6,
    ) -> None:
        if kind != "language_model":
            raise ConfigValueError(
                f"task=language_model predicts the next token of a text, but this run's data are {kind}. Choose "
                "text for language modelling (data=python_docs, or data=text data.dataset.path=<file.txt>), or "
                "another task (task=supervised)."
            )
        check_range("task.sample_tokens", sample_tokens, 0)
        check_range("task.temperature", temperature, 0.0)
        if top_k is not None:
            check_range("task.top_k", top_k, 1)
        check_range("task.baseline_max_order", baseline_max_order, 1)
        self.model = model
        self.kind = kind
        self.prompt = prompt
        self.sample_tokens = sample_tokens
        self.temperature = temperature
        self.top_k = top_k
        self.baseline = baseline
        self.baseline_max_order = baseline_max_order
        self._optimizer_factory = optimizer
        self._scheduler_factory = scheduler
        self.optim: Optimization | None = None
        self.precision: Precision | None = None
        self.tokenizer: Any = None
        self.chars_per_token: float | None = None
        self.block_size: int | None = None
        self.baseline_val: dict[str, float] = {}
        self.baseline_test: dict[str, float] = {}
        self._probe: torch.Tensor | None = None
        self._baseline_data: Any = None  # the data the baseline is fitted on (task.baseline)

    def configure(
        self, device: torch.device, precision: Precision, total_steps: int, rules: UpdateRules | None = None
    ) -> None:
        self.model.to(device)
        self.device = device
        self.precision = precision
        optimizer = self._optimizer_factory(params=transfer.optimizer_params(self.model))
        transfer.scale_group_lrs(optimizer)
        scheduler = build_scheduler(self._scheduler_factory, optimizer, total_steps)
        self.optim = Optimization(optimizer, scheduler, precision.grad_scaler(), rules=rules)

    def prepare(self, data: Any) -> None:
        """Keep the tokenizer (for samples), a few validation windows (attention maps) and the data,
        whose n-gram baseline is fitted when first asked for (a run rebuilt to generate never needs it)."""
        self.tokenizer = data.tokenizer
        self.chars_per_token = data.chars_per_token
        self.block_size = int(data.input_shape[0])
        if hasattr(self.model, "attention_maps"):  # a few validation windows, for attention maps
            self._probe = next(iter(data.eval_batches("val")))[0][:3, :32]
        if self.baseline:
            self._baseline_data = data

    def _fit_baseline(self) -> None:
        """The n-gram model on the training windows, its order chosen on val, scored on val and test (once)."""
        if self._baseline_data is None or self.baseline_val:
            return
        from nnlab.analysis.text_baselines import best_ngram

        start = time.perf_counter()
        data = self._baseline_data
        (x_train, y_train), (x_val, y_val), (x_test, y_test) = (data.arrays(s) for s in ("train", "val", "test"))
        orders = tuple(range(1, self.baseline_max_order + 1))
        order, ngram = best_ngram(x_train, y_train, x_val, y_val, data.vocab_size, orders=orders)
        self.baseline_val = self._units(ngram.nats_per_token(x_val, y_val))
        self.baseline_test = self._units(ngram.nats_per_token(x_test, y_test))
        shown = "  ".join(f"{k} {v:.4f}" for k, v in self.baseline_val.items())
        log.info("Baseline: %d-gram model, val %s (%.1fs)", order, shown, time.perf_counter() - start)

    def _units(self, nats: float) -> dict[str, float]:
        """Nats per token -> the loss, perplexity and (when characters per token are known) bits per character."""
        units = {"loss": nats, "ppl": math.exp(min(nats, 50.0))}
        if self.chars_per_token:
            units["bpc"] = nats / math.log(2) / self.chars_per_token
        return units

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # (B, T, V) and (B, T) -> one prediction per row of (B*T, V); padding is no target.
        return F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=PAD)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], update: bool = True) -> dict[str, torch.Tensor]:
        x, y = batch  # (B, T) token ids, (B, T) next tokens
        with self.precision.autocast():
            logits = self.model(x)  # (B, T, V)
            loss = self.loss(logits.float(), y)
        self.optim.step(loss, update)
        return {"loss": loss.detach()}

    @torch.no_grad()
    def evaluate(
        self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], detailed: bool = False
    ) -> dict[str, float]:
        self.model.eval()
        nats = hits = tokens = 0.0
        for x, y in batches:
            with self.precision.autocast():
                logits = self.model(x).float()  # (B, T, V)
            flat, target = logits.flatten(0, 1), y.flatten()
            kept = target != PAD
            nats += F.cross_entropy(flat, target, ignore_index=PAD, reduction="sum").item()
            hits += (flat.argmax(1).eq(target) & kept).sum().item()
            tokens += kept.sum().item()
        metrics = self._units(nats / max(tokens, 1))
        metrics["acc"] = hits / max(tokens, 1)
        if detailed:  # the final test: the baseline's figures on the same split, beside the network's
            self._fit_baseline()
            metrics.update({f"baseline_{k}": v for k, v in self.baseline_test.items()})
        return metrics

    def baseline_metrics(self) -> dict[str, float]:
        self._fit_baseline()
        return dict(self.baseline_val)

    @torch.no_grad()
    def epoch_text(self) -> dict[str, str]:
        """The prompt's continuation, sampled with the evaluation weights and a fixed seed."""
        if self.tokenizer is None or self.sample_tokens == 0:
            return {}
        return {"val/sample": self.generate(self.prompt, self.sample_tokens, self.temperature, self.top_k, seed=0)}

    @torch.no_grad()
    def generate(self, prompt: str, max_new_tokens: int, temperature: float, top_k: int | None, seed: int) -> str:
        """`prompt` followed by `max_new_tokens` sampled tokens, as text."""
        ids = self.tokenizer.encode(prompt) or [PAD]
        idx = torch.tensor([ids], dtype=torch.long, device=self.device)
        generator = torch.Generator(device=self.device).manual_seed(seed)
        training = self.model.training
        self.model.eval()
        try:
            with self.precision.autocast():
                out = sample_tokens(self.model, idx, max_new_tokens, self.block_size, temperature, top_k, generator)
        finally:
            self.model.train(training)
        return self.tokenizer.decode(out[0].tolist())

    def figures(self) -> dict[str, Any]:
        """The attention maps of a few validation windows (their first 32 tokens), for a model with attention."""
        if self._probe is None:
            return {}
        from nnlab.analysis.attention import probe_figure

        return {"attention": probe_figure(self.model, self._probe, self.tokenizer)}

    def epoch_end(self, val_metrics: dict[str, float]) -> None:
        self.optim.epoch_end(val_metrics)

    def learning_rates(self) -> dict[str, float]:
        return {"lr": self.optim.lr}

    def single_optimizer(self) -> torch.optim.Optimizer | None:
        return self.optim.optimizer if self.optim is not None else None

    def state_dict(self) -> dict[str, Any]:
        return {"optim": self.optim.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optim.load_state_dict(state["optim"])
