"""nnlab.models.gpt: a causal language model whose logits at t never see the tokens after t, whose
attention maps are lower-triangular, that generates reproducibly, and that refuses data it
cannot model with a message that names the way out."""

from __future__ import annotations

import math

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from helpers import CONFIG_DIR
from nnlab.errors import ConfigValueError, DataMismatchError
from nnlab.models.gpt import GPT

VOCAB, BLOCK = 13, 12
TINY = {"d_model": 16, "num_heads": 2, "num_layers": 2, "mlp_ratio": 2}


def gpt(**kwargs) -> GPT:
    torch.manual_seed(0)
    return GPT((BLOCK,), VOCAB, vocab_size=VOCAB, **{**TINY, **kwargs})


def ids(batch: int = 2, length: int = BLOCK, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


def test_forward_gives_next_token_logits_and_every_weight_learns() -> None:
    model = gpt().train()
    x = ids()
    logits = model(x)
    assert logits.shape == (2, BLOCK, VOCAB)
    torch.nn.functional.cross_entropy(logits.flatten(0, 1), ids(seed=1).flatten()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"{name} gets no gradient"
    assert model(x[:, :5]).shape == (2, 5, VOCAB)  # shorter than the context is fine


@pytest.mark.parametrize("t", [0, 4, BLOCK - 2])
def test_logits_at_t_do_not_see_later_tokens(t: int) -> None:
    model = gpt(dropout=0.0).eval()
    x = ids()
    changed = x.clone()
    changed[:, t + 1 :] = (changed[:, t + 1 :] + 1) % VOCAB
    before, after = model(x), model(changed)
    assert torch.allclose(before[:, : t + 1], after[:, : t + 1], atol=1e-5)
    assert not torch.allclose(before[:, t + 1 :], after[:, t + 1 :], atol=1e-5)


def test_a_sequence_longer_than_the_context_is_refused() -> None:
    with pytest.raises(ValueError, match=f"longer than its context of {BLOCK}"):
        gpt()(ids(length=BLOCK + 1))


def test_attention_maps_are_causal_and_normalized() -> None:
    model = gpt().train()
    maps = model.attention_maps(ids(length=7))
    assert model.training  # restored
    assert len(maps) == 2
    for m in maps:
        assert m.shape == (2, 2, 7, 7) and not m.requires_grad
        assert torch.allclose(m.sum(-1), torch.ones(2, 2, 7), atol=1e-5)
        assert torch.all(m.triu(diagonal=1) == 0)  # lower-triangular
        assert torch.allclose(m[..., 0, 0], torch.ones(2, 2))  # the first token can only read itself


def test_weight_tying_shares_one_tensor() -> None:
    tied, untied = gpt(), gpt(tie_weights=False)
    assert tied.lm_head.weight is tied.wte.weight
    assert untied.lm_head.weight is not untied.wte.weight
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731 (parameters() lists a shared one once)
    assert count(untied) - count(tied) == VOCAB * TINY["d_model"]


def test_init_scales_the_residual_projections_down() -> None:
    """GPT-2's init: N(0, 0.02), and 0.02 / sqrt(2 * layers) for the layers that end a residual branch."""
    model = GPT((64,), 512, vocab_size=512, d_model=64, num_heads=4, num_layers=8)
    assert model.wte.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert model.blocks[0].mlp[0].weight.std().item() == pytest.approx(0.02, rel=0.05)
    for layer in (model.blocks[0].attn.proj, model.blocks[0].mlp[2]):
        assert layer.weight.std().item() == pytest.approx(0.02 / math.sqrt(16), rel=0.1)
        assert torch.all(layer.bias == 0)


# ---- generate ------------------------------------------------------------------------------------


def test_generate_appends_tokens_and_crops_the_context() -> None:
    model = gpt().train()
    prompt = ids(length=BLOCK + 3)  # longer than the context: only the last BLOCK are read
    out = model.generate(prompt, 5, generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, BLOCK + 8) and out.dtype == torch.long
    assert torch.equal(out[:, : BLOCK + 3], prompt)
    assert out.min() >= 0 and out.max() < VOCAB
    assert model.training  # restored after sampling in eval mode
    assert model.generate(prompt, 0).shape == prompt.shape


def test_greedy_is_deterministic_and_top_k_1_is_greedy() -> None:
    model = gpt()
    prompt = ids(length=3)
    greedy = model.generate(prompt, 6, temperature=0)
    assert torch.equal(model.generate(prompt, 6, temperature=0), greedy)
    top1 = model.generate(prompt, 6, temperature=1.0, top_k=1, generator=torch.Generator().manual_seed(1))
    assert torch.equal(top1, greedy)
    # Greedy picks the argmax of the last position, one token at a time.
    assert torch.equal(greedy[:, 3], model.eval()(prompt)[:, -1].argmax(-1))


def test_a_seeded_generator_reproduces_a_sample() -> None:
    model = gpt()
    prompt = ids(length=2)
    a = model.generate(prompt, 8, temperature=1.5, generator=torch.Generator().manual_seed(3))
    b = model.generate(prompt, 8, temperature=1.5, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


@pytest.mark.parametrize(
    "kwargs, key", [({"temperature": -1.0}, "temperature"), ({"top_k": 0}, "top_k"), ({"max_new_tokens": -1}, "max")]
)
def test_generate_bad_values_name_the_argument(kwargs: dict, key: str) -> None:
    with pytest.raises(ConfigValueError, match=key):
        gpt().generate(ids(length=2), **{"max_new_tokens": 2, **kwargs})


# ---- errors and the config -----------------------------------------------------------------------


@pytest.mark.parametrize("input_shape", [(1, 8, 8), (1, 40), (10,)])
def test_numeric_data_is_refused_with_the_text_datasets_named(input_shape: tuple) -> None:
    with pytest.raises(DataMismatchError) as info:
        GPT(input_shape, 10)
    message = str(info.value)
    assert message.startswith("The GPT needs token data") and str(input_shape) in message
    assert "data=python_docs" in message and "data=text" in message


def test_a_classification_of_token_sequences_is_refused() -> None:
    with pytest.raises(DataMismatchError) as info:
        GPT((BLOCK,), 2, vocab_size=VOCAB)
    message = str(info.value)
    assert f"{VOCAB} tokens" in message and "2 outputs" in message and "model=transformer" in message


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"d_model": 18, "num_heads": 4}, "model.d_model=18 is not divisible by model.num_heads=4"),
        ({"num_layers": 0}, "model.num_layers"),
        ({"dropout": -0.1}, "model.dropout"),
    ],
)
def test_bad_values_name_the_key(kwargs: dict, key: str) -> None:
    with pytest.raises(ConfigValueError, match=key):
        GPT((BLOCK,), VOCAB, vocab_size=VOCAB, **kwargs)


def test_the_config_builds_a_gpt_for_token_data() -> None:
    cfg = OmegaConf.load(CONFIG_DIR / "model" / "gpt.yaml")
    model = instantiate(cfg, input_shape=(BLOCK,), num_outputs=VOCAB, vocab_size=VOCAB)
    assert isinstance(model, GPT) and model.lm_head.weight is model.wte.weight
    assert model(ids()).shape == (2, BLOCK, VOCAB)
