"""GPT: a decoder-only Transformer language model, in the spirit of nanoGPT, readable top to bottom."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from nnlab.errors import DataMismatchError, check_range
from nnlab.models import layers as L
from nnlab.models.attention import Block, init_gpt
from nnlab.models.sampling import sample_tokens
from nnlab.models.transformer import check_heads


class GPT(nn.Module):
    """Decoder-only Transformer (GPT-2, Radford et al., 2019) that predicts the next token.

        token ids (B, T) -> token embedding + learned position embedding -> dropout
        -> num_layers x Block (pre-norm, causal self-attention + MLP)
        -> LayerNorm -> lm_head Linear(d_model, vocab_size) -> logits (B, T, vocab_size)

    Causal attention lets position t read positions 0..t only, so logits[:, t] scores the token
    at t + 1 from the tokens up to t, and one forward pass trains all T predictions at once
    (cross-entropy against the input shifted by one). Padding (id 0) on the right is harmless:
    no earlier position can see it, and the loss of its positions is the data's to ignore.

    `tie_weights` uses one matrix for the token embedding and the lm_head (Press & Wolf, 2017):
    a token's input vector is also the direction that scores it as output. It saves
    vocab_size x d_model weights and usually helps small models.

    Rules of thumb (nanoGPT's Shakespeare-char baby GPT: 6 layers, 6 heads, d_model 384, block
    256, dropout 0.2): on a CPU start at 4 layers of 128 and a block of 64-128 characters; attention
    costs O(T^2), so the context length is the first knob for speed.

    Args:
        input_shape: (block_size,), the context length, given by the dataset.
        num_outputs: must equal vocab_size (one score per token of the vocabulary).
        vocab_size: number of token ids, given by a text dataset.
        d_model: features per token.
        num_heads: attention heads per layer; must divide d_model.
        num_layers: Transformer blocks.
        mlp_ratio: each block's MLP hidden width, as a multiple of d_model.
        dropout: on embeddings, attention weights and each block's branches, in [0, 1).
        tie_weights: share the token embedding with the lm_head.

    Weights start from GPT-2's recipe (`attention.init_gpt`): N(0, 0.02), with the residual
    projections scaled by 1 / sqrt(2 * num_layers).
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_outputs: int,
        vocab_size: int | None = None,
        d_model: int = 128,
        num_heads: int = 4,
        num_layers: int = 4,
        mlp_ratio: int = 4,
        dropout: float = 0.1,
        tie_weights: bool = True,
    ) -> None:
        super().__init__()
        shape = tuple(int(s) for s in input_shape)
        if vocab_size is None or len(shape) != 1:
            kind = L.SHAPE_KINDS.get(len(shape), f"{len(shape)}-D")
            raise DataMismatchError(
                f"The GPT needs token data (text as ids into a vocabulary), but the dataset gives numeric samples "
                f"of shape {shape} ({kind}). Choose a text dataset, e.g. data=python_docs or data=text, or "
                "another model (model=transformer, model=cnn, model=lstm) for this data."
            )
        if num_outputs != vocab_size:
            raise DataMismatchError(
                f"The GPT is a language model: it scores each of the vocabulary's {vocab_size} tokens at every "
                f"position, but the dataset asks for {num_outputs} outputs per sequence (a classification or "
                "regression). Use a language-modelling dataset (data=python_docs, data=text), or "
                "model=transformer or model=text_lstm to classify token sequences."
            )
        check_heads(d_model, num_heads)
        check_range("model.num_layers", num_layers, 1)
        check_range("model.mlp_ratio", mlp_ratio, 1)
        check_range("model.dropout", dropout, 0.0, 1.0, high_inclusive=False)

        self.block_size, self.vocab_size = shape[0], vocab_size
        self.wte = nn.Embedding(vocab_size, d_model)  # token embedding
        self.wpe = nn.Embedding(self.block_size, d_model)  # position embedding
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            Block(d_model, num_heads, mlp_ratio, dropout, causal=True) for _ in range(num_layers)
        )
        self.ln_f = nn.LayerNorm(d_model)
        self.lm_head = nn.Linear(d_model, vocab_size, bias=False)
        init_gpt(self, num_layers)
        if tie_weights:
            self.lm_head.weight = self.wte.weight  # one Parameter, two uses

    def _embed(self, idx: torch.Tensor) -> torch.Tensor:
        T = idx.shape[1]
        if T > self.block_size:
            raise ValueError(
                f"The GPT got a sequence of {T} tokens, longer than its context of {self.block_size} "
                "(input_shape[0]). Crop it to the last block_size tokens, as `generate` does."
            )
        pos = torch.arange(T, device=idx.device)  # (T,)
        return self.drop(self.wte(idx) + self.wpe(pos))  # (B, T, C) + (T, C) -> (B, T, C)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """idx: (B, T) int64 token ids, T <= block_size -> logits (B, T, vocab_size), logits[:, t]
        scoring the token that follows idx[:, t]."""
        x = self._embed(idx)  # (B, T, C)
        for block in self.blocks:
            x = block(x)  # (B, T, C)
        x = self.ln_f(x)
        return self.lm_head(x)  # (B, T, vocab_size)

    @torch.no_grad()
    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Continue each row of idx (B, T0) by max_new_tokens tokens: (B, T0 + max_new_tokens).

        Each step feeds the last block_size tokens, takes the logits of the last position,
        divides them by `temperature` (< 1 sharpens the distribution, > 1 flattens it; 0 means
        greedy: always the most likely token), keeps the `top_k` most likely tokens (None: all),
        and samples one (with `generator`, reproducibly): `nnlab.models.sampling.sample_tokens`.
        Runs in eval mode (no dropout) and restores the mode it found. The whole context is
        recomputed at every step (no KV cache): simple, and fast enough for the small models here.
        """
        check_range("max_new_tokens", max_new_tokens, 0)
        check_range("temperature", temperature, 0.0)
        if top_k is not None:
            check_range("top_k", top_k, 1)
        was_training = self.training
        self.eval()
        try:  # the sampling loop every causal language model shares (an LSTM with readout=steps too)
            return sample_tokens(self, idx, max_new_tokens, self.block_size, temperature, top_k, generator)
        finally:
            self.train(was_training)

    @torch.no_grad()
    def attention_maps(self, idx: torch.Tensor) -> list[torch.Tensor]:
        """Each layer's attention weights for idx (B, T), [(B, heads, T, T)] * num_layers, in eval
        mode without gradients. Causal: row t is lower-triangular, weights on tokens 0..t."""
        was_training = self.training
        self.eval()
        try:
            x = self._embed(idx)
            maps = []
            for block in self.blocks:
                maps.append(block.weights(x))  # (B, nh, T, T)
                x = block(x)
            return maps
        finally:
            self.train(was_training)
