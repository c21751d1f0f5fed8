"""Baselines a text model must beat: a smoothed n-gram language model and a bag of n-grams.

A network that does not beat counting has learnt nothing counting could not; these give the
figures to compare with, on exactly the rows and predictions the network is scored on:

  - `NGramModel` / `best_ngram`: next-token prediction from the previous order - 1 tokens of the
    same row, in nats per token (divide by ln 2 and by characters per token for bits per
    character). On the Python documentation (data=python_docs, characters) the best order of 1 to
    6 is 6, at ~1.85 bits per character on the validation windows (a unigram: 4.7).
  - `bag_of_words`: logistic regression on counts of token n-grams, the classic strong baseline
    for text classification (Wang & Manning, 2012): ~80% test accuracy on data=word_language.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

import numpy as np

from nnlab.data.tokenizers import PAD


class NGramModel:
    """A token n-gram language model with interpolated Kneser-Ney smoothing.

    P(w | h) for the last n - 1 = order - 1 tokens h of the row (fewer near its start) mixes what
    was seen after h with the model of the shorter context h' (h without its oldest token):

        P(w | h) = max(c(h, w) - D, 0) / c(h)  +  D * N1+(h .) / c(h) * P(w | h')

    where c(h, w) counts w after h, c(h) = sum_w c(h, w), N1+(h .) is the number of distinct words
    seen after h (so D * N1+(h .) / c(h) is exactly the mass the discount freed), and D =
    n1 / (n1 + 2 n2) (Ney et al., 1994; n1, n2: how many n-grams of that order were seen once,
    twice). An unseen context h gets P(w | h'). Below the top order, c counts continuations:
    c(h, w) is the number of distinct tokens seen before "h w" (a row's start counts as one),
    which is Kneser-Ney's point: "Francisco" is frequent but follows one word only, so it should
    get little probability after a new context. The shortest context is mixed with the uniform
    1 / vocab_size, so every token, even one never seen, has a probability above zero, and the
    probabilities sum to 1 over the vocabulary.

    Why Kneser-Ney: among the classic smoothings it gives the lowest perplexity (Chen & Goodman,
    1999); Witten-Bell, simpler, is a few percent worse, and add-one far worse on large vocabularies.

    The prediction task is the neural model's: in a row of x (N, T) with next tokens y (N, T),
    x[r, :t+1] predicts y[r, t], and the n-gram model sees the last order - 1 of those tokens.
    Positions whose target is PAD are not predictions (as in the network's loss), in fitting and
    in scoring. Everything is counted with numpy sorts: fitting a 6-gram on ~460,000 tokens takes
    well under a second.
    """

    def __init__(self, order: int, vocab_size: int) -> None:
        if order < 1 or vocab_size < 1:
            raise ValueError(f"an n-gram model needs order >= 1 and vocab_size >= 1, not {order} and {vocab_size}")
        self.order = int(order)
        self.vocab_size = int(vocab_size)
        self._fitted = False

    def fit(self, x_rows: np.ndarray, y_rows: np.ndarray) -> NGramModel:
        """Count the n-grams of the rows (int arrays (N, T); y[:, t] the token after x[:, t])."""
        history, target = self._events(x_rows, y_rows)
        if len(target) == 0:
            raise ValueError("an n-gram model needs at least one target that is not PAD to fit on")
        V, n = self.vocab_size, self.order
        # Context ids per level k (the last k tokens), as a trie: a context of length k is its
        # parent (the last k - 1 tokens) plus one older token. -1: the row is too short for k.
        self._ctx_keys: list[np.ndarray] = []  # level k >= 1: sorted parent_id * V + token
        ctx = [np.zeros(len(target), dtype=np.int64)]
        for k in range(1, n):
            ok = (ctx[-1] >= 0) & (history[:, k - 1] >= 0)
            keys, inverse = np.unique(ctx[-1][ok] * V + history[ok, k - 1], return_inverse=True)
            ids = np.full(len(target), -1, dtype=np.int64)
            ids[ok] = inverse
            self._ctx_keys.append(keys)
            ctx.append(ids)
        self._pairs: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]] = []
        for k in range(n):
            ok = ctx[k] >= 0
            pair = ctx[k][ok] * V + target[ok]
            if k == n - 1:  # the top order: raw counts
                keys, counts = np.unique(pair, return_counts=True)
            else:  # lower orders: distinct tokens before (context, w); V stands for a row's start
                before = history[ok, k]
                before = np.where(before >= 0, before, V)
                sort = np.lexsort((before, pair))
                pair, before = pair[sort], before[sort]
                new = np.ones(len(pair), dtype=bool)
                new[1:] = (pair[1:] != pair[:-1]) | (before[1:] != before[:-1])
                keys, counts = np.unique(pair[new], return_counts=True)
            n_ctx = 1 if k == 0 else len(self._ctx_keys[k - 1])
            owner = keys // V
            total = np.bincount(owner, weights=counts, minlength=n_ctx)
            types = np.bincount(owner, minlength=n_ctx).astype(np.float64)
            n1, n2 = int((counts == 1).sum()), int((counts == 2).sum())
            discount = n1 / (n1 + 2 * n2) if n1 and n2 else 0.5
            self._pairs.append((keys, counts.astype(np.float64), total, types, float(np.clip(discount, 0.05, 0.95))))
        self._fitted = True
        return self

    def log_probs(self, x_rows: np.ndarray, y_rows: np.ndarray) -> np.ndarray:
        """ln P(y[r, t] | the row's last order - 1 tokens up to x[r, t]), for every target that is
        not PAD, in row-major order."""
        return self._score(*self._events(x_rows, y_rows))

    def nats_per_token(self, x_rows: np.ndarray, y_rows: np.ndarray) -> float:
        """Mean negative log-likelihood of the targets (not PAD), in nats per token: the neural
        model's cross-entropy loss on the same rows. Bits per character: / ln 2 / chars per token."""
        return float(-self.log_probs(x_rows, y_rows).mean())

    def probabilities(self, context: Sequence[int]) -> np.ndarray:
        """P(w | context) for every token w of the vocabulary (PAD included), shape (vocab_size,):
        `context` is the row so far, of which the last order - 1 tokens count."""
        if len(context) == 0:
            raise ValueError("the context needs at least one token (x[r, 0] predicts y[r, 0])")
        x = np.asarray(context, dtype=np.int64)[None, :]
        history = self._history(x)[-1:]  # the last position's
        return np.exp(self._score(np.repeat(history, self.vocab_size, axis=0), np.arange(self.vocab_size)))

    def _score(self, history: np.ndarray, target: np.ndarray) -> np.ndarray:
        """ln P(target | history) of each event, by the recursion in the class docstring."""
        if not self._fitted:
            raise RuntimeError("fit the n-gram model before scoring with it")
        V = self.vocab_size
        prob = np.full(len(target), 1.0 / V)
        ctx = np.zeros(len(target), dtype=np.int64)
        for k in range(self.order):
            if k > 0:  # the context one token longer, if it was ever seen
                ok = (ctx >= 0) & (history[:, k - 1] >= 0)
                ctx = np.where(ok, _lookup(self._ctx_keys[k - 1], ctx * V + history[:, k - 1]), -1)
            ok = ctx >= 0
            if not ok.any():
                break
            keys, counts, total, types, d = self._pairs[k]
            c = ctx[ok]
            found = _lookup(keys, c * V + target[ok])
            seen = np.where(found >= 0, counts[np.maximum(found, 0)], 0.0)
            prob[ok] = (np.maximum(seen - d, 0.0) + d * types[c] * prob[ok]) / total[c]
        return np.log(prob)

    def _history(self, x: np.ndarray) -> np.ndarray:
        """(N * T, order - 1): row [r * T + t, j] is x[r, t - j], the token j steps before the
        prediction's own position, or -1 before the row's start."""
        N, T = x.shape
        history = np.full((N, T, self.order - 1), -1, dtype=np.int64)
        for j in range(self.order - 1):
            history[:, j:, j] = x[:, : T - j]
        return history.reshape(N * T, self.order - 1)

    def _events(self, x_rows: np.ndarray, y_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(history, target) of every prediction whose target is not PAD."""
        x, y = np.asarray(x_rows, dtype=np.int64), np.asarray(y_rows, dtype=np.int64)
        if x.ndim != 2 or x.shape != y.shape:
            raise ValueError(f"x and y must be int arrays of the same shape (N, T), not {x.shape} and {y.shape}")
        for name, a in (("x", x), ("y", y)):
            if a.size and (a.min() < 0 or a.max() >= self.vocab_size):
                raise ValueError(f"{name} holds token ids outside 0 .. {self.vocab_size - 1} (the vocabulary)")
        target = y.reshape(-1)
        keep = target != PAD
        return self._history(x)[keep], target[keep]


def best_ngram(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    vocab_size: int,
    orders: Sequence[int] = (1, 2, 3, 4, 5, 6),
) -> tuple[int, NGramModel]:
    """The order (and its fitted model) with the lowest validation nats per token.

    Longer contexts predict better until their counts get too sparse to trust; where that turns
    depends on the corpus size (~6 for 400k characters, ~3 for 400k BPE tokens), so it is
    chosen on the validation rows rather than fixed.
    """
    if not orders:
        raise ValueError("best_ngram needs at least one order to try")
    best: tuple[float, int, NGramModel] | None = None
    for order in orders:
        model = NGramModel(order, vocab_size).fit(x_train, y_train)
        nats = model.nats_per_token(x_val, y_val)
        if best is None or nats < best[0]:
            best = (nats, order, model)
    return best[1], best[2]


def bag_of_words(
    train: tuple[np.ndarray, np.ndarray],
    evaluate: Mapping[str, tuple[np.ndarray, np.ndarray]],
    ngram_range: tuple[int, int] = (1, 3),
    C: float = 1.0,
    mark_ends: bool = True,
    max_iter: int = 2000,
) -> dict[str, float]:
    """Accuracy of a logistic regression on counts of token n-grams, fitted on `train`.

    train: (x, y): int64 token ids (N, L), padded with PAD (ignored), and class indices (N,).
    evaluate: named (x, y) to score, e.g. {"val": (x_val, y_val), "test": (x_test, y_test)}.
    ngram_range: the n-gram lengths counted, (1, 3): single tokens, pairs and triples.
    C: inverse L2 penalty of scikit-learn's LogisticRegression (lbfgs, deterministic).
    mark_ends: count the start and end of each row as tokens too, so "ends in -ing" is a feature.

    Returns {name: accuracy} for each split of `evaluate`, and "fit_seconds" (the only entry that
    changes between identical calls).
    """
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    def documents(x: np.ndarray) -> list[str]:
        ends = (["<"], [">"]) if mark_ends else ([], [])
        return [" ".join([*ends[0], *(str(i) for i in row if i != PAD), *ends[1]]) for row in np.asarray(x)]

    start = time.perf_counter()
    vectorizer = CountVectorizer(token_pattern=r"\S+", ngram_range=tuple(ngram_range), lowercase=False)
    features = vectorizer.fit_transform(documents(train[0]))
    # One BLAS thread: on a problem this small, threads only wait for each other (lbfgs ran 10x
    # slower with 2 threads on a busy 2-core machine).
    with threadpool_limits(1):
        classifier = LogisticRegression(C=C, max_iter=max_iter).fit(features, np.asarray(train[1]))
    scores = {
        name: float((classifier.predict(vectorizer.transform(documents(x))) == np.asarray(y)).mean())
        for name, (x, y) in evaluate.items()
    }
    scores["fit_seconds"] = time.perf_counter() - start
    return scores


def _lookup(sorted_keys: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """The index of each key in `sorted_keys`, or -1 where it is absent."""
    if len(sorted_keys) == 0:
        return np.full(len(keys), -1, dtype=np.int64)
    idx = np.minimum(np.searchsorted(sorted_keys, keys), len(sorted_keys) - 1)
    return np.where(sorted_keys[idx] == keys, idx, -1)
