"""Plain-text corpora: validation, hashing and packing into token sequences.

A corpus is any UTF-8 text file with one document or paragraph per line; blank lines are
skipped and nothing else about its format is assumed. :func:`pack_sequences` concatenates
the lines' tokens and cuts them into sequences of at most ``max_length`` tokens
(``[CLS] … [SEP]`` included): text that does not fit continues in the next sequence, so
nothing is dropped. Everything streams: memory does not grow with the corpus.
"""

from __future__ import annotations

import codecs
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from transformers import PreTrainedTokenizerBase

from .config import TOKENIZE_LINES
from .errors import NotFoundError, SparsefinderError

__all__ = ["CorpusInfo", "check_corpus", "iter_articles", "iter_texts", "long_article_ids", "pack_sequences", "pack_token_ids", "tokenize_texts"]

#: Bytes read at a time while hashing a corpus.
_CHUNK = 1 << 20


@dataclass(frozen=True)
class CorpusInfo:
    path: str
    sha256: str
    bytes: int
    texts: int
    """Non-blank lines."""


def check_corpus(path: str | Path) -> CorpusInfo:
    """Validate a corpus file in one streaming pass and hash it.

    Raises a user error when the file is missing, not a file, empty, binary (NUL bytes),
    not UTF-8 or has no text.
    """
    p = Path(path)
    if not p.exists():
        raise NotFoundError(f"corpus file {p} does not exist")
    if not p.is_file():
        raise SparsefinderError(f"corpus {p} is not a file")
    size = p.stat().st_size
    if size == 0:
        raise SparsefinderError(f"corpus file {p} is empty")
    digest = hashlib.sha256()
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset, texts, pending = 0, 0, ""
    with open(p, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
            if b"\x00" in chunk:
                raise SparsefinderError(f"corpus file {p} looks binary (NUL byte near offset {offset + chunk.index(0)})")
            try:
                text = decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                raise SparsefinderError(f"corpus file {p} is not UTF-8 text (bad byte at offset {offset + exc.start})") from None
            offset += len(chunk)
            lines = (pending + text).split("\n")
            pending = lines.pop()
            texts += sum(1 for line in lines if line.strip())
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            raise SparsefinderError(f"corpus file {p} is not UTF-8 text (it ends inside a character)") from None
    texts += 1 if pending.strip() else 0
    if texts == 0:
        raise SparsefinderError(f"corpus file {p} has no text (only blank lines)")
    return CorpusInfo(str(p), digest.hexdigest(), size, texts)


def iter_texts(path: str | Path) -> Iterator[str]:
    """Non-blank lines of a corpus, stripped (call :func:`check_corpus` first)."""
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield line.strip()


def iter_articles(path: str | Path) -> Iterator[str]:
    """WikiText articles of a corpus: the paragraphs under each top heading (`` = Title = ``), joined by spaces.

    Section headings (`` = = … = = ``) are dropped; text before the first heading is an article of
    its own. A corpus without headings is one article.
    """
    paragraphs: list[str] = []
    for text in iter_texts(path):
        if text.startswith("= ") and text.endswith(" =") and not text.startswith("= ="):
            if paragraphs:
                yield " ".join(paragraphs)
            paragraphs = []
        elif not text.startswith("= ="):
            paragraphs.append(text)
    if paragraphs:
        yield " ".join(paragraphs)


def long_article_ids(path: str | Path, tokenizer: PreTrainedTokenizerBase, body_tokens: int) -> Iterator[list[int]]:
    """Body token ids (no special tokens) of the articles of ``path`` with at least ``body_tokens`` tokens, each cut
    to its first ``body_tokens``, in corpus order."""
    for article in iter_articles(path):
        ids = tokenizer(article, add_special_tokens=False)["input_ids"]
        if len(ids) >= body_tokens:
            yield ids[:body_tokens]


def pack_sequences(texts: Iterator[str], tokenizer: PreTrainedTokenizerBase, max_length: int) -> Iterator[list[int]]:
    """Token-id sequences of at most ``max_length`` (special tokens included) covering all of ``texts``."""
    return pack_token_ids(tokenize_texts(texts, tokenizer), tokenizer.cls_token_id, tokenizer.sep_token_id,
                          max_length)


def tokenize_texts(texts: Iterator[str], tokenizer: PreTrainedTokenizerBase) -> Iterator[list[int]]:
    """Token ids of each text, no special tokens (texts tokenized in batches, each on its own)."""
    batch: list[str] = []
    for text in texts:
        batch.append(text)
        if len(batch) == TOKENIZE_LINES:
            yield from tokenizer(batch, add_special_tokens=False)["input_ids"]
            batch = []
    if batch:
        yield from tokenizer(batch, add_special_tokens=False)["input_ids"]


def pack_token_ids(token_ids: Iterator[list[int]], cls_id: int, sep_id: int, max_length: int) -> Iterator[list[int]]:
    """Concatenate the texts' token ids and cut them into ``[CLS] … [SEP]`` sequences of at most ``max_length``."""
    if max_length < 3:
        raise SparsefinderError(f"max length must be at least 3 tokens, got {max_length}")
    room = max_length - 2
    buffer: list[int] = []
    for ids in token_ids:
        buffer.extend(ids)
        while len(buffer) >= room:
            yield [cls_id, *buffer[:room], sep_id]
            buffer = buffer[room:]
    if buffer:
        yield [cls_id, *buffer, sep_id]
