"""Tokenizer facts on hand-made tokenizers (facts known by construction) and real vocabularies."""

from __future__ import annotations

import pytest

from ingest.compute.tokenizer_facts import category, compute_token_facts, dominant_script, is_valid_utf8
from ingest.load.models import load
from ingest.load.vocabulary import HFVocabulary
from tests.ingest.handmade import BYTE_CHAR, byte_level_bpe, sentencepiece_bpe, wordpiece_uncased


def facts_by_piece(hf_tokenizer) -> dict[str, dict]:
    columns = compute_token_facts(HFVocabulary(hf_tokenizer))
    return {piece: {name: values[i] for name, values in columns.items()} for i, piece in enumerate(columns["piece"])}


def test_byte_level_bpe_facts():
    hf, _ = byte_level_bpe()
    facts = facts_by_piece(hf)
    assert facts["Ġzz"]["is_unreachable"] and facts["Ġzz"]["unreachable_kind"] == "multi"
    assert facts["Ġzz"]["reencoded_ids"] == " ".join(map(str, hf(" zz", add_special_tokens=False)["input_ids"]))
    partial = facts[BYTE_CHAR[0xE2] + BYTE_CHAR[0x80]]
    assert partial["is_partial_utf8"] and partial["category"] == "partial_utf8" and partial["norm_key"] is None
    assert partial["raw_bytes"] == b"\xe2\x80" and not partial["is_unreachable"]
    assert facts["Ġcat"]["category"] == "normal" and facts["Ġcat"]["raw_bytes"] == b" cat"
    assert facts["Ã©"]["text"] == "é" and not facts["Ã©"]["is_partial_utf8"]
    assert facts["<|eos|>"]["is_special"] and facts["<|eos|>"]["raw_bytes"] is None
    assert facts[BYTE_CHAR[0x00]]["is_byte"] and not facts["a"]["is_byte"]
    assert facts[BYTE_CHAR[0xC3]]["category"] == "partial_utf8"
    assert facts["Ġ"]["is_whitespace"] and facts["Ġ"]["category"] == "whitespace"


def test_sentencepiece_byte_fallback_facts():
    hf, _ = sentencepiece_bpe()
    facts = facts_by_piece(hf)
    assert facts["<0xE2>"]["is_byte"] and facts["<0xE2>"]["is_partial_utf8"] and facts["<0xE2>"]["raw_bytes"] == b"\xe2"
    assert facts["<0x41>"]["is_byte"] and not facts["<0x41>"]["is_partial_utf8"] and facts["<0x41>"]["category"] == "byte"
    assert facts["▁cat"]["text"] == " cat" and facts["▁cat"]["category"] == "normal" and facts["▁cat"]["norm_key"] == "cat"
    assert facts["▁qq"]["is_unreachable"]
    assert facts["the"]["is_unreachable"]  # no ('t', 'he') merge
    assert {facts[p]["category"] for p in ("<unk>", "<s>", "</s>")} == {"special"}


def test_wordpiece_continuations_and_case():
    hf, vocab = wordpiece_uncased()
    facts = facts_by_piece(hf)
    assert not facts["##ing"]["is_unreachable"] and facts["##ing"]["text"] == "ing"
    assert facts["Cat"]["is_unreachable"] and facts["Cat"]["unreachable_kind"] == "single"
    assert facts["Cat"]["reencoded_ids"] == str(vocab["cat"])
    assert facts["[unused0]"]["is_unreachable"] and facts["[unused0]"]["category"] == "placeholder"  # a reference, not a finding
    assert facts["cat"]["category"] == "normal"


def test_tiktoken_vocabulary_facts():
    columns = compute_token_facts(load("tiktoken:cl100k_base").vocabulary)
    ids = columns["token_id"]
    assert 100256 not in ids  # a hole in cl100k's id range
    assert sum(columns["is_special"]) == 5
    for data, special, partial in zip(columns["raw_bytes"], columns["is_special"], columns["is_partial_utf8"]):
        if not special:
            assert partial == (not is_valid_utf8(data))
    # cl100k was trained with this very encoder: nearly every token round-trips.
    assert sum(columns["is_unreachable"]) < 0.001 * len(ids)


@pytest.mark.parametrize(
    ("text", "script"),
    [("hello", "Latin"), (" привет", "Cyrillic"), ("東京", "Han"), ("123 !", "Common"), ("abcш", "Mixed"), ("", "Common")],
)
def test_dominant_script(text, script):
    assert dominant_script(text) == script


def test_category_precedence():
    assert category(True, True, True, True, True, True) == "placeholder"
    assert category(False, True, True, True, True, True) == "special"
    assert category(False, False, True, True, False, False) == "partial_utf8"
    assert category(False, False, False, False, True, True) == "unreachable"
    assert category(False, False, False, False, False, False) == "normal"
