"""Vocabulary adapters: byte mapping, kind detection, content hash."""

from __future__ import annotations

from ingest.vocabulary import HFVocabulary, gpt2_byte_decoder
from tests.ingest.handmade import byte_level_bpe, sentencepiece_bpe, wordpiece_uncased


def test_gpt2_byte_decoder_is_a_bijection_over_bytes():
    decoder = gpt2_byte_decoder()
    assert sorted(decoder.values()) == list(range(256))
    assert decoder["Ġ"] == 0x20 and decoder["Ċ"] == 0x0A and decoder["a"] == ord("a")


def test_kind_detection():
    assert HFVocabulary(byte_level_bpe()[0]).kind == "byte_level"
    assert HFVocabulary(sentencepiece_bpe()[0]).kind == "sentencepiece"
    assert HFVocabulary(wordpiece_uncased()[0]).kind == "wordpiece"


def test_content_hash_identifies_the_vocabulary():
    first = HFVocabulary(byte_level_bpe()[0]).content_hash
    assert first == HFVocabulary(byte_level_bpe()[0]).content_hash
    assert first != HFVocabulary(sentencepiece_bpe()[0]).content_hash
