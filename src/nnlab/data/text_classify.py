"""Text classification: short texts as rows of token ids, one label each.

    nnlab-train data=word_language model=gru
    nnlab-train data=text_csv data.dataset.path=reviews.csv data.dataset.text_column=review

Each text is tokenized (characters, or byte-level BPE: `nnlab.data.tokenizers`), cut to its first
`max_len` tokens and padded on the right with PAD = 0, so x is int64 (N, max_len) and y the class
index. The split is drawn first (stratified by class, with `seed`) and the tokenizer is fitted on
the training texts only; `ArrayDataset.val_mask` and `test_mask` carry that split to the
DataModule, which uses it as it is, since a tokenizer fitted on all rows would have seen the
test texts.
"""

from __future__ import annotations

import csv as _csv
import io
import logging
from collections import Counter
from collections.abc import Sequence

import numpy as np

from nnlab.data.arrays import ArrayDataset
from nnlab.data.split import ENOUGH_ROWS, split_indices
from nnlab.data.text import read_text
from nnlab.data.tokenizers import INSTALL, PAD, fit_tokenizer
from nnlab.data.tokenizers import check_options as check_tokenizer_options
from nnlab.errors import ConfigValueError, UserError, check_range, did_you_mean

log = logging.getLogger(__name__)

LANGUAGES = ("en", "de", "fr", "es", "it", "nl")


def text_csv(
    path: str | None = None,
    text_column: str = "text",
    label_column: str = "label",
    max_len: int = 64,
    tokenizer: str = "char",
    vocab_size: int = 512,
    encoding: str = "utf-8",
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> ArrayDataset:
    """A CSV file of labelled texts (one row each, with a header line) as a classification set.

    path: the CSV file; a relative path starts in the directory nnlab-train was started from.
    text_column, label_column: the header names of the text and of its label. Labels are read as
        strings; class_names are the distinct labels, sorted.
    max_len: tokens kept per text (the first ones; shorter texts are padded). A char model needs
        the length of a typical text in characters; BPE needs ~3-4x fewer.
    tokenizer, vocab_size: "char" or "bpe" and BPE's vocabulary (>= 258), fitted on training texts.
    encoding: the file's text encoding: utf-8, utf-8-sig, latin-1, cp1252...
    val_fraction, test_fraction: shares of each class held out (stratified, seeded by `seed`).
    """
    _check_options(max_len, tokenizer, vocab_size, val_fraction, test_fraction)
    if path is None:
        raise UserError(
            "data=text_csv needs a CSV file of labelled texts: add data.dataset.path=<file.csv> (and "
            "data.dataset.text_column / data.dataset.label_column when its columns are not 'text' and 'label')."
        )
    texts, labels, lines = _read_csv(str(path), read_text(path, encoding), text_column, label_column)
    class_names = sorted(set(labels))
    if len(class_names) < 2:
        raise UserError(
            f"{path}: the label column '{label_column}' (data.dataset.label_column) has the single value "
            f"{labels[0]!r} in all {len(labels)} rows: nothing to classify. Add rows of other classes, or point "
            "data.dataset.label_column at the column that holds the classes."
        )
    index = {c: k for k, c in enumerate(class_names)}
    y = np.array([index[label] for label in labels], dtype=np.int64)
    return _encode_split(
        texts, y, class_names, str(path), max_len, tokenizer, vocab_size, val_fraction, test_fraction, seed
    )


def word_language(
    languages: Sequence[str] = LANGUAGES,
    words_per_language: int = 3000,
    max_len: int = 16,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> ArrayDataset:
    """Which language is this word? Single words of real word-frequency lists, one class per language.

    The words are the `words_per_language` most frequent of each language in `wordfreq` (Speer,
    2022: frequencies pooled from Wikipedia, subtitles, news, books, web text and Twitter). A
    word in more than one of the chosen lists ("in", "die", "a") is dropped, since it has no single
    answer, and so are one-letter words and words with digits or dots ("z.b", "1er"); what is left
    (~2,200-2,500 of 3,000 per language) keeps its apostrophes and accents. Class counts differ
    a little for that reason; the split is stratified.

    A character model must find the spelling patterns of each language (German "sch", Dutch "ij",
    French "eau", Italian final vowels), which makes this a small, quick test of models over
    sequences of characters: a bag of character n-grams reaches ~80% test accuracy with the
    default six languages (`nnlab.analysis.text_baselines.bag_of_words`), chance is ~17%.

    languages: wordfreq language codes, one class each in this order: e.g. en de fr es it nl pt sv.
    words_per_language: how far down each frequency list to go (rarer words are longer and more
        distinctive, but noisier: names, loanwords).
    max_len: characters kept per word (words are padded with PAD; 16 cuts < 1% of them).
    val_fraction, test_fraction: shares of each language held out (stratified, seeded by `seed`).
    """
    languages = [str(lang) for lang in languages]
    check_range("data.dataset.words_per_language", words_per_language, 10)
    _check_options(max_len, "char", 3, val_fraction, test_fraction)
    try:
        import wordfreq
    except ImportError:
        raise UserError(
            f"data=word_language reads its words from the wordfreq package, which is not installed: {INSTALL}."
        ) from None
    known = sorted(wordfreq.available_languages())
    for lang in languages:
        if lang not in known:
            raise ConfigValueError(
                f"data.dataset.languages names {lang!r}, which wordfreq has no word list for."
                f"{did_you_mean(lang, known)} Choose from: {', '.join(known)}."
            )
    if len(set(languages)) != len(languages) or len(languages) < 2:
        raise ConfigValueError(
            f"data.dataset.languages={languages}: list two or more different language codes, e.g. [en, de, fr]."
        )
    lists = {lang: wordfreq.top_n_list(lang, words_per_language) for lang in languages}
    found_in = Counter(w for words in lists.values() for w in set(words))
    words: list[str] = []
    labels: list[int] = []
    for k, lang in enumerate(languages):
        keep = [w for w in lists[lang] if found_in[w] == 1 and len(w) >= 2 and all(c.isalpha() or c in "'-" for c in w)]
        words += keep
        labels += [k] * len(keep)
    y = np.array(labels, dtype=np.int64)
    log.info(
        "word_language: %d words (%s); %d found in two or more lists were dropped",
        len(words),
        ", ".join(f"{lang} {int((y == k).sum())}" for k, lang in enumerate(languages)),
        sum(n > 1 for n in found_in.values()),
    )
    return _encode_split(words, y, languages, "wordfreq", max_len, "char", 3, val_fraction, test_fraction, seed)


def pad_rows(rows: Sequence[Sequence[int]], max_len: int) -> tuple[np.ndarray, int]:
    """Token id lists -> int64 (N, max_len): each cut to its first max_len ids and padded on the
    right with PAD. Also returns how many rows were cut."""
    x = np.full((len(rows), max_len), PAD, dtype=np.int64)
    cut = 0
    for i, ids in enumerate(rows):
        cut += len(ids) > max_len
        ids = ids[:max_len]
        x[i, : len(ids)] = ids
    return x, cut


def _encode_split(
    texts: list[str],
    y: np.ndarray,
    class_names: list[str],
    source: str,
    max_len: int,
    tokenizer: str,
    vocab_size: int,
    val_fraction: float,
    test_fraction: float,
    seed: int,
) -> ArrayDataset:
    """Split (stratified), fit the tokenizer on the training texts, encode and pad every text."""
    train, val, test = split_indices(y, val_fraction, test_fraction, stratify=True, seed=seed)
    for name, rows, key in (("validation", val, "val_fraction"), ("test", test, "test_fraction")):
        if len(rows) == 0:
            raise UserError(
                f"{source}: the {name} split of the {len(y)} rows is empty: data.dataset.{key} of each class's rows "
                f"rounds to no row. Raise data.dataset.{key}, or add rows: {ENOUGH_ROWS}."
            )
    tok = fit_tokenizer(tokenizer, [texts[i] for i in train], vocab_size)
    ids = [tok.encode(t) for t in texts]
    x, cut = pad_rows(ids, max_len)
    if cut:
        log.info("%s: %d of %d texts cut to data.dataset.max_len=%d tokens", source, cut, len(texts), max_len)
    split = np.zeros(len(y), dtype=np.int64)
    split[val], split[test] = 1, 2
    train_chars = sum(len(texts[i]) for i in train)
    train_tokens = sum(len(ids[i]) for i in train)
    return ArrayDataset(
        x,
        y,
        "classification",
        list(class_names),
        val_mask=split == 1,
        test_mask=split == 2,
        tokenizer=tok,
        chars_per_token=train_chars / max(train_tokens, 1),
        source=source,
    )


def _read_csv(name: str, text: str, text_column: str, label_column: str) -> tuple[list[str], list[str], list[int]]:
    """Texts, labels (stripped of spaces) and each row's line number (the header is line 1)."""
    reader = _csv.reader(io.StringIO(text, newline=""))
    header: list[str] | None = None
    texts: list[str] = []
    labels: list[str] = []
    lines: list[int] = []
    try:
        for fields in reader:
            if len(fields) <= 1 and not "".join(fields).strip():  # a blank line
                continue
            if header is None:
                header = [f.strip() for f in fields]
                columns = ", ".join(header)
                for key, column in (("text_column", text_column), ("label_column", label_column)):
                    if column not in header:
                        raise UserError(
                            f"{name} has no column '{column}' (data.dataset.{key}).{did_you_mean(column, header)} "
                            f"Its header names: {columns}. Set data.dataset.{key} to one of them."
                        )
                t, k = header.index(text_column), header.index(label_column)
                continue
            if len(fields) != len(header):
                raise UserError(
                    f"{name}, line {reader.line_num}: {len(fields)} fields, but the header names {len(header)} "
                    f"columns ({columns}). Quote a text that contains a comma or a line break "
                    '("like, this"), doubling any quote inside it ("say ""hi""").'
                )
            texts.append(fields[t])
            labels.append(fields[k].strip())
            lines.append(reader.line_num)
    except _csv.Error as e:
        raise UserError(f"{name}, line {reader.line_num}: the CSV cannot be parsed ({e}).") from None
    if header is None or not texts:
        raise UserError(
            f"{name} has {'a header line but ' if header else ''}no rows: a text CSV needs a header line naming "
            f"the columns (here '{text_column}' and '{label_column}'), then one line per labelled text."
        )
    for what, values, column in (("text", texts, text_column), ("label", labels, label_column)):
        empty = [line for line, v in zip(lines, values) if not v.strip()]
        if empty:
            shown = ", ".join(map(str, empty[:5])) + (f", ... ({len(empty)} in all)" if len(empty) > 5 else "")
            raise UserError(
                f"{name}: the {what} column '{column}' is empty on line(s) {shown}. Fill them in or delete those rows."
            )
    return texts, labels, lines


def _check_options(max_len: int, tokenizer: str, vocab_size: int, val_fraction: float, test_fraction: float) -> None:
    """Options wrong whatever the data, checked before any file is read."""
    check_range("data.dataset.max_len", max_len, 1)
    check_tokenizer_options(tokenizer, vocab_size)
    check_range("data.dataset.val_fraction", val_fraction, 0.0, 1.0, low_inclusive=False, high_inclusive=False)
    check_range("data.dataset.test_fraction", test_fraction, 0.0, 1.0, low_inclusive=False, high_inclusive=False)
    if val_fraction + test_fraction >= 1.0:
        raise ConfigValueError(
            f"data.dataset.val_fraction={val_fraction} + data.dataset.test_fraction={test_fraction} leave no "
            "training rows: their sum must be below 1."
        )
