"""Sampling text from any causal language model: one token at a time, fed back in."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def sample_tokens(
    model: nn.Module,
    idx: torch.Tensor,
    max_new_tokens: int,
    block_size: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Continue the token ids `idx` (B, T0) by `max_new_tokens` tokens; returns (B, T0 + n).

    `model` maps (B, T) ids to (B, T, V) next-token logits (GPT, a character LSTM with
    readout=steps). Each step feeds the last `block_size` tokens (the context the model was
    trained on), takes the logits of the last position, divides them by `temperature` (below 1:
    surer, more repetitive text; above 1: more varied, more mistakes; 0: always the most likely
    token), keeps the `top_k` most likely tokens (None: all), and draws the next token from their
    softmax with `generator` (a fixed seed gives the same text every time).
    """
    for _ in range(max_new_tokens):
        context = idx[:, -block_size:]  # (B, <=block_size)
        logits = model(context)[:, -1, :].float()  # (B, V): the scores of the next token
        if temperature == 0:
            nxt = logits.argmax(dim=-1, keepdim=True)  # (B, 1)
        else:
            logits = logits / temperature
            if top_k is not None and top_k < logits.shape[-1]:
                kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (B, 1): the k-th largest
                logits = logits.masked_fill(logits < kth, float("-inf"))
            probs = torch.softmax(logits, dim=-1)
            nxt = torch.multinomial(probs, 1, generator=generator)  # (B, 1)
        idx = torch.cat([idx, nxt], dim=1)
    return idx
