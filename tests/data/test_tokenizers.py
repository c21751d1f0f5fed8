"""nnlab.data.tokenizers: round trips, fitting on training text only, and the strict `from_dict`
gate a run folder's tokenizer.json passes through."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nnlab.data import tokenizers as tok_module
from nnlab.data.tokenizers import (
    PAD,
    UNK,
    BPETokenizer,
    CharTokenizer,
    fit_tokenizer,
    from_dict,
    load,
    save,
)
from nnlab.errors import ConfigValueError

TRAIN = "the cat sat on the mat. the dog sat on the log.\n" * 20


@pytest.fixture(scope="module")
def bpe() -> BPETokenizer:
    return BPETokenizer.fit([TRAIN], vocab_size=300)


# ------------------------------------------------------------------------------------ char
def test_char_vocabulary_is_the_sorted_training_characters_after_pad_and_unk() -> None:
    tok = CharTokenizer.fit(["cab", "ba"])
    assert tok.chars == ["a", "b", "c"] and tok.vocab_size == 5
    assert tok.encode("abc") == [2, 3, 4]
    assert tok.decode(tok.encode("cabbage"[:5])) == "cabba"


def test_char_unseen_character_is_unk_and_decodes_as_replacement() -> None:
    tok = CharTokenizer.fit(["ab"])
    assert tok.encode("aZb") == [2, UNK, 3]
    assert tok.decode([PAD, 2, UNK, 3, PAD]) == "a\ufffdb"  # PAD skipped
    with pytest.raises(ValueError, match="outside"):
        tok.decode([tok.vocab_size])


def test_char_round_trips_through_dict_and_file(tmp_path: Path) -> None:
    tok = CharTokenizer.fit(["héllo wörld\n\t漢"])
    again = from_dict(json.loads(json.dumps(tok.to_dict())))
    assert isinstance(again, CharTokenizer) and again.chars == tok.chars
    path = tmp_path / "tokenizer.json"
    save(tok, path)
    assert load(path).encode("wörld漢") == tok.encode("wörld漢")
    assert [p.name for p in tmp_path.iterdir()] == ["tokenizer.json"]  # no temporary file left


# ------------------------------------------------------------------------------------- bpe
def test_bpe_reserves_pad_and_unk_and_round_trips_any_text(bpe: BPETokenizer) -> None:
    assert bpe.tokenizer.token_to_id("<pad>") == PAD and bpe.tokenizer.token_to_id("<unk>") == UNK
    assert 258 <= bpe.vocab_size <= 300
    for text in (TRAIN, "unseen: ünïcødé 漢字 \r\n\t  ", "a literal <pad> and <unk> stay text"):
        ids = bpe.encode(text)
        assert PAD not in ids and UNK not in ids
        assert bpe.decode(ids) == text
    assert len(bpe.encode("the cat sat on the mat.")) < len("the cat sat on the mat.")  # merges learnt


def test_bpe_fit_is_deterministic_and_survives_its_dict(bpe: BPETokenizer, tmp_path: Path) -> None:
    assert BPETokenizer.fit([TRAIN], vocab_size=300).to_dict() == bpe.to_dict()
    path = tmp_path / "tokenizer.json"
    save(bpe, path)
    again = load(path)
    assert isinstance(again, BPETokenizer)
    text = "the <pad> dog"
    assert again.encode(text) == bpe.encode(text) and again.decode(again.encode(text)) == text


def test_fit_tokenizer_names_the_key_and_the_fix() -> None:
    with pytest.raises(ConfigValueError, match="data.dataset.tokenizer='word'.*char, bpe"):
        fit_tokenizer("word", [TRAIN], 512)
    with pytest.raises(ConfigValueError, match=r"data.dataset.vocab_size=100 .*at least 258.*tokenizer=char"):
        fit_tokenizer("bpe", [TRAIN], 100)
    assert isinstance(fit_tokenizer("char", [TRAIN], 0), CharTokenizer)  # vocab_size unused by char


# ------------------------------------------------------------------------- the from_dict gate
@pytest.mark.parametrize(
    "payload, message",
    [
        ([], "JSON object"),
        ("char", "JSON object"),
        (None, "JSON object"),
        ({"kind": "pickle", "chars": ["a"]}, "unknown tokenizer kind 'pickle'"),
        ({"chars": ["a"]}, "unknown tokenizer kind None"),
        ({"kind": "char"}, "missing \\['chars'\\]"),
        ({"kind": "char", "chars": ["a"], "code": "import os"}, "unexpected \\['code'\\]"),
        ({"kind": "char", "chars": "abc"}, "must be a list"),
        ({"kind": "char", "chars": ["a", 7]}, r"chars\[1\] = 7 is not a single character"),
        ({"kind": "char", "chars": ["a", "bc"]}, r"chars\[1\] = 'bc' is not a single character"),
        ({"kind": "char", "chars": ["a", ""]}, r"chars\[1\] = '' is not a single character"),
        ({"kind": "char", "chars": ["a", ["b"]]}, r"chars\[1\] = a list of 1 entries"),
        ({"kind": "char", "chars": ["a", "b", "a"]}, "lists 'a' twice"),
        ({"kind": "bpe", "tokenizer": {"model": {}}}, "must be a JSON string"),
        ({"kind": "bpe", "tokenizer": "{not json"}, "not valid JSON"),
        ({"kind": "bpe", "tokenizer": "[1, 2]"}, "JSON object"),
        ({"kind": "bpe", "tokenizer": "[" * 100_000 + "]" * 100_000}, "not valid JSON"),
    ],
)
def test_from_dict_rejects_bad_payloads(payload: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        from_dict(payload)


def test_from_dict_rejects_a_huge_char_list() -> None:
    with pytest.raises(ValueError, match="at most 1,000,000"):
        from_dict({"kind": "char", "chars": ["a"] * (tok_module.MAX_CHARS + 1)})


def test_from_dict_cuts_a_huge_value_in_its_message() -> None:
    with pytest.raises(ValueError) as info:
        from_dict({"kind": "x" * 10_000_000})
    assert len(str(info.value)) < 200


def test_from_dict_rejects_bpe_payloads_other_than_what_fit_makes(
    bpe: BPETokenizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = json.loads(bpe.to_dict()["tokenizer"])

    def with_(**changes: object) -> dict:
        return {"kind": "bpe", "tokenizer": json.dumps({**good, **changes})}

    assert isinstance(from_dict(with_()), BPETokenizer)
    with pytest.raises(ValueError, match="normalizer"):
        from_dict(with_(normalizer={"type": "Lowercase"}))
    with pytest.raises(ValueError, match="model must be BPE, not 'WordPiece'"):
        from_dict(with_(model={**good["model"], "type": "WordPiece"}))
    with pytest.raises(ValueError, match="pre_tokenizer must be ByteLevel"):
        from_dict(with_(pre_tokenizer={"type": "Split", "pattern": {"Regex": "(a+)+$"}, "behavior": "Isolated"}))
    swapped = {**good["model"]["vocab"], "<pad>": UNK, "<unk>": PAD}
    with pytest.raises(ValueError, match="<pad> at id 0"):
        from_dict(with_(model={**good["model"], "vocab": swapped}, added_tokens=[]))
    with pytest.raises(ValueError, match="does not parse"):
        from_dict(with_(model={**good["model"], "vocab": "not a mapping"}))
    monkeypatch.setattr(tok_module, "MAX_BPE_JSON", 1000)
    with pytest.raises(ValueError, match="at most 1,000 allowed"):
        from_dict(bpe.to_dict())


def test_load_rejects_a_file_that_is_not_json(tmp_path: Path) -> None:
    path = tmp_path / "tokenizer.json"
    path.write_bytes(b"\x80\x81 not text")
    with pytest.raises(ValueError, match="not a tokenizer's JSON"):
        load(path)
