"""Text corpora for language modelling: windows of token ids, split by contiguous segments.

    nnlab-train data=python_docs task=language_model model=gpt
    nnlab-train data=text data.dataset.path=book.txt task=language_model model=gpt

How a text becomes rows, and why:
  1. The text is cut into `segments` contiguous pieces of equal length (in characters), and whole
     pieces go to train, validation and test, drawn at random with `seed` (one piece each at the
     least). Splitting windows at random instead would put the neighbours of every test window,
     which share most of its text, in training: the test loss would measure memory, not modelling.
  2. The tokenizer is fitted on the training pieces only (`nnlab.data.tokenizers`), so with
     characters a symbol seen only in test text is UNK, as it would be for new text.
  3. Each piece is tokenized and cut into windows of block_size + 1 tokens, `stride` tokens apart
     (default block_size: consecutive windows share one token); x = window[:-1] and y = window[1:],
     so y[:, t] is the token after x[:, t]. A smaller stride makes more, overlapping training
     windows (validation and test windows never overlap, so each token is scored once). Up to
     block_size tokens at the end of each piece are left over.

`ArrayDataset.val_mask` and `test_mask` carry the split, which the DataModule uses as it is
(its val_fraction and test_fraction are unused), and `chars_per_token` (training characters per
training token) turns nats per token into bits per character, comparable across tokenizers.
"""

from __future__ import annotations

import codecs
import logging
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from nnlab.data.arrays import ArrayDataset
from nnlab.data.tokenizers import check_options as check_tokenizer_options
from nnlab.data.tokenizers import fit_tokenizer
from nnlab.errors import ConfigValueError, UserError, check_range

log = logging.getLogger(__name__)


def python_docs(
    block_size: int = 128,
    tokenizer: str = "char",
    vocab_size: int = 512,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    segments: int = 100,
    stride: int | None = None,
    seed: int = 0,
    dedupe: bool = True,
) -> ArrayDataset:
    """The Python documentation's topics as a language-modelling corpus (~465,000 characters).

    The text is `pydoc_data.topics.topics`, which every CPython install ships for `help()`: about
    80 reference sections of English prose with code in it (the language reference's chapters on
    statements, operators, data model...), joined in sorted order by blank lines. Nothing is
    downloaded. With characters, its ~100 distinct symbols make a vocabulary of ~105.

    dedupe: keep each paragraph only where it first appears (~374,000 characters are left). The
        topics overlap: "specialnames" holds "customization" and "attribute-access", "if" and
        "else" are the same text, and 39% of the 64-character pieces of the whole text occur twice
        or more (3% after deduplication). A paragraph in both a training and a test segment would
        be scored as memory, not modelling: a char 6-gram model scores ~1.73 bits per character
        on the validation windows of the full text, ~1.85 on the deduplicated one.

    The other arguments are those of `text_file` (path and encoding aside).
    """
    _check_options(block_size, tokenizer, vocab_size, val_fraction, test_fraction, segments, stride)
    try:
        from pydoc_data.topics import topics
    except ImportError:
        raise UserError(
            "data=python_docs reads the Python documentation's topics from the standard library module "
            "pydoc_data, which this Python lacks (some Linux distributions and slim container images strip it). "
            "Use a Python from python.org, conda or uv, or train on a text file of your own: data=text "
            "data.dataset.path=<file.txt>."
        ) from None
    seen: set[str] = set()
    parts = []
    for key in sorted(topics):
        paragraphs = topics[key].strip("\n").split("\n\n")
        if dedupe:
            paragraphs = [p for p in paragraphs if not (p.strip() and p in seen)]
            seen.update(paragraphs)
        parts.append("\n\n".join(paragraphs))
    text = "\n\n".join(p for p in parts if p)
    return language_model_windows(
        text,
        "pydoc_data.topics",
        block_size,
        tokenizer,
        vocab_size,
        val_fraction,
        test_fraction,
        segments,
        stride,
        seed,
    )


def text_file(
    path: str | None = None,
    block_size: int = 128,
    tokenizer: str = "char",
    vocab_size: int = 512,
    encoding: str = "utf-8",
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    segments: int = 100,
    stride: int | None = None,
    seed: int = 0,
) -> ArrayDataset:
    """Any plain-text file as a language-modelling corpus: x, y int64 (N, block_size).

    path: the text file; a relative path starts in the directory nnlab-train was started from.
    block_size: tokens a model sees at once (its context); each row predicts block_size tokens.
    tokenizer: "char" (one token per character) or "bpe" (byte-level BPE; `nnlab.data.tokenizers`).
    vocab_size: BPE's vocabulary, PAD and UNK included (>= 258); unused by "char".
    encoding: the file's text encoding: utf-8, utf-8-sig (with a byte-order mark), latin-1, cp1252...
    val_fraction, test_fraction: shares of the segments held out for validation and test (each
        rounded to whole segments, at least one).
    segments: contiguous pieces the text is cut into before the split; more pieces give each split
        a more varied sample of the text, but every piece loses up to block_size tokens at its end,
        and each must hold a window: the text needs >= segments x (block_size + 1) tokens.
    stride: tokens between the starts of consecutive training windows, 1 to block_size (default
        block_size). Half of block_size doubles the training windows, each token then being
        predicted from two different amounts of context.
    seed: which segments go to which split. Kept fixed (not the run's seed) in the configs, so
        that every run is scored on the same text.

    Line ends are read as "\\n" whatever the file uses; a UTF-8 byte-order mark is dropped.
    """
    _check_options(block_size, tokenizer, vocab_size, val_fraction, test_fraction, segments, stride)
    if path is None:
        raise UserError(
            "data=text needs a text file: add data.dataset.path=<file.txt> to the command line "
            "(data=python_docs needs none: it reads the Python documentation)."
        )
    text = read_text(path, encoding)
    return language_model_windows(
        text, str(path), block_size, tokenizer, vocab_size, val_fraction, test_fraction, segments, stride, seed
    )


def language_model_windows(
    text: str,
    source: str,
    block_size: int,
    tokenizer: str,
    vocab_size: int,
    val_fraction: float,
    test_fraction: float,
    segments: int,
    stride: int | None,
    seed: int,
) -> ArrayDataset:
    """`text` cut into segments, split, tokenized and windowed, as the module docstring describes."""
    _check_options(block_size, tokenizer, vocab_size, val_fraction, test_fraction, segments, stride)
    need = segments * (block_size + 1)
    shorten = (
        "Lower data.dataset.block_size or data.dataset.segments (each of the segments must hold a window of "
        "block_size + 1 tokens), or use a longer text."
    )
    if len(text) < need:
        raise UserError(
            f"{source} has {len(text):,} characters: too short for data.dataset.segments={segments} segments of "
            f"at least data.dataset.block_size + 1 = {block_size + 1} tokens each, which needs at least {need:,} "
            f"characters (more with tokenizer=bpe, whose tokens are several characters). {shorten}"
        )
    # The split: whole segments, drawn at random (test first, then val), at least one each.
    n_test = max(1, round(test_fraction * segments))
    n_val = max(1, round(val_fraction * segments))
    if n_test + n_val >= segments:
        raise ConfigValueError(
            f"data.dataset.val_fraction={val_fraction} and data.dataset.test_fraction={test_fraction} of "
            f"data.dataset.segments={segments} leave no segment for training ({n_val} val + {n_test} test, at least "
            "one each). Raise data.dataset.segments or lower the fractions."
        )
    split = np.zeros(segments, dtype=np.int64)  # 0 train, 1 val, 2 test
    order = np.random.default_rng(seed).permutation(segments)
    split[order[:n_test]] = 2
    split[order[n_test : n_test + n_val]] = 1
    bounds = np.linspace(0, len(text), segments + 1).round().astype(np.int64)
    pieces = [text[a:b] for a, b in zip(bounds[:-1], bounds[1:])]

    tok = fit_tokenizer(tokenizer, [p for p, s in zip(pieces, split) if s == 0], vocab_size)
    windows: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    train_chars = train_tokens = 0
    for piece, s in zip(pieces, split):
        ids = np.asarray(tok.encode(piece), dtype=np.int64)
        if s == 0:
            train_chars, train_tokens = train_chars + len(piece), train_tokens + len(ids)
        if len(ids) < block_size + 1:
            continue
        step = (stride or block_size) if s == 0 else block_size
        w = sliding_window_view(ids, block_size + 1)[::step]  # (n, block_size + 1)
        windows.append(w)
        labels.append(np.full(len(w), s))
    split_of_row = np.concatenate(labels) if labels else np.zeros(0, dtype=np.int64)
    chars_per_token = train_chars / max(train_tokens, 1)
    for s, name in enumerate(("training", "validation", "test")):
        if not (split_of_row == s).any():
            per_piece = len(text) / segments / chars_per_token
            raise UserError(
                f"{source}: no {name} segment holds a window of data.dataset.block_size + 1 = {block_size + 1} "
                f"tokens: the {segments} segments have about {per_piece:.0f} tokens each "
                f"({chars_per_token:.2f} characters per token with tokenizer={tokenizer}), so the text needs at "
                f"least ~{need * chars_per_token:,.0f} characters. {shorten}"
            )
    rows = np.concatenate(windows)
    counts = [int((split_of_row == s).sum()) for s in range(3)]
    log.info(
        "%s: %d characters, %s tokenizer with %d tokens (%.2f characters per token); %d windows of %d tokens: "
        "%d train / %d val / %d test, from %d / %d / %d segments",
        source,
        len(text),
        tokenizer,
        tok.vocab_size,
        chars_per_token,
        len(rows),
        block_size,
        *counts,
        segments - n_val - n_test,
        n_val,
        n_test,
    )
    return ArrayDataset(
        rows[:, :-1],
        rows[:, 1:],
        "language_model",
        val_mask=split_of_row == 1,
        test_mask=split_of_row == 2,
        tokenizer=tok,
        chars_per_token=chars_per_token,
        source=source,
    )


def read_text(path: str | Path, encoding: str, key: str = "data.dataset.path") -> str:
    """The text of the file at `path` (named `key` in the config), line ends as "\\n", with one
    paragraph that names the file and the fix when it is missing, empty or not in `encoding`."""
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise ConfigValueError(
            f"data.dataset.encoding={encoding!r} is not a text encoding Python knows. Common ones: utf-8, "
            "utf-8-sig (UTF-8 with a byte-order mark), latin-1, cp1252 (Windows), utf-16."
        ) from None
    file = Path(path)
    if not file.is_file():
        what = "is a folder, not a file" if file.is_dir() else "does not exist"
        raise UserError(
            f"{key}={str(path)!r}: {file.resolve()} {what}. Relative paths start in the directory nnlab-train "
            f"was started from ({Path.cwd()})."
        )
    data = file.read_bytes()
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise UserError(
            f"{file} is not {encoding} text: the bytes {data[e.start : e.end + 3]!r} on line {line} (byte "
            f"{e.start:,}) do not decode. Set data.dataset.encoding to the file's encoding: latin-1 (reads any "
            "bytes; right for most Western European files), cp1252 (Windows), utf-8-sig (UTF-8 with a byte-order "
            "mark); or save the file as UTF-8."
        ) from None
    text = text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    if not text.strip():
        what = "is empty" if not data else "holds only white space"
        raise UserError(f"{file.resolve()} {what}: there is no text to learn from. Point {key} at a file with text.")
    return text


def _check_options(
    block_size: int,
    tokenizer: str,
    vocab_size: int,
    val_fraction: float,
    test_fraction: float,
    segments: int,
    stride: int | None,
) -> None:
    """Options wrong whatever the text, checked before any file is read."""
    check_range("data.dataset.block_size", block_size, 1)
    check_tokenizer_options(tokenizer, vocab_size)
    check_range("data.dataset.val_fraction", val_fraction, 0.0, 1.0, low_inclusive=False, high_inclusive=False)
    check_range("data.dataset.test_fraction", test_fraction, 0.0, 1.0, low_inclusive=False, high_inclusive=False)
    check_range("data.dataset.segments", segments, 3)
    if stride is not None:
        check_range("data.dataset.stride", stride, 1, block_size)
