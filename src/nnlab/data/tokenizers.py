"""Text to token ids and back: characters, or byte-level BPE (Hugging Face `tokenizers`).

A tokenizer is fitted on the training text only, so that nothing about the validation and test
text (not even which characters it holds) leaks into the model. Two ids are reserved in both
kinds: PAD = 0 pads short rows (the loss ignores it) and UNK = 1 stands for what the vocabulary
lacks. Every tokenizer has the same small surface:

    kind          "char" or "bpe"
    vocab_size    ids run from 0 to vocab_size - 1
    encode(text)  -> list[int]
    decode(ids)   -> str (PAD is skipped)
    to_dict()     -> a JSON-able dict; `from_dict` rebuilds the tokenizer from it

Which to choose:
  - char: one id per character; the vocabulary is the training text's distinct characters
    (~100 for English prose), every id is a meaningful unit, and a model's loss per token is its
    loss per character. Sequences are long (a 128-token window is one paragraph).
  - bpe: byte-pair encoding (Sennrich et al., 2016) as GPT-2 does it: the text is split at spaces
    and punctuation, each piece is written as bytes, and the most frequent adjacent pair of
    symbols is merged into a new one, again and again, until the vocabulary has `vocab_size`
    entries. Frequent words become one token, rare ones a few pieces; since all 256 byte values
    are in the vocabulary, any text encodes (no UNK) and decodes back exactly. A window of 128
    tokens covers ~2x (vocab 512) to ~4x (vocab 4096) more text than characters do.

A run folder keeps the tokenizer as JSON (`save`); `from_dict` is the gate such a file passes
through: it checks the structure strictly and builds nothing but these two classes (no pickle,
no eval), so a tokenizer.json from elsewhere can do no more than fail to load.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

from nnlab.errors import OptionError, UserError, check_choice

PAD = 0  # padding: fills rows shorter than the model's length; never a target
UNK = 1  # unknown: a character the training text did not have
PAD_TOKEN, UNK_TOKEN = "<pad>", "<unk>"  # their names inside a BPE vocabulary
KINDS = ("char", "bpe")

MAX_CHARS = 1_000_000  # characters in a char vocabulary (Unicode has ~150,000 assigned)
MAX_BPE_JSON = 50_000_000  # characters of a BPE tokenizer's JSON (a 50k-token GPT-2 one is ~1.4M)
MAX_BPE_VOCAB = 1_000_000
MIN_BPE_VOCAB = 256 + 2  # the 256 byte values plus PAD and UNK
INSTALL = 'pip install "nnlab[text]"'


class Tokenizer(Protocol):
    """What datasets, tasks and run folders use of a tokenizer."""

    kind: str

    @property
    def vocab_size(self) -> int: ...

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Iterable[int]) -> str: ...

    def to_dict(self) -> dict[str, Any]: ...


class CharTokenizer:
    """One id per character: PAD = 0, UNK = 1, then the training text's characters, sorted."""

    kind = "char"

    def __init__(self, chars: Sequence[str]) -> None:
        self.chars = list(chars)
        if len(set(self.chars)) != len(self.chars) or any(len(c) != 1 for c in self.chars):
            raise ValueError("a char tokenizer needs distinct single characters")
        self._ids = {c: i + 2 for i, c in enumerate(self.chars)}

    @classmethod
    def fit(cls, texts: Iterable[str]) -> CharTokenizer:
        """The vocabulary of `texts` (the training text only): its distinct characters, sorted."""
        seen: set[str] = set()
        for text in texts:
            seen.update(text)
        return cls(sorted(seen))

    @property
    def vocab_size(self) -> int:
        return len(self.chars) + 2

    def encode(self, text: str) -> list[int]:
        """One id per character; a character the training text did not have becomes UNK."""
        get = self._ids.get
        return [get(c, UNK) for c in text]

    def decode(self, ids: Iterable[int]) -> str:
        """The characters of `ids`: PAD is skipped, UNK shows as the replacement character."""
        out = []
        for i in ids:
            i = int(i)
            if i == PAD:
                continue
            if not 0 <= i < self.vocab_size:
                raise ValueError(f"token id {i} is outside this tokenizer's vocabulary (0 to {self.vocab_size - 1})")
            out.append("\ufffd" if i == UNK else self.chars[i - 2])
        return "".join(out)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "char", "chars": list(self.chars)}

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size})"


class BPETokenizer:
    """Byte-level BPE (GPT-2's scheme) on Hugging Face `tokenizers`, with PAD = 0 and UNK = 1.

    The pieces are cut by GPT-2's pattern (a word with its leading space, a run of digits, of
    punctuation, of spaces), so merges never cross a word boundary; `decode(encode(t)) == t` for
    any text t. The strings "<pad>" and "<unk>" in a text are encoded as text, not as PAD or UNK.
    """

    kind = "bpe"

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        # Not saved in the JSON: set on every instance, so a text that contains "<pad>" stays text.
        self.tokenizer.encode_special_tokens = True

    @classmethod
    def fit(cls, texts: Iterable[str], vocab_size: int) -> BPETokenizer:
        """Learn merges on `texts` (the training text only) until there are `vocab_size` tokens
        (fewer when the text runs out of pairs to merge). `vocab_size` >= 258: the 256 bytes + 2."""
        if vocab_size < MIN_BPE_VOCAB:
            raise ValueError(f"vocab_size={vocab_size}: byte-level BPE needs at least {MIN_BPE_VOCAB}")
        hf = _hf_tokenizers()
        tokenizer = hf.Tokenizer(hf.models.BPE())
        tokenizer.pre_tokenizer = hf.pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = hf.decoders.ByteLevel()
        trainer = hf.trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=[PAD_TOKEN, UNK_TOKEN],  # added first, in this order: ids 0 and 1
            initial_alphabet=hf.pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes: any text encodes
            show_progress=False,
        )
        tokenizer.train_from_iterator(texts, trainer=trainer)
        return cls(tokenizer)

    @property
    def vocab_size(self) -> int:
        return int(self.tokenizer.get_vocab_size())

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: Iterable[int]) -> str:
        """The text of `ids`; PAD and UNK are skipped (UNK never comes out of `encode`)."""
        ids = [int(i) for i in ids]
        for i in ids:
            if not 0 <= i < self.vocab_size:
                raise ValueError(f"token id {i} is outside this tokenizer's vocabulary (0 to {self.vocab_size - 1})")
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "bpe", "tokenizer": self.tokenizer.to_str()}

    def __repr__(self) -> str:
        return f"BPETokenizer(vocab_size={self.vocab_size})"


def fit_tokenizer(kind: str, texts: Iterable[str], vocab_size: int) -> CharTokenizer | BPETokenizer:
    """A tokenizer of `kind` ("char" or "bpe") fitted on `texts`, the training text only.

    vocab_size: BPE's vocabulary size, PAD and UNK included (>= 258); ignored by "char", whose
    vocabulary is the text's distinct characters.
    """
    check_options(kind, vocab_size)
    if kind == "char":
        return CharTokenizer.fit(texts)
    return BPETokenizer.fit(texts, vocab_size)


def check_options(kind: str, vocab_size: int) -> None:
    """Raise `OptionError` naming data.dataset.tokenizer or data.dataset.vocab_size when they
    cannot work whatever the text: checked before a file is read."""
    check_choice("data.dataset.tokenizer", kind, KINDS)
    if kind == "bpe" and vocab_size < MIN_BPE_VOCAB:
        raise OptionError(
            f"data.dataset.vocab_size={vocab_size} is too small for data.dataset.tokenizer=bpe: byte-level BPE "
            f"starts from the 256 byte values plus PAD and UNK, so it needs at least {MIN_BPE_VOCAB} (512 to 8192 "
            "is usual). Raise it, or set data.dataset.tokenizer=char for a vocabulary of characters."
        )


def from_dict(d: object) -> CharTokenizer | BPETokenizer:
    """Rebuild a tokenizer from `to_dict()`'s output, checking every field first.

    Raises ValueError, saying what is wrong, for anything but {"kind": "char", "chars": [distinct
    1-character strings]} or {"kind": "bpe", "tokenizer": <JSON of a byte-level BPE with <pad>
    at id 0 and <unk> at id 1>}, within the size limits above.
    """
    if not isinstance(d, dict):
        raise ValueError(f"a tokenizer must be a JSON object with a 'kind', not {type(d).__name__}")
    kind = d.get("kind")
    if kind == "char":
        _expect_keys(d, {"kind", "chars"})
        return CharTokenizer(_check_chars(d["chars"]))
    if kind == "bpe":
        _expect_keys(d, {"kind", "tokenizer"})
        return BPETokenizer(_check_bpe(d["tokenizer"]))
    raise ValueError(f"unknown tokenizer kind {_short(kind)}: expected 'char' or 'bpe'")


def save(tokenizer: Tokenizer, path: str | Path) -> None:
    """Write `tokenizer.to_dict()` as JSON to `path`, atomically: a crash leaves the old file or
    the new one, never half of one."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(tokenizer.to_dict(), f, ensure_ascii=False)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load(path: str | Path) -> CharTokenizer | BPETokenizer:
    """The tokenizer saved at `path` by `save`, through `from_dict`'s checks (ValueError when the
    file is not one)."""
    path = Path(path)
    if path.stat().st_size > MAX_BPE_JSON * 2:  # JSON-escaped text can be twice its characters
        raise ValueError(f"{path} is {path.stat().st_size:,} bytes: too large for a tokenizer")
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise ValueError(f"{path} is not a tokenizer's JSON: {e}") from None
    return from_dict(d)


def _check_chars(chars: object) -> list[str]:
    if not isinstance(chars, list):
        raise ValueError(f"a char tokenizer's 'chars' must be a list of characters, not {type(chars).__name__}")
    if len(chars) > MAX_CHARS:
        raise ValueError(f"a char tokenizer's 'chars' has {len(chars):,} entries; at most {MAX_CHARS:,} are allowed")
    for i, c in enumerate(chars):
        if not isinstance(c, str) or len(c) != 1:
            raise ValueError(f"a char tokenizer's chars[{i}] = {_short(c)} is not a single character")
    if len(set(chars)) != len(chars):
        repeated = next(c for i, c in enumerate(chars) if c in chars[:i])
        raise ValueError(f"a char tokenizer's 'chars' lists {repeated!r} twice; each character must be listed once")
    return chars


def _check_bpe(payload: object) -> Any:
    """The Hugging Face tokenizer of a BPE payload, after checking that it is exactly the kind
    `BPETokenizer.fit` makes (so no other normalizer or pattern runs on a user's text)."""
    if not isinstance(payload, str):
        raise ValueError(f"a bpe tokenizer's 'tokenizer' must be a JSON string, not {type(payload).__name__}")
    if len(payload) > MAX_BPE_JSON:
        raise ValueError(f"a bpe tokenizer's JSON has {len(payload):,} characters; at most {MAX_BPE_JSON:,} allowed")
    try:
        spec = json.loads(payload)
    except (json.JSONDecodeError, RecursionError) as e:
        raise ValueError(f"a bpe tokenizer's 'tokenizer' is not valid JSON: {e}") from None
    if not isinstance(spec, dict):
        raise ValueError("a bpe tokenizer's 'tokenizer' must hold a JSON object")
    expected = {"model": "BPE", "pre_tokenizer": "ByteLevel", "decoder": "ByteLevel"}
    for part, wanted in expected.items():
        got = spec.get(part)
        if not isinstance(got, dict) or got.get("type") != wanted:
            found = got.get("type") if isinstance(got, dict) else got
            raise ValueError(f"a bpe tokenizer's {part} must be {wanted}, not {_short(found)}")
    for part in ("normalizer", "post_processor", "truncation", "padding"):
        if spec.get(part) is not None:
            raise ValueError(f"a bpe tokenizer must have no {part}; this one has {_short(spec[part])}")
    hf = _hf_tokenizers()
    try:
        tokenizer = hf.Tokenizer.from_str(payload)
    except Exception as e:  # the Rust parser's errors are plain Exceptions
        raise ValueError(f"a bpe tokenizer's JSON does not parse as a tokenizer: {e}") from None
    if tokenizer.get_vocab_size() > MAX_BPE_VOCAB:
        raise ValueError(
            f"a bpe tokenizer's vocabulary has {tokenizer.get_vocab_size():,} tokens; at most {MAX_BPE_VOCAB:,} allowed"
        )
    if tokenizer.token_to_id(PAD_TOKEN) != PAD or tokenizer.token_to_id(UNK_TOKEN) != UNK:
        raise ValueError(f"a bpe tokenizer must have {PAD_TOKEN} at id {PAD} and {UNK_TOKEN} at id {UNK}")
    return tokenizer


def _expect_keys(d: dict, keys: set[str]) -> None:
    if set(d) != keys:
        extra, missing = sorted(map(str, set(d) - keys)), sorted(keys - set(d))
        what = "; ".join(
            p for p in (f"unexpected {extra}" if extra else "", f"missing {missing}" if missing else "") if p
        )
        raise ValueError(f"a {d['kind']} tokenizer has exactly the keys {sorted(keys)}: {what}")


def _short(value: object, n: int = 60) -> str:
    """A short repr of `value`: a hostile file may hold a megabyte where a name should be."""
    if isinstance(value, (list, dict)):
        return f"a {type(value).__name__} of {len(value)} entries"
    text = repr(value[:n] if isinstance(value, str) else value)
    return text if len(text) <= n else text[: n - 3] + "..."


def _hf_tokenizers() -> Any:
    try:
        import tokenizers
    except ImportError:
        raise UserError(
            f"data.dataset.tokenizer=bpe needs the Hugging Face tokenizers package, which is not installed: {INSTALL} "
            "(or choose data.dataset.tokenizer=char, which needs nothing)."
        ) from None
    return tokenizers
