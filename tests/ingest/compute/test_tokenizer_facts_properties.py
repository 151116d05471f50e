"""Property tests: tokenizer facts hold for arbitrary byte strings and arbitrary byte-level vocabularies."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from catalog.keys import norm_key
from ingest.compute.tokenizer_facts import CATEGORY_ORDER, compute_token_facts, dominant_script, is_valid_utf8
from ingest.load.vocabulary import HFVocabulary
from tests.ingest.handmade import BYTE_CHAR


@given(st.binary(max_size=12))
def test_validity_matches_python_decoding(data):
    try:
        data.decode("utf-8")
        valid = True
    except UnicodeDecodeError:
        valid = False
    assert is_valid_utf8(data) == valid


@given(st.text(max_size=20))
def test_norm_key_is_idempotent_and_stripped(text):
    key = norm_key(text)
    if key is not None:
        assert norm_key(key) == key and key == key.strip() and key


@given(st.text(max_size=20))
def test_dominant_script_is_total(text):
    assert isinstance(dominant_script(text), str)


def byte_level_tokenizer(extra: list[bytes]) -> PreTrainedTokenizerFast:
    """All 256 bytes plus arbitrary multi-byte pieces that no merge produces."""
    vocab = {BYTE_CHAR[b]: b for b in range(256)}
    for data in extra:
        vocab.setdefault("".join(BYTE_CHAR[b] for b in data), len(vocab))
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(min_size=2, max_size=6), max_size=8))
def test_facts_on_arbitrary_byte_pieces(extra):
    columns = compute_token_facts(HFVocabulary(byte_level_tokenizer(extra)))
    by_bytes = dict(zip(columns["raw_bytes"], range(len(columns["token_id"]))))
    for data in extra:
        i = by_bytes[data]
        assert columns["n_bytes"][i] == len(data)
        assert columns["is_partial_utf8"][i] == (not is_valid_utf8(data))
        # Without merges only single bytes are reachable: every valid multi-byte piece re-encodes to its bytes.
        assert columns["is_unreachable"][i] == is_valid_utf8(data)
        if columns["is_unreachable"][i]:
            assert columns["reencoded_ids"][i] == " ".join(str(b) for b in data)
    for b in range(256):
        assert columns["raw_bytes"][b] == bytes([b]) and not columns["is_unreachable"][b]
    assert set(columns["category"]) <= set(CATEGORY_ORDER)
