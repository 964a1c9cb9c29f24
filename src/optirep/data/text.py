"""Tokenizers for language modelling and text classification, and the token caches.

Language modelling (`tokenizer` data_arg of tinyshakespeare / wikitext2 / wikitext103):
  * "gpt2" (default): GPT-2 byte-level BPE (vocab 50257) from the fetched `vocab.json` +
    `merges.txt`, through `tokenizers.ByteLevelBPETokenizer`; the same ids as tiktoken's "gpt2",
    which the V6 Shakespeare script used.
  * "char": one id per distinct character of the corpus (sorted), as in char-rnn.

Text classification (`tokenizer` data_arg of imdb / ag_news), each giving `[N, max_len]` ids:
  * "bert-base-uncased" (default; the GRN protocol): WordPiece with lower-casing and accent
    stripping, `[CLS] text [SEP]`, truncated and right-padded with `[PAD]` = 0 to `max_len`
    (default 128). Needs `vocab.txt`, which `optirep fetch bert-base-uncased` (or
    `optirep fetch imdb`) downloads from the Hugging Face hub or takes from
    `<mirror>/bert-base-uncased/vocab.txt`.
  * "gpt2": byte-level BPE, padded with 50256 (`<|endoftext|>`).
  * "byte": UTF-8 bytes shifted by one (ids 1..256), padded with 0; needs no file.
  * a path to a WordPiece `vocab.txt`: as "bert-base-uncased" with that vocabulary.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from optirep.data.fetch import clean_stale_parts, fetch, owner_tag

__all__ = ["LMTokenizer", "lm_tokenizer", "classification_tokenizer", "cached_array"]


class LMTokenizer:
    """`encode(text) -> np.ndarray` of ids plus `vocab_size` and a description for `info`."""

    def __init__(self, name: str, encode: Callable[[str], Sequence[int]], vocab_size: int,
                 encode_batch: Callable[[list[str]], list[Sequence[int]]] | None = None, extra: dict | None = None):
        self.name, self._encode, self.vocab_size = name, encode, vocab_size
        self._encode_batch = encode_batch
        self.extra = extra or {}

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self._encode(text), dtype=np.int64)

    def encode_lines(self, lines: list[str]) -> np.ndarray:
        """Encode each line separately (parallel where the tokenizer allows) and concatenate."""
        if self._encode_batch is None:
            return self.encode("".join(lines))
        ids = self._encode_batch(lines)
        return np.fromiter((i for seq in ids for i in seq), dtype=np.int64)


def gpt2_bpe(root, mirror):
    from tokenizers import ByteLevelBPETokenizer

    d = fetch("gpt2", root, mirror)
    return ByteLevelBPETokenizer(str(d / "vocab.json"), str(d / "merges.txt"))


def lm_tokenizer(name: str, corpus: str | None, root, mirror) -> LMTokenizer:
    """The LM tokenizer `name` ("gpt2" or "char"; "char" builds its vocabulary from `corpus`)."""
    if name == "gpt2":
        tok = gpt2_bpe(root, mirror)
        return LMTokenizer("gpt2", lambda s: tok.encode(s).ids, tok.get_vocab_size(),
                           lambda ls: [e.ids for e in tok.encode_batch(ls)])
    if name == "char":
        if corpus is None:
            raise ValueError("the char tokenizer needs the corpus to build its vocabulary")
        chars = sorted(set(corpus))
        stoi = {c: i for i, c in enumerate(chars)}
        return LMTokenizer("char", lambda s: [stoi[c] for c in s], len(chars), extra={"itos": "".join(chars)})
    raise ValueError(f"unknown LM tokenizer {name!r}; known: ['gpt2', 'char']")


def classification_tokenizer(name: str, max_len: int, root, mirror) -> tuple[Callable[[list[str]], np.ndarray], dict]:
    """`(encode, meta)`: `encode(texts) -> int64 [N, max_len]`; meta has vocab_size, pad_id, tokenizer."""
    if max_len < 2:
        raise ValueError(f"max_len must be >= 2, got {max_len}")
    if name == "byte":
        def encode_bytes(texts: list[str]) -> np.ndarray:
            out = np.zeros((len(texts), max_len), dtype=np.int64)
            for i, t in enumerate(texts):
                b = np.frombuffer(t.encode("utf-8")[:max_len], dtype=np.uint8).astype(np.int64) + 1
                out[i, :len(b)] = b
            return out

        return encode_bytes, {"tokenizer": "byte", "vocab_size": 257, "pad_id": 0}
    if name == "gpt2":
        tok = gpt2_bpe(root, mirror)
        pad = 50256
    else:
        from tokenizers import BertWordPieceTokenizer

        if name == "bert-base-uncased":
            vocab = fetch("bert-base-uncased", root, mirror) / "vocab.txt"
        elif os.path.isfile(name):
            vocab = Path(name)
        else:
            raise ValueError(f"unknown text tokenizer {name!r}; known: ['bert-base-uncased', 'gpt2', 'byte'] "
                             "or a path to a WordPiece vocab.txt")
        tok = BertWordPieceTokenizer(str(vocab), lowercase=True)
        pad = tok.token_to_id("[PAD]")
    tok.enable_truncation(max_len)
    tok.enable_padding(length=max_len, pad_id=pad)

    def encode(texts: list[str]) -> np.ndarray:
        return np.asarray([e.ids for e in tok.encode_batch(list(texts))], dtype=np.int64).reshape(len(texts), max_len)

    return encode, {"tokenizer": name, "vocab_size": tok.get_vocab_size(), "pad_id": pad}


def cached_array(path: Path, make: Callable[[], np.ndarray], dtype=None) -> np.ndarray:
    """Load `path` (.npy) or compute it with `make()` and save it atomically (temp + rename)."""
    if path.is_file():
        return np.load(path)
    arr = make()
    if dtype is not None:
        arr = arr.astype(dtype)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_parts(path.parent)  # a killed writer's temp file
    tmp = path.with_name(f".{path.name}.{owner_tag()}.part")
    with open(tmp, "wb") as f:
        np.save(f, arr)
    os.replace(tmp, path)
    return arr
