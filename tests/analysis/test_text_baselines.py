"""nnlab.analysis.text_baselines: the Kneser-Ney n-gram model is a proper distribution and beats
lower orders on real text; the bag of n-grams classifies words by language well above chance."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from nnlab.analysis.text_baselines import NGramModel, bag_of_words, best_ngram
from nnlab.data.text import python_docs
from nnlab.data.text_classify import word_language
from nnlab.data.tokenizers import PAD


def splits(ds) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    train = ~(ds.val_mask | ds.test_mask)
    return {name: (ds.x[m], ds.y[m]) for name, m in (("train", train), ("val", ds.val_mask), ("test", ds.test_mask))}


def random_rows(vocab: int, n: int, t: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of a Markov chain over tokens 1..vocab-1 (PAD never occurs), as (x, y = x shifted)."""
    rng = np.random.default_rng(seed)
    seq = np.zeros((n, t + 1), dtype=np.int64)
    seq[:, 0] = rng.integers(1, vocab, n)
    for j in range(1, t + 1):  # the next token is often the previous + 1: some structure to learn
        step = np.where(rng.random(n) < 0.6, 1, rng.integers(0, vocab, n))
        seq[:, j] = (seq[:, j - 1] + step - 1) % (vocab - 1) + 1
    return seq[:, :-1], seq[:, 1:]


@pytest.fixture(scope="module")
def docs() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    ds = python_docs()
    return {**splits(ds), "vocab_size": ds.vocab_size}


@pytest.mark.parametrize("order", [1, 2, 3, 5])
def test_probabilities_sum_to_one_over_the_vocabulary(order: int) -> None:
    x, y = random_rows(vocab=7, n=40, t=12, seed=0)
    model = NGramModel(order, 7).fit(x, y)
    contexts = [[3], [3, 4], [1, 2, 3, 4, 5, 6], [6, 6, 6, 6], [PAD, 5], [2, 2, 2, 2, 2, 2, 2]]  # seen, unseen, short
    for context in contexts:
        p = model.probabilities(context)
        assert p.shape == (7,) and (p > 0).all()
        assert p.sum() == pytest.approx(1.0, abs=1e-12)


def test_scores_are_the_probabilities_of_the_targets() -> None:
    x, y = random_rows(vocab=7, n=40, t=12, seed=0)
    model = NGramModel(3, 7).fit(x, y)
    xv, yv = random_rows(vocab=7, n=3, t=12, seed=1)
    expected = [-math.log(model.probabilities(xv[r, : t + 1])[yv[r, t]]) for r in range(3) for t in range(12)]
    assert model.nats_per_token(xv, yv) == pytest.approx(np.mean(expected), rel=1e-12)
    padded_x = np.concatenate([xv, np.zeros((3, 4), dtype=np.int64)], axis=1)
    padded_y = np.concatenate([yv, np.zeros((3, 4), dtype=np.int64)], axis=1)
    assert model.nats_per_token(padded_x, padded_y) == pytest.approx(model.nats_per_token(xv, yv))  # PAD: no target


def test_a_unigram_on_uniform_tokens_costs_log_v() -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(1, 9, (200, 50))
    model = NGramModel(1, 9).fit(x, x)
    assert model.nats_per_token(x, x) == pytest.approx(math.log(8), abs=0.01)  # 8 tokens used of 9


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="outside 0 .. 6"):
        NGramModel(2, 7).fit(np.array([[1, 7]]), np.array([[7, 1]]))
    with pytest.raises(ValueError, match="same shape"):
        NGramModel(2, 7).fit(np.array([[1, 2]]), np.array([[1]]))
    with pytest.raises(RuntimeError, match="fit"):
        NGramModel(2, 7).nats_per_token(np.array([[1, 2]]), np.array([[2, 3]]))


def test_longer_contexts_predict_the_python_docs_better(docs) -> None:
    """Bits per character of the char n-grams on the validation windows: ~4.7 for a unigram,
    ~2.7 for a trigram, ~1.85 for a 6-gram; fitting ~300,000 tokens takes a fraction of a second."""
    vocab = docs["vocab_size"]
    bits = {}
    for order in (1, 3, 6):
        start = time.perf_counter()
        model = NGramModel(order, vocab).fit(*docs["train"])
        assert time.perf_counter() - start < 3.0
        bits[order] = model.nats_per_token(*docs["val"]) / math.log(2)  # char: one character per token
    assert 4.4 < bits[1] < 5.0
    assert bits[6] < bits[3] < bits[1] - 1.5
    assert 1.6 < bits[6] < 2.1


def test_best_ngram_picks_the_order_on_validation(docs) -> None:
    order, model = best_ngram(*docs["train"], *docs["val"], docs["vocab_size"], orders=(1, 2, 3, 4, 5, 6))
    assert order == 6 and model.order == 6
    assert model.nats_per_token(*docs["test"]) / math.log(2) < 2.0


def test_best_ngram_returns_the_lowest_validation_loss() -> None:
    x, y = random_rows(vocab=7, n=60, t=12, seed=0)
    xv, yv = random_rows(vocab=7, n=20, t=12, seed=1)
    order, model = best_ngram(x, y, xv, yv, 7, orders=(1, 2, 3))
    losses = {k: NGramModel(k, 7).fit(x, y).nats_per_token(xv, yv) for k in (1, 2, 3)}
    assert order == min(losses, key=losses.get) and model.nats_per_token(xv, yv) == losses[order]


def test_bag_of_words_tells_languages_apart_deterministically() -> None:
    data = splits(word_language(languages=("en", "de", "fr"), words_per_language=600))
    first = bag_of_words(data["train"], {"val": data["val"], "test": data["test"]})
    second = bag_of_words(data["train"], {"val": data["val"], "test": data["test"]})
    assert first["test"] > 0.6  # chance: 1/3
    assert {k: v for k, v in first.items() if k != "fit_seconds"} == {
        k: v for k, v in second.items() if k != "fit_seconds"
    }
    assert first["fit_seconds"] > 0


@pytest.mark.slow
def test_bag_of_words_on_the_default_word_language() -> None:
    data = splits(word_language())
    scores = bag_of_words(data["train"], {"val": data["val"], "test": data["test"]})
    assert scores["test"] > 0.75  # ~80%; chance ~17%
