"""Hand-made tokenizers whose unreachable, partial-UTF-8 and byte tokens are known by construction."""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from ingest.load.vocabulary import gpt2_byte_decoder

BYTE_CHAR = {byte: char for char, byte in gpt2_byte_decoder().items()}


def _bpe_vocab(base: list[str], merges: list[tuple[str, str]], extra: list[str]) -> dict[str, int]:
    vocab = {piece: i for i, piece in enumerate(base)}
    for piece in [a + b for a, b in merges] + extra:
        vocab.setdefault(piece, len(vocab))
    return vocab


def byte_level_bpe() -> tuple[PreTrainedTokenizerFast, dict[str, int]]:
    """GPT-2 style BPE over all 256 bytes.

    Known facts: 'Ġzz' has no merge path (unreachable, multi); 'â' + byte 0x80
    is the first two bytes of '…' (partial UTF-8); '<|eos|>' is special.
    """
    merges = [("Ġ", "c"), ("a", "t"), ("Ġc", "at"), ("Ã", "©")]
    partial = BYTE_CHAR[0xE2] + BYTE_CHAR[0x80]
    vocab = _bpe_vocab([BYTE_CHAR[b] for b in range(256)], merges, ["Ġzz", partial])
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    hf = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|eos|>")
    return hf, hf.get_vocab()


def sentencepiece_bpe() -> tuple[PreTrainedTokenizerFast, dict[str, int]]:
    """SentencePiece-style BPE with byte fallback ('▁' for spaces, '<0xNN>' byte tokens).

    Known facts: '▁qq' has no merge path (unreachable); '<0xE2>' is a byte and
    partial-UTF-8 token; '<0x41>' is a byte token that is valid UTF-8 ('A').
    """
    specials = ["<unk>", "<s>", "</s>"]
    byte_pieces = [f"<0x{b:02X}>" for b in range(256)]
    letters = list("▁abcdeghlorstq")
    merges = [("▁", "c"), ("a", "t"), ("▁c", "at"), ("h", "e"), ("▁", "the"[0])]
    vocab = _bpe_vocab(specials + byte_pieces + letters, merges, ["▁qq", "the"])
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True))
    tokenizer.normalizer = normalizers.Replace(" ", "▁")
    tokenizer.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    hf = PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    return hf, hf.get_vocab()


def wordpiece_uncased() -> tuple[PreTrainedTokenizerFast, dict[str, int]]:
    """BERT-style uncased WordPiece.

    Known facts: 'Cat' is unreachable (the normaliser lowercases);
    '##ing' is reachable after a word; '[unused0]' is an ordinary, unreachable piece.
    """
    return wordpiece(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[unused0]", "cat", "sing", "##ing", "Cat", "a", "ɐ", "s"])


def wordpiece(pieces: list[str]) -> tuple[PreTrainedTokenizerFast, dict[str, int]]:
    """Uncased WordPiece whose token ids are the positions in ``pieces`` (the first four are its specials)."""
    tokenizer = Tokenizer(models.WordPiece({p: i for i, p in enumerate(pieces)}, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]"
    )
    return hf, hf.get_vocab()
