"""Tokenizer facts for every token: the checks the published detectors use.

- special: control / added special tokens;
- byte: the token stands for one raw byte (byte-fallback '<0xNN>', single-byte BPE);
- partial UTF-8: its bytes are not valid UTF-8 alone (it can only ever appear
  next to other byte tokens);
- unreachable: decoding it and encoding the text again does not give it back,
  so no ordinary input produces it and training may never have seen it;
- whitespace-only, lengths, dominant script and a key joining equal strings
  across tokenizers.

Embedding rows beyond the tokenizer's ids (a model padded to a multiple of 64
or 128) are catalogued too, as ``[PADn]`` with n the row's id: :func:`padding_facts`.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from tqdm.auto import tqdm

from catalog.keys import norm_key
from ingest.load.vocabulary import BYTE_FALLBACK, Vocabulary

# Placeholders come first: reserved specials are special too, and '<unused12>' is often unreachable, but they
# are the unused-token indicator's reference, never findings, so evaluations keep them out of recall.
CATEGORY_ORDER = ("placeholder", "special", "partial_utf8", "byte", "unreachable", "whitespace", "normal")
PLACEHOLDER_PIECE = re.compile(
    r"^(<unused\d+>|\[unused\d+\]|<\|reserved_special_token_\d+\|>|<\|reserved_\d+\|>|<extra_id_\d+>|<\|unused_\d+\|>|\[PAD\d+\])$"
)
FACT_COLUMNS = (
    "token_id", "piece", "text", "raw_bytes", "norm_key", "is_special", "is_byte", "is_partial_utf8",
    "is_unreachable", "unreachable_kind", "reencoded_ids", "is_whitespace", "n_bytes", "n_chars", "script", "category",
)
_SCRIPT_ALIASES = {"CJK": "Han", "HALFWIDTH": "Katakana", "FULLWIDTH": "Latin"}
ENCODE_BATCH = 8192


def is_valid_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@lru_cache(maxsize=65536)
def char_script(char: str) -> str | None:
    """Unicode script of a letter from its character name ('CYRILLIC SMALL LETTER A' -> Cyrillic); None for non-letters."""
    if not unicodedata.category(char).startswith(("L", "M")):
        return None
    name = unicodedata.name(char, "")
    if not name:
        return "Unknown"
    first = name.split(" ", 1)[0]
    return _SCRIPT_ALIASES.get(first, first.capitalize())


def dominant_script(text: str) -> str:
    """The one script of a text's letters, 'Common' without letters, 'Mixed' if several."""
    scripts = {script for char in text if (script := char_script(char)) is not None}
    if not scripts:
        return "Common"
    if len(scripts) == 1:
        return scripts.pop()
    return "Mixed"


def category(placeholder: bool, special: bool, partial: bool, byte: bool, unreachable: bool, whitespace: bool) -> str:
    flags = (placeholder, special, partial, byte, unreachable, whitespace, True)
    return next(name for name, flag in zip(CATEGORY_ORDER, flags) if flag)


def _is_byte_token(vocabulary: Vocabulary, token_id: int, data: bytes) -> bool:
    """Byte-fallback pieces, or a lone byte-level byte that is no printable ASCII or whitespace."""
    if vocabulary.kind == "sentencepiece":
        return BYTE_FALLBACK.match(vocabulary.piece(token_id)) is not None
    if vocabulary.kind in ("byte_level", "tiktoken") and len(data) == 1:
        return not (0x20 <= data[0] < 0x7F or chr(data[0]).isspace())
    return False


def _reencode(
    vocabulary: Vocabulary, token_ids: Sequence[int], texts: Sequence[str], show_progress: bool
) -> dict[int, list[int]]:
    """Ids each token's text encodes to (after the probe's prefix ids are removed)."""
    probes = [vocabulary.reachability_probe(token_id, text) for token_id, text in zip(token_ids, texts)]
    result: dict[int, list[int]] = {}
    for start in tqdm(range(0, len(probes), ENCODE_BATCH), desc="re-encoding tokens", disable=not show_progress, leave=False):
        chunk = probes[start : start + ENCODE_BATCH]
        encoded = vocabulary.encode_batch([probe.text for probe in chunk])
        for token_id, probe, ids in zip(token_ids[start : start + ENCODE_BATCH], chunk, encoded):
            prefix = list(probe.prefix_ids)
            result[token_id] = ids[len(prefix) :] if ids[: len(prefix)] == prefix else ids
    return result


def compute_token_facts(vocabulary: Vocabulary, show_progress: bool = False) -> dict[str, list[Any]]:
    """Facts for every token as column lists, in ``vocabulary.token_ids`` order."""
    ids = vocabulary.token_ids
    special_ids = vocabulary.special_ids
    raw = [vocabulary.token_bytes(token_id) for token_id in ids]
    texts = [data.decode("utf-8", errors="replace") for data in raw]
    special = [token_id in special_ids for token_id in ids]
    partial = [not sp and not is_valid_utf8(data) for sp, data in zip(special, raw)]
    checkable = [i for i, (sp, pa, text) in enumerate(zip(special, partial, texts)) if not sp and not pa and text]
    reencoded = _reencode(vocabulary, [ids[i] for i in checkable], [texts[i] for i in checkable], show_progress)
    columns: dict[str, list[Any]] = {name: [] for name in FACT_COLUMNS}
    for token_id, data, text, sp, pa in zip(ids, raw, texts, special, partial):
        back = reencoded.get(token_id)
        unreachable = back is not None and back != [token_id]
        byte = not sp and _is_byte_token(vocabulary, token_id, data)
        whitespace = bool(text) and not sp and text.isspace()
        columns["token_id"].append(token_id)
        columns["piece"].append(vocabulary.piece(token_id))
        columns["text"].append(text)
        columns["raw_bytes"].append(None if sp else data)
        columns["norm_key"].append(None if pa else norm_key(text))
        columns["is_special"].append(sp)
        columns["is_byte"].append(byte)
        columns["is_partial_utf8"].append(pa)
        columns["is_unreachable"].append(unreachable)
        columns["unreachable_kind"].append(_unreachable_kind(back) if unreachable else None)
        columns["reencoded_ids"].append(" ".join(map(str, back)) if unreachable else None)
        columns["is_whitespace"].append(whitespace)
        columns["n_bytes"].append(len(data))
        columns["n_chars"].append(len(text))
        columns["script"].append(dominant_script(text) if not sp else "Common")
        placeholder = PLACEHOLDER_PIECE.match(vocabulary.piece(token_id)) is not None
        columns["category"].append(category(placeholder, sp, pa, byte, unreachable, whitespace))
    return columns


def padding_facts(token_ids: range) -> dict[str, list[Any]]:
    """Facts of embedding rows no tokenizer id maps to, as column lists.

    Such a row decodes to nothing and no text encodes to it, so it is unreachable ('empty'), and it
    has no bytes; it is not special, since the tokenizer does not know it. Untrained by construction,
    it is a placeholder like '<unused12>': the unused-token reference, never a finding.
    """
    n = len(token_ids)
    values: dict[str, Any] = {
        "text": "", "raw_bytes": None, "norm_key": None, "is_special": False, "is_byte": False, "is_partial_utf8": False,
        "is_unreachable": True, "unreachable_kind": "empty", "reencoded_ids": "", "is_whitespace": False,
        "n_bytes": 0, "n_chars": 0, "script": "Common", "category": "placeholder",
    }
    columns = {"token_id": list(token_ids), "piece": [f"[PAD{token_id}]" for token_id in token_ids]}
    return {name: columns[name] if name in columns else [values[name]] * n for name in FACT_COLUMNS}


def _unreachable_kind(reencoded: list[int]) -> str:
    if not reencoded:
        return "empty"
    return "single" if len(reencoded) == 1 else "multi"


def summarize(columns: dict[str, list[Any]]) -> dict[str, int]:
    """Count of tokens per category, for logs and run params."""
    return dict(Counter(columns["category"]))
