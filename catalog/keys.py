"""The text key that joins the same string across tokenizers, and the text users read for a token."""

import unicodedata


def norm_key(text: str) -> str | None:
    """NFKC form with surrounding whitespace stripped: ' the', '▁the' (decoded) and 'the' share a key."""
    key = unicodedata.normalize("NFKC", text).strip()
    return key or None


def readable_text(raw_bytes: bytes | None, piece: str) -> str:
    """What a token says, for people: its decoded text, bytes that are no whole UTF-8 character as escapes.

    Byte-level BPE pieces ('à¸Ńà¸±à¸ķ') are unreadable; their text is the Thai 'อัต'. A partial
    character shows as '\\xe0\\xb8'. Special tokens (no bytes) show their piece.
    """
    return piece if raw_bytes is None else raw_bytes.decode("utf-8", errors="backslashreplace")
