"""The text key that joins the same string across tokenizers."""

import unicodedata


def norm_key(text: str) -> str | None:
    """NFKC form with surrounding whitespace stripped: ' the', '▁the' (decoded) and 'the' share a key."""
    key = unicodedata.normalize("NFKC", text).strip()
    return key or None
