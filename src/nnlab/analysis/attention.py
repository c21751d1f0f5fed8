"""Pictures of what attention heads look at: one heat map per layer for a few samples."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from nnlab.data.tokenizers import PAD


def token_labels(x: torch.Tensor, tokenizer: Any | None, cls: bool) -> list[list[str]]:
    """A label per attention position of each sample of x: the token's text for text (a space
    shown as '_'), else the position's index; '[CLS]' first when the model prepends one."""
    labels = []
    for row in x:
        if tokenizer is not None and x.dtype == torch.long:
            names = [tokenizer.decode([int(t)]).replace(" ", "_").replace("\n", "\\n") or "?" for t in row]
        else:
            names = []
        labels.append((["[CLS]"] if cls else []) + names)
    return labels


def attention_maps_of(model: Any, x: torch.Tensor) -> list[torch.Tensor] | None:
    """The model's attention weights for x, one (B, heads, T, T) tensor per layer, or None for a
    model without attention (it declares it by having `attention_maps`)."""
    maps = getattr(model, "attention_maps", None)
    if maps is None:
        return None
    training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return [m.float().cpu() for m in maps(x)]
    finally:
        model.train(training)


def attention_figure(
    maps: Sequence[torch.Tensor],
    labels: Sequence[Sequence[str]] | None = None,
    head: int | None = None,
    max_samples: int = 3,
    lengths: Sequence[int] | None = None,
) -> Any:
    """A grid of heat maps: a row per sample (up to `max_samples`), a column per layer; cell
    (i, j) is how much position i (a query) attends to position j (a key), the heads averaged, or
    head `head` alone. Rows sum to 1. `lengths` crops each sample to its real (unpadded) length."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_layers, n = len(maps), min(max_samples, maps[0].shape[0])
    heads = maps[0].shape[1]
    if head is not None and not 0 <= head < heads:
        raise ValueError(f"head {head} does not exist: the model has heads 0 to {heads - 1}")
    fig, axes = plt.subplots(n, n_layers, figsize=(3.2 * n_layers, 3.0 * n), squeeze=False)
    for i in range(n):
        for layer, m in enumerate(maps):
            w = m[i].mean(0) if head is None else m[i, head]  # (T, T)
            t = w.shape[0] if lengths is None else min(int(lengths[i]), w.shape[0])
            ax = axes[i][layer]
            ax.imshow(w[:t, :t].numpy(), cmap="viridis", vmin=0.0)
            names = list(labels[i])[:t] if labels is not None and labels[i] else None
            if names and t <= 40:
                ax.set_xticks(range(t), names, rotation=90, fontsize=6)
                ax.set_yticks(range(t), names, fontsize=6)
            else:
                ax.set_xticks([])
                ax.set_yticks([])
            if i == 0:
                ax.set_title(f"layer {layer + 1}" + ("" if head is None else f", head {head}"), fontsize=9)
            if layer == 0:
                ax.set_ylabel(f"sample {i + 1}: query", fontsize=8)
    which = "heads averaged" if head is None else f"head {head} of {heads}"
    fig.suptitle(f"Attention weights ({which}): row = query position, column = key position", fontsize=10)
    fig.tight_layout()
    return fig


def probe_figure(model: Any, x: torch.Tensor, tokenizer: Any | None = None, head: int | None = None) -> Any | None:
    """The attention figure of the samples x (a few validation rows), or None for a model
    without attention. Text is labelled by its tokens and cropped at its padding."""
    maps = attention_maps_of(model, x)
    if maps is None:
        return None
    cls = int(maps[0].shape[-1] == x.shape[-1] + 1)  # a [CLS] position before the inputs
    tokens = x.dtype == torch.long
    labels = token_labels(x, tokenizer, bool(cls)) if tokens and tokenizer is not None else None
    lengths = ((x != PAD).sum(1) + cls).tolist() if tokens else None
    return attention_figure(maps, labels, head, lengths=lengths)
