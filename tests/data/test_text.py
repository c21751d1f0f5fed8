"""nnlab.data.text and text_classify: language-model windows split by whole segments, text files
and CSVs with their errors, and the word-language set. Files are written in tmp_path; nothing is
downloaded (pydoc_data ships with Python, wordfreq's lists with the package)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest

from nnlab.data.arrays import ArrayDataset
from nnlab.data.text import language_model_windows, python_docs, text_file
from nnlab.data.text_classify import pad_rows, text_csv, word_language
from nnlab.data.tokenizers import PAD, UNK, BPETokenizer
from nnlab.errors import ConfigValueError, UserError

SEGMENTS, BLOCK = 10, 8


def random_text(n: int, seed: int = 0, letters: str = "abcdefghijklmnopqrstuvwxyz") -> str:
    """Text in which every 9-character piece is (almost surely) found once: windows map to offsets."""
    rng = np.random.default_rng(seed)
    return "".join(np.array(list(letters))[rng.integers(0, len(letters), n)])


def windows(text: str, **kw) -> ArrayDataset:
    args = dict(block_size=BLOCK, tokenizer="char", vocab_size=512, val_fraction=0.1, test_fraction=0.2)
    args.update(segments=SEGMENTS, stride=None, seed=0)
    args.update(kw)
    return language_model_windows(text, "test text", **args)


def split_of(ds: ArrayDataset) -> np.ndarray:
    return np.where(ds.test_mask, 2, np.where(ds.val_mask, 1, 0))


def segment_of_rows(ds: ArrayDataset, text: str) -> np.ndarray:
    """The segment each row's window was cut from, found by looking the window up in the text."""
    seg_len = len(text) / SEGMENTS
    starts = [text.find(ds.tokenizer.decode(x) + ds.tokenizer.decode(y[-1:])) for x, y in zip(ds.x, ds.y)]
    assert min(starts) >= 0
    return (np.array(starts) // seg_len).astype(int)


# ---------------------------------------------------------------------------- LM windows
def test_windows_are_next_token_pairs_cut_from_the_text() -> None:
    text = random_text(2000)
    ds = windows(text)
    assert ds.kind == "language_model" and ds.x.dtype == np.int64 and ds.x.shape == ds.y.shape == (len(ds.x), BLOCK)
    assert (ds.x[:, 1:] == ds.y[:, :-1]).all()  # y is x shifted by one token
    assert ds.chars_per_token == 1.0 and ds.vocab_size == 26 + 2
    segment_of_rows(ds, text)  # every window (and its last target) is a piece of the text


def test_segments_go_whole_to_one_split_at_least_one_each() -> None:
    text = random_text(2000)
    ds = windows(text)
    split, segment = split_of(ds), segment_of_rows(ds, text)
    for s in np.unique(segment):
        assert len(set(split[segment == s])) == 1, f"segment {s} is in two splits"
    per_split = [set(segment[split == k]) for k in range(3)]
    assert [len(p) for p in per_split] == [7, 1, 2]  # 10 segments: 0.2 -> 2 test, 0.1 -> 1 val
    assert not (ds.val_mask & ds.test_mask).any()
    # Non-overlapping windows: a segment of 200 characters holds 24 windows of 8 + 1, 8 apart.
    assert np.bincount(segment).tolist() == [24] * SEGMENTS


def test_the_split_is_seeded() -> None:
    text = random_text(2000)
    a, b, c = windows(text, seed=1), windows(text, seed=1), windows(text, seed=2)
    assert (a.x == b.x).all() and (a.val_mask == b.val_mask).all() and (a.test_mask == b.test_mask).all()
    assert not ((a.val_mask == c.val_mask).all() and (a.test_mask == c.test_mask).all())


def test_the_tokenizer_sees_the_training_segments_only() -> None:
    text = random_text(2000)
    test_segment = int(segment_of_rows(windows(text), text)[windows(text).test_mask][0])
    start = test_segment * 200 + 50
    marked = text[:start] + "Z" + text[start + 1 :]  # a character only a test segment has
    ds = windows(marked)
    assert "Z" not in ds.tokenizer.chars and ds.vocab_size == 26 + 2
    assert (ds.x[ds.test_mask] == UNK).any() and not (ds.x[~ds.test_mask] == UNK).any()


def test_a_smaller_stride_adds_training_windows_only() -> None:
    text = random_text(2000)
    base, dense = windows(text), windows(text, stride=BLOCK // 2)
    assert dense.val_mask.sum() == base.val_mask.sum() and dense.test_mask.sum() == base.test_mask.sum()
    train = ~(base.val_mask | base.test_mask)
    dense_train = ~(dense.val_mask | dense.test_mask)
    assert dense_train.sum() == 7 * 48  # (200 - 9) // 4 + 1 windows per training segment
    assert train.sum() == 7 * 24


def test_bpe_windows_count_several_characters_per_token() -> None:
    text = ("the quick brown fox jumps over the lazy dog. " * 10 + "\n") * 10
    ds = windows(text, tokenizer="bpe", vocab_size=300)
    assert isinstance(ds.tokenizer, BPETokenizer) and ds.chars_per_token > 2
    assert ds.tokenizer.decode(ds.x[0]) in text


def test_python_docs_is_the_deduplicated_pydoc_corpus() -> None:
    start = time.perf_counter()
    ds = python_docs()
    assert time.perf_counter() - start < 2.0
    assert ds.source == "pydoc_data.topics" and ds.x.shape[1] == 128
    assert ds.val_mask.sum() > 200 and ds.test_mask.sum() > 200 and (~(ds.val_mask | ds.test_mask)).sum() > 2000
    assert 90 < ds.vocab_size < 120  # the characters of English prose and code
    assert ds.tokenizer.decode(ds.x[0]).startswith('The "assert" statement')
    assert len(python_docs(dedupe=False).x) > len(ds.x) * 1.2  # ~465,000 vs ~374,000 characters


# ----------------------------------------------------------------------------- text files
def test_text_file_reads_a_file_with_crlf_and_a_bom(tmp_path: Path) -> None:
    path = tmp_path / "book.txt"
    text = random_text(2000)
    path.write_bytes(("\ufeff" + text[:1000] + "\r\n" + text[1000:]).encode("utf-8"))
    ds = text_file(str(path), block_size=BLOCK, segments=SEGMENTS)
    assert ds.source == str(path) and "\r" not in ds.tokenizer.chars and "\ufeff" not in ds.tokenizer.chars


def test_text_file_errors_name_the_file_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="data.dataset.path=<file.txt>"):
        text_file(None)
    with pytest.raises(UserError, match="missing.txt.*does not exist"):
        text_file(str(tmp_path / "missing.txt"))
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    with pytest.raises(UserError, match="empty.txt is empty"):
        text_file(str(empty))
    blank = tmp_path / "blank.txt"
    blank.write_text(" \n\n\t ")
    with pytest.raises(UserError, match="blank.txt holds only white space"):
        text_file(str(blank))
    latin = tmp_path / "latin.txt"
    latin.write_bytes(("line one\ncafé crème " * 300).encode("latin-1"))
    with pytest.raises(
        UserError, match=r"latin.txt is not utf-8 text.*line 2.*data.dataset.encoding.*latin-1.*utf-8-sig"
    ):
        text_file(str(latin), block_size=BLOCK, segments=SEGMENTS)
    assert "é" in text_file(str(latin), block_size=BLOCK, segments=SEGMENTS, encoding="latin-1").tokenizer.chars
    with pytest.raises(ConfigValueError, match="data.dataset.encoding='utf-9' is not a text encoding"):
        text_file(str(latin), encoding="utf-9")
    short = tmp_path / "short.txt"
    short.write_text("too short for the defaults")
    with pytest.raises(UserError, match=r"short.txt has 26 characters.*at least 12,900 characters.*block_size"):
        text_file(str(short))  # 100 segments x (128 + 1)
    with pytest.raises(ConfigValueError, match="data.dataset.tokenizer='words'"):
        text_file(str(short), tokenizer="words")
    with pytest.raises(ConfigValueError, match="data.dataset.stride=200 is out of range"):
        text_file(str(short), stride=200)


def test_a_bpe_text_too_short_for_its_windows_says_how_much_is_needed(tmp_path: Path) -> None:
    path = tmp_path / "words.txt"
    path.write_text("the cat sat on the mat. " * 60)  # 1,440 characters, enough for 10 x 51 characters
    # ... but not for 10 x 51 BPE tokens of ~5 characters each
    with pytest.raises(UserError, match=r"no .* segment holds a window.*characters per token.*at least ~"):
        text_file(str(path), block_size=50, segments=SEGMENTS, tokenizer="bpe", vocab_size=300)


# ------------------------------------------------------------------------------ text CSVs
def write(path: Path, text: str, encoding: str = "utf-8") -> str:
    path.write_bytes(text.encode(encoding))
    return str(path)


def reviews(n: int = 30) -> str:
    rows = [f'"review {i}, {"great fun" if i % 2 else "dull and slow"}",{"pos" if i % 2 else "neg"}' for i in range(n)]
    return "text,label\n" + "\n".join(rows) + "\n"


def test_text_csv_rows_are_padded_ids_with_a_stratified_split(tmp_path: Path) -> None:
    ds = text_csv(write(tmp_path / "r.csv", reviews(40)), max_len=20)
    assert ds.kind == "classification" and ds.class_names == ["neg", "pos"]
    assert ds.x.shape == (40, 20) and ds.x.dtype == np.int64
    assert ds.val_mask.sum() == 4 and ds.test_mask.sum() == 8  # 10% and 20% of each class of 20
    for mask in (ds.val_mask, ds.test_mask):
        assert np.bincount(ds.y[mask]).tolist() == [mask.sum() // 2] * 2
    assert ds.tokenizer.decode(ds.x[0]) == "review 0, dull and sl"[:20]  # cut to max_len
    long = text_csv(write(tmp_path / "r.csv", reviews(40)), max_len=40)
    assert (long.x[0, len("review 0, dull and slow") :] == PAD).all()  # padded on the right


def test_text_csv_fits_the_tokenizer_on_training_rows_only(tmp_path: Path) -> None:
    ds = text_csv(write(tmp_path / "r.csv", reviews(40)))
    test_row = int(np.flatnonzero(ds.test_mask)[0])
    csv = reviews(40).splitlines()
    csv[test_row + 1] = csv[test_row + 1].replace("review", "revieW")  # W only in a test row
    ds = text_csv(write(tmp_path / "r.csv", "\n".join(csv)))
    assert "W" not in ds.tokenizer.chars and (ds.x[test_row] == UNK).sum() == 1


def test_text_csv_errors_name_the_file_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="missing.csv.*does not exist"):
        text_csv(str(tmp_path / "missing.csv"))
    with pytest.raises(UserError, match=r"empty.csv is empty"):
        text_csv(write(tmp_path / "empty.csv", ""))
    with pytest.raises(UserError, match=r"header.csv has a header line but no rows"):
        text_csv(write(tmp_path / "header.csv", "text,label\n\n"))
    with pytest.raises(UserError, match=r"no column 'text' \(data.dataset.text_column\).*header names: review, label"):
        text_csv(write(tmp_path / "cols.csv", "review,label\nnice,pos\n"))
    with pytest.raises(UserError, match=r"no column 'Label' \(data.dataset.label_column\).*Did you mean 'label'"):
        text_csv(write(tmp_path / "cols.csv", "text,label\nnice,pos\n"), label_column="Label")
    with pytest.raises(UserError, match=r"text column 'text' is empty on line\(s\) 3"):
        text_csv(write(tmp_path / "blank.csv", 'text,label\nnice,pos\n" ",neg\n'))
    with pytest.raises(UserError, match=r"label column 'stars' \(data.dataset.label_column\) has the single value"):
        text_csv(write(tmp_path / "one.csv", "text,stars\n" + "nice,5\n" * 10), label_column="stars")
    with pytest.raises(UserError, match=r"ragged.csv, line 3: 3 fields.*Quote a text that contains a comma"):
        text_csv(write(tmp_path / "ragged.csv", "text,label\nnice,pos\nnice, but slow,neg\n"))
    with pytest.raises(UserError, match=r"is not utf-8 text.*data.dataset.encoding.*latin-1"):
        text_csv(write(tmp_path / "latin.csv", reviews(20).replace("great", "très"), encoding="latin-1"))
    assert text_csv(write(tmp_path / "latin.csv", reviews(20).replace("great", "très"), "latin-1"), encoding="latin-1")
    with pytest.raises(UserError, match=r"validation split of the 3 rows is empty.*data.dataset.val_fraction"):
        text_csv(write(tmp_path / "tiny.csv", "text,label\na,x\nb,y\nc,x\n"))


def test_pad_rows_cuts_and_pads() -> None:
    x, cut = pad_rows([[5, 6, 7], [8]], 2)
    assert x.tolist() == [[5, 6], [8, PAD]] and cut == 1


# -------------------------------------------------------------------------- word language
@pytest.fixture(scope="module")
def words() -> ArrayDataset:
    return word_language()


def decoded(ds: ArrayDataset) -> list[str]:
    return [ds.tokenizer.decode(row) for row in ds.x]


def test_word_language_loads_quickly_with_one_class_per_word(words: ArrayDataset) -> None:
    start = time.perf_counter()
    again = word_language()
    assert time.perf_counter() - start < 2.0
    assert (again.x == words.x).all() and (again.y == words.y).all() and (again.test_mask == words.test_mask).all()
    assert words.class_names == ["en", "de", "fr", "es", "it", "nl"] and words.x.shape[1] == 16
    classes: dict[str, set[int]] = {}
    for word, label in zip(decoded(words), words.y):
        classes.setdefault(word, set()).add(int(label))
    assert all(len(c) == 1 for c in classes.values())  # no word in two classes
    assert not {"in", "a", "de", "die"} & set(classes)  # found in several lists: dropped
    assert {"would", "und", "très", "también", "gli", "het"} <= set(classes)
    assert min(len(w) for w in classes) >= 2 and not any(c.isdigit() for w in classes for c in w)


def test_word_language_split_is_stratified(words: ArrayDataset) -> None:
    counts = np.bincount(words.y)
    assert counts.min() > 2000  # ~2,200-2,500 of 3,000 words remain per language
    for mask, share in ((words.val_mask, 0.1), (words.test_mask, 0.2)):
        assert np.abs(np.bincount(words.y[mask]) - share * counts).max() <= 1


def test_word_language_errors_list_the_languages() -> None:
    with pytest.raises(ConfigValueError, match=r"names 'english'.*Choose from: .*\ben\b"):
        word_language(languages=["english", "de"])
    with pytest.raises(ConfigValueError, match="two or more different"):
        word_language(languages=["en", "en"])


# ------------------------------------------------------------------------ missing packages
def test_missing_packages_say_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pydoc_data.topics", None)  # as if the distribution stripped it
    with pytest.raises(UserError, match="pydoc_data, which this Python lacks.*data=text"):
        python_docs()
    monkeypatch.setitem(sys.modules, "wordfreq", None)
    with pytest.raises(UserError, match='wordfreq package, which is not installed: pip install "nnlab\\[text\\]"'):
        word_language()
    monkeypatch.setitem(sys.modules, "tokenizers", None)
    with pytest.raises(UserError, match='tokenizers package, which is not installed: pip install "nnlab\\[text\\]"'):
        windows(random_text(2000), tokenizer="bpe", vocab_size=300)
