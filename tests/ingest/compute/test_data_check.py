"""Data readers and the scan, on files written here and a real (hand-made) byte-level tokenizer."""

from __future__ import annotations

import json

import polars as pl
import pytest

from catalog.database import CatalogError
from ingest.compute.data_check import DataScan, batched, read_records, scan_batch, strings_in, watched_mask
from ingest.load.vocabulary import HFVocabulary
from tests.ingest.handmade import byte_level_bpe


def test_jsonl_records_hold_every_string_value_in_order(tmp_path):
    path = tmp_path / "chat.jsonl"
    rows = [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "cat"}]}, {"prompt": "a", "n": 3}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n", encoding="utf-8")
    records = list(read_records(path))
    assert [(r.line, r.text) for r in records] == [(1, "user\nhi\nassistant\ncat"), (2, "a")]
    assert list(strings_in({"a": [1, "x", {"b": "y"}]})) == ["x", "y"]


def test_parquet_rows_are_read_in_slices_with_1_based_row_numbers(tmp_path, monkeypatch):
    import ingest.compute.data_check as data_check

    monkeypatch.setattr(data_check, "PARQUET_ROWS", 2)  # several slices from a small file
    path = tmp_path / "rows.parquet"
    pl.DataFrame({"text": ["a", "b", "c", None, "e"], "label": [1, 2, 3, 4, 5]}).write_parquet(path)
    assert [(r.line, r.text) for r in read_records(path)] == [(1, "a"), (2, "b"), (3, "c"), (4, ""), (5, "e")]


def test_bad_jsonl_and_parquet_are_one_line_errors(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"ok": "yes"}\n{nope\n')
    with pytest.raises(CatalogError, match=r"bad.jsonl:2: not JSON"):
        list(read_records(bad))
    fake = tmp_path / "fake.parquet"
    fake.write_text("not parquet")
    with pytest.raises(CatalogError, match="cannot read Parquet file"):
        list(read_records(fake))


def test_scan_counts_watched_ids_and_special_text(tmp_path):
    hf, vocab = byte_level_bpe()
    vocabulary = HFVocabulary(hf)
    path = tmp_path / "notes.txt"
    path.write_text("a cat\nno match\n cat cat <|eos|>\n", encoding="utf-8")
    scan = DataScan()
    mask = watched_mask([vocab["Ġcat"]], len(vocab))
    for batch in batched(read_records(path), 2):
        scan_batch(scan, batch, vocabulary.encode_batch, mask, ["<|eos|>"])
    assert scan.n_records == 3
    assert scan.tokens.counts == {vocab["Ġcat"]: 3}
    assert scan.tokens.locations[vocab["Ġcat"]] == [f"{path}:1", f"{path}:3"]
    assert scan.special_texts.counts == {"<|eos|>": 1}
