"""A Transformer encoder that classifies (or regresses) whole sequences: text, signals, images (a ViT)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from nnlab.errors import ConfigValueError, DataMismatchError, check_choice, check_range
from nnlab.models import layers as L
from nnlab.models.attention import PAD, Block, init_gpt, sinusoidal_positions

POSITIONS = ("learned", "sinusoidal")
POOLS = ("cls", "mean")


def check_heads(d_model: int, num_heads: int) -> None:
    """d_model and num_heads in range, and d_model split evenly into heads."""
    check_range("model.d_model", d_model, 1)
    check_range("model.num_heads", num_heads, 1)
    if d_model % num_heads:
        raise ConfigValueError(
            f"model.d_model={d_model} is not divisible by model.num_heads={num_heads}: each head gets "
            f"d_model / num_heads features. Choose a d_model that is a multiple of the heads "
            f"(e.g. model.d_model={num_heads * max(1, round(d_model / num_heads))}) or another model.num_heads."
        )


class Transformer(nn.Module):
    """Transformer encoder (Vaswani et al., 2017; ViT, Dosovitskiy et al., 2021): cut the sample
    into tokens, add positions, run `num_layers` pre-norm blocks of self-attention and MLP
    (`nnlab.models.attention.Block`), pool the tokens into one vector, LayerNorm, Linear head.

    Attention has no notion of order (it is a weighted average over a set), so each token gets a
    position vector added: `learned` (one trained vector per position, ViT and BERT) or
    `sinusoidal` (fixed sines and cosines, `attention.sinusoidal_positions`).

    How samples become tokens of d_model features:
        (L,) token ids (vocab_size given, int64): one token per id through nn.Embedding. Id 0
            (PAD) is padding: no token attends to it and `mean` pooling leaves it out, so padding
            a sequence on the right does not change the output. Sequences shorter than L are
            accepted (positions 0..T-1 are used).
        (C, L) signal: one token per `patch_size` steps, a Conv1d with stride patch_size (a
            linear map of each patch's C * patch_size values); patch_size 1 is one token per step
            (MNIST-1D's 40, the adding problem's T). L must be a multiple of patch_size.
        (C, H, W) image: square patch_size x patch_size patches through a Conv2d, in row-major
            order (a tiny ViT: 8x8 digits with patch_size 2 are 16 tokens).
        (F,) tabular without vocab_size -> refused: use the MLP.

    Pooling: `cls` prepends a learned [CLS] token and reads its final state (it learns to gather
    what the head needs); `mean` averages the final states of the non-padding tokens. Token
    positions, as in `attention_maps`: with `cls` position 0 is [CLS] and token j is at j + 1;
    with `mean` token j is at j. Image patch (r, c) is token r * (W // patch_size) + c.

    Rules of thumb: d_model 64-256 with d_model / num_heads = 16-64 features per head, 2-6 layers
    for small data; attention costs O(T^2) per layer, so for long signals or large images raise
    patch_size (28x28 MNIST with patch_size 4 is 49 tokens, with 1 it is 784).

    Args:
        input_shape: (L,) for tokens, (C, L) or (C, H, W), given by the dataset.
        num_outputs: classes for classification, targets for regression.
        vocab_size: number of token ids (from the dataset, for text only); None for numeric data.
        d_model: features per token, through the whole stack.
        num_heads: attention heads per layer; must divide d_model.
        num_layers: Transformer blocks.
        mlp_ratio: each block's MLP hidden width, as a multiple of d_model.
        dropout: on embeddings, attention weights and each block's branches, in [0, 1).
        positions: learned or sinusoidal.
        pool: cls or mean.
        patch_size: steps (signals) or pixels per side (images) per token; 1 for token ids.

    Weights start from GPT-2's recipe (`attention.init_gpt`: N(0, 0.02), residual projections
    scaled by depth), token embeddings from N(0, 1); the `init` config group re-draws the Linear
    and conv weights (e.g. `init=xavier_uniform`), see `nnlab.models.init`.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_outputs: int,
        vocab_size: int | None = None,
        d_model: int = 64,
        num_heads: int = 4,
        num_layers: int = 2,
        mlp_ratio: int = 4,
        dropout: float = 0.1,
        positions: str = "learned",
        pool: str = "cls",
        patch_size: int = 1,
    ) -> None:
        super().__init__()
        check_heads(d_model, num_heads)
        check_range("model.num_layers", num_layers, 1)
        check_range("model.mlp_ratio", mlp_ratio, 1)
        check_range("model.dropout", dropout, 0.0, 1.0, high_inclusive=False)
        check_choice("model.positions", positions, POSITIONS)
        check_choice("model.pool", pool, POOLS)
        check_range("model.patch_size", patch_size, 1)
        shape = tuple(int(s) for s in input_shape)
        self.tokens_in = vocab_size is not None
        self.embed = self._embedding(shape, vocab_size, d_model, patch_size)
        num_tokens = self._num_tokens(shape, patch_size)

        self.pool = pool
        self.cls = nn.Parameter(torch.zeros(1, 1, d_model)) if pool == "cls" else None
        length = num_tokens + (pool == "cls")
        if positions == "learned":
            self.pos = nn.Parameter(torch.zeros(1, length, d_model))
        else:  # a buffer: moves with .to(device), not trained, rebuilt rather than saved
            self.register_buffer("pos", sinusoidal_positions(length, d_model)[None], persistent=False)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(d_model, num_heads, mlp_ratio, dropout) for _ in range(num_layers))
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, num_outputs)

        init_gpt(self, num_layers)
        if self.tokens_in:  # unit variance, the scale of the sinusoidal positions (init_gpt's 0.02 would drown)
            nn.init.normal_(self.embed.weight, 0.0, 1.0)
            with torch.no_grad():
                self.embed.weight[PAD].zero_()
        if self.cls is not None:
            nn.init.normal_(self.cls, 0.0, 0.02)
        if positions == "learned":
            nn.init.normal_(self.pos, 0.0, 0.02)

    def _embedding(self, shape: tuple[int, ...], vocab_size: int | None, d_model: int, patch_size: int) -> nn.Module:
        """The layer that turns a sample into tokens of d_model features."""
        if vocab_size is not None:
            if len(shape) != 1:
                raise DataMismatchError(
                    f"The TRANSFORMER got a vocabulary (vocab_size={vocab_size}) with samples of shape {shape}: "
                    "token data is (L,) ids per sample. Check the dataset's input_shape."
                )
            if patch_size != 1:
                raise ConfigValueError(
                    f"model.patch_size={patch_size} cuts signals and images into patches; token ids are "
                    "embedded one per position. Set model.patch_size=1 for text (or use model=transformer)."
                )
            return nn.Embedding(vocab_size, d_model, padding_idx=PAD)
        if len(shape) == 2:
            return nn.Conv1d(shape[0], d_model, patch_size, stride=patch_size)
        if len(shape) == 3:
            return nn.Conv2d(shape[0], d_model, patch_size, stride=patch_size)
        needs = "token ids (a text dataset), signals (C, L) or images (C, H, W)"
        raise L.input_shape_error("transformer", needs, "text, signals or images", shape)

    @staticmethod
    def _num_tokens(shape: tuple[int, ...], patch_size: int) -> int:
        if len(shape) == 1:
            return shape[0]
        sides = shape[1:]
        if any(s % patch_size for s in sides):
            what = "length" if len(sides) == 1 else "height and width"
            fits = sorted({p for p in range(1, min(sides) + 1) if all(s % p == 0 for s in sides)})
            raise ConfigValueError(
                f"model.patch_size={patch_size} does not divide the samples' {what} {'x'.join(map(str, sides))} "
                f"(shape {shape}): the patches must tile the sample exactly. Choose a model.patch_size among "
                f"{', '.join(map(str, fits))}."
            )
        tokens = 1
        for s in sides:
            tokens *= s // patch_size
        return tokens

    def _tokens(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Embed x and add positions: (B, T, d_model) tokens ([CLS] first when pool=cls) and the
        (B, T) padding mask (True at PAD ids; None for numeric data)."""
        if self.tokens_in:
            pad = x == PAD  # (B, L)
            h = self.embed(x)  # (B, L) -> (B, T=L, C)
        else:
            pad = None
            h = self.embed(x).flatten(2).transpose(1, 2)  # (B, C, L/p) or (B, C, H/p, W/p) -> (B, T, C)
        if self.cls is not None:
            h = torch.cat([self.cls.expand(h.shape[0], -1, -1), h], dim=1)  # (B, 1 + T, C)
            if pad is not None:
                pad = torch.cat([torch.zeros_like(pad[:, :1]), pad], dim=1)  # [CLS] is never padding
        h = self.drop(h + self.pos[:, : h.shape[1]])  # (B, T, C)
        return h, pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, pad = self._tokens(x)  # (B, T, C), (B, T)
        for block in self.blocks:
            h = block(h, pad)  # (B, T, C)
        h = self.ln_f(h)
        if self.cls is not None:
            pooled = h[:, 0]  # the [CLS] token: (B, C)
        elif pad is None:
            pooled = h.mean(dim=1)  # (B, C)
        else:
            keep = (~pad).unsqueeze(-1).to(h.dtype)  # (B, T, 1): 1 at real tokens
            pooled = (h * keep).sum(dim=1) / keep.sum(dim=1).clamp(min=1.0)  # (B, C); all-pad rows give 0
        return self.head(pooled)  # (B, num_outputs)

    @torch.no_grad()
    def attention_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Each layer's attention weights for x, [(B, heads, T, T)] * num_layers, computed in
        eval mode (no dropout) without gradients; T counts [CLS] (position 0) when pool=cls.
        Row i gives how much token i reads each token; keys that are padding get 0."""
        was_training = self.training
        self.eval()
        try:
            h, pad = self._tokens(x)
            maps = []
            for block in self.blocks:
                maps.append(block.weights(h, pad))  # (B, nh, T, T)
                h = block(h, pad)
            return maps
        finally:
            self.train(was_training)
