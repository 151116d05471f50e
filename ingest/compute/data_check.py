"""Which catalogued tokens a fine-tuning data set contains: streaming readers and a vectorised token count.

Pure code, no SQL: records come from text, JSONL or Parquet files one batch at a time (any size),
are encoded with the model's own tokenizer, and the ids are looked up in a boolean mask over the
vocabulary. Special tokens are found as text: a tokenizer that splits them out of plain text turns
'<|im_end|>' in a document into the real control token.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

import numpy as np

from catalog.database import CatalogError

PARQUET_ROWS = 10_000
MAX_LOCATIONS = 5


@dataclass(frozen=True)
class Record:
    """One unit of text and where it was read: a text or JSONL line, or a Parquet row (1-based)."""

    file: str
    line: int
    text: str


def read_records(path: Path) -> Iterator[Record]:
    """Text from ``path``: every line of a text file, the string values of every JSONL object, the string
    columns of every Parquet row."""
    if path.suffix == ".parquet":
        return _parquet_records(path)
    if path.suffix in (".jsonl", ".ndjson"):
        return _jsonl_records(path)
    return _text_records(path)


def _text_records(path: Path) -> Iterator[Record]:
    with path.open(encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            yield Record(str(path), number, line.rstrip("\n"))


def _jsonl_records(path: Path) -> Iterator[Record]:
    for record in _text_records(path):
        if not record.text.strip():
            continue
        try:
            value = json.loads(record.text)
        except json.JSONDecodeError as exc:
            raise CatalogError(f"{path}:{record.line}: not JSON ({exc.msg})") from None
        yield Record(record.file, record.line, "\n".join(strings_in(value)))


def strings_in(value: object) -> Iterator[str]:
    """Every string in a JSON value (chat messages, prompt/completion pairs, plain text fields), in order."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings_in(item)


def _parquet_records(path: Path) -> Iterator[Record]:
    import polars as pl

    try:
        frame = pl.scan_parquet(path)
        columns = [name for name, dtype in frame.collect_schema().items() if dtype == pl.String]
    except Exception as exc:  # polars raises its own ComputeError on a file that is no Parquet
        raise CatalogError(f"cannot read Parquet file {str(path)!r}: {type(exc).__name__}") from None
    offset = 0
    while True:
        batch = frame.select(columns).slice(offset, PARQUET_ROWS).collect()
        if batch.is_empty():
            return
        for index, row in enumerate(batch.iter_rows(), start=offset + 1):
            yield Record(str(path), index, "\n".join(value for value in row if value))
        offset += batch.height


def batched(records: Iterable[Record], size: int) -> Iterator[list[Record]]:
    iterator = iter(records)
    while batch := list(islice(iterator, size)):
        yield batch


@dataclass
class Occurrences:
    """How often each watched item occurred and its first locations ('file:line')."""

    counts: Counter = field(default_factory=Counter)
    locations: dict[object, list[str]] = field(default_factory=dict)

    def add(self, key: object, record: Record, times: int = 1) -> None:
        self.counts[key] += times
        places = self.locations.setdefault(key, [])
        if len(places) < MAX_LOCATIONS:
            places.append(f"{record.file}:{record.line}")


@dataclass
class DataScan:
    """What a scan found: occurrences of watched token ids and of special tokens' text."""

    n_records: int = 0
    n_tokens: int = 0
    tokens: Occurrences = field(default_factory=Occurrences)
    special_texts: Occurrences = field(default_factory=Occurrences)


def watched_mask(token_ids: Iterable[int], vocab_size: int) -> np.ndarray:
    """Boolean lookup table: mask[id] is True for the ids to report.  Shape: [vocab_size]."""
    mask = np.zeros(vocab_size, dtype=bool)
    mask[list(token_ids)] = True
    return mask


def scan_batch(
    scan: DataScan,
    batch: Sequence[Record],
    encode: Callable[[Sequence[str]], list[list[int]]],
    mask: np.ndarray,
    special_texts: Sequence[str],
) -> None:
    """Encode one batch of records and add what it holds to ``scan``."""
    for record, ids in zip(batch, encode([record.text for record in batch])):
        scan.n_records += 1
        scan.n_tokens += len(ids)
        array = np.asarray(ids, dtype=np.int64)
        hits = array[mask[array]] if array.size else array
        for token_id, times in Counter(hits.tolist()).items():
            scan.tokens.add(token_id, record, times)
        for text in special_texts:
            if text in record.text:
                scan.special_texts.add(text, record, record.text.count(text))
