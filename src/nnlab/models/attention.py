"""Blocks shared by the attention models (`nnlab.models.transformer`, `nnlab.models.gpt`):
multi-head self-attention, the pre-norm Transformer block, sinusoidal positions, and GPT-2's
weight initialization.

Self-attention lets every position read every other in one step. Each token x_i (a d_model
vector) is projected to a query q_i, a key k_i and a value v_i; position i's output is the
average of the values, weighted by how well its query matches each key:

    Attention(Q, K, V) = softmax(Q K^T / sqrt(d_head)) V

The 1 / sqrt(d_head) keeps the dot products at unit variance whatever the head size, so the
softmax does not saturate at the start of training. Multi-head attention splits d_model into
`num_heads` heads of d_head = d_model / num_heads features, each with its own attention pattern
(one head may follow the previous token, another the matching bracket), and concatenates them.

Two masks decide which keys a query may read: `causal` (position i reads positions <= i only,
so a language model cannot peek at the token it must predict) and a key padding mask (nobody
reads a padding token, so padding a sequence does not change what its real tokens compute).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# The token id that pads text sequences (on the right) to a common length; 1 is "unknown".
PAD = 0


def sinusoidal_positions(length: int, dim: int) -> torch.Tensor:
    """The fixed positions of "Attention is all you need" (Vaswani et al., 2017), (length, dim):

        PE[p, 2i] = sin(p / 10000^(2i / dim)),   PE[p, 2i + 1] = cos(p / 10000^(2i / dim))

    Each pair of features is a clock at its own frequency, from one turn per 2*pi positions down
    to one per 10000 * 2*pi, so every position gets a distinct code, and PE[p + k] is a fixed
    rotation of PE[p]: relative offsets are easy for attention to read. Nothing to learn, and it
    is defined for any length (learned positions only for the lengths seen in training).
    """
    position = torch.arange(length, dtype=torch.float32)[:, None]  # (length, 1)
    frequency = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))  # (ceil(dim/2),)
    angles = position * frequency  # (length, ceil(dim/2))
    pe = torch.zeros(length, dim)
    pe[:, 0::2] = torch.sin(angles)
    pe[:, 1::2] = torch.cos(angles[:, : dim // 2])  # an odd dim has one sine more than cosines
    return pe


def allowed_keys(T: int, device: torch.device, pad_mask: torch.Tensor | None, causal: bool) -> torch.Tensor | None:
    """Which keys each query may read, as a bool mask broadcastable to (B, heads, T, T), True = read;
    None when every query reads every key.

    pad_mask is (B, T), True at padding tokens: no query reads them. A query always reads itself,
    so a row is never empty (a softmax over nothing is NaN): a padding query then reads only
    itself and the real tokens, and its output is never used. Tensor operations only, no Python
    branch on values, so the model stays traceable (torch.onnx.export).
    """
    if pad_mask is None and not causal:
        return None
    allowed = torch.ones(T, T, dtype=torch.bool, device=device)
    if causal:
        allowed = torch.tril(allowed)  # query i reads keys 0..i
    if pad_mask is not None:
        diagonal = torch.eye(T, dtype=torch.bool, device=device)
        allowed = (allowed & ~pad_mask[:, None, None, :]) | diagonal  # (B, 1, T, T)
    return allowed


class SelfAttention(nn.Module):
    """Multi-head self-attention through `torch.nn.functional.scaled_dot_product_attention`
    (which picks a fused kernel, e.g. FlashAttention on a GPU, when the mask allows one).

    Args:
        d_model: features per token; split into num_heads heads of d_model / num_heads.
        num_heads: attention patterns computed side by side.
        dropout: probability of dropping an attention weight, and the output (before the
            residual sum), in training.
        causal: position i attends to positions <= i only (decoders, language models).
    """

    def __init__(self, d_model: int, num_heads: int, dropout: float = 0.0, causal: bool = False) -> None:
        super().__init__()
        self.num_heads, self.dropout, self.causal = num_heads, dropout, causal
        self.qkv = nn.Linear(d_model, 3 * d_model)  # queries, keys and values of all heads in one matmul
        self.proj = nn.Linear(d_model, d_model)  # mixes the heads back into d_model features
        self.out_dropout = nn.Dropout(dropout)

    def _heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)  # 3 x (B, T, C)
        # (B, T, C) -> (B, T, nh, hs) -> (B, nh, T, hs)
        return tuple(t.view(B, T, self.num_heads, C // self.num_heads).transpose(1, 2) for t in (q, k, v))

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, T, C); pad_mask: (B, T) bool, True at padding tokens (None: no padding)."""
        B, T, C = x.shape
        q, k, v = self._heads(x)  # (B, nh, T, hs)
        # Without padding, a causal mask need not be built: the fused kernels apply it themselves.
        mask = allowed_keys(T, x.device, pad_mask, self.causal) if pad_mask is not None else None
        y = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=self.causal and pad_mask is None,
        )  # (B, nh, T, hs)
        y = y.transpose(1, 2).reshape(B, T, C)  # heads side by side again: (B, T, C)
        return self.out_dropout(self.proj(y))  # (B, T, C)

    @torch.no_grad()
    def weights(self, x: torch.Tensor, pad_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The attention weights softmax(Q K^T / sqrt(d_head)) that `forward` applies to x, for
        visualisation: (B, heads, T, T), row i the weights query i gives each key (each row sums
        to 1; masked keys get 0). Computed explicitly (the fused kernel does not return them),
        without dropout."""
        T = x.shape[1]
        q, k, _ = self._heads(x)  # (B, nh, T, hs)
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, nh, T, T)
        mask = allowed_keys(T, x.device, pad_mask, self.causal)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        return scores.softmax(dim=-1)  # (B, nh, T, T)


class Block(nn.Module):
    """The pre-norm Transformer block (GPT-2, ViT):

        x = x + Attention(LayerNorm(x))
        x = x + MLP(LayerNorm(x)),    MLP = Linear(d, mlp_ratio * d) -> GELU -> Linear(mlp_ratio * d, d)

    Normalizing each branch's input (rather than the sum, as the original post-norm Transformer
    did) leaves an identity path from input to output, so deep stacks train without a warm-up.
    Attention moves information between positions; the MLP then transforms each position alone.

    Args:
        d_model: features per token.
        num_heads: attention heads; must divide d_model.
        mlp_ratio: the MLP's hidden width as a multiple of d_model (4 in GPT-2 and ViT).
        dropout: on the attention weights and each branch's output, in training.
        causal: attend to earlier positions only.
    """

    def __init__(
        self, d_model: int, num_heads: int, mlp_ratio: int = 4, dropout: float = 0.0, causal: bool = False
    ) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = SelfAttention(d_model, num_heads, dropout, causal)
        self.ln2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, mlp_ratio * d_model),
            nn.GELU(),
            nn.Linear(mlp_ratio * d_model, d_model),  # the residual projection (see init_gpt)
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), pad_mask)  # (B, T, C)
        return x + self.mlp(self.ln2(x))  # (B, T, C)

    def weights(self, x: torch.Tensor, pad_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The attention weights of this block for its input x: (B, heads, T, T)."""
        return self.attn.weights(self.ln1(x), pad_mask)


def init_gpt(model: nn.Module, num_layers: int, std: float = 0.02) -> None:
    """GPT-2's initialization (as in nanoGPT): every Linear and Embedding weight ~ N(0, std^2),
    biases 0, and the two projections that end a residual branch (attention's `proj`, the MLP's
    last Linear) scaled down to std / sqrt(2 * num_layers). Each block adds two branches to the
    residual stream, so without the scaling its variance would grow with depth. LayerNorms keep
    scale 1 and shift 0; an Embedding's padding row stays 0."""
    for module in model.modules():
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0.0, std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, 0.0, std)
            if module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()
    for module in model.modules():
        if isinstance(module, Block):
            nn.init.normal_(module.attn.proj.weight, 0.0, std / math.sqrt(2 * num_layers))
            nn.init.normal_(module.mlp[2].weight, 0.0, std / math.sqrt(2 * num_layers))
