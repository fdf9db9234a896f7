"""Counting CLIP tokens without transformers: the caption editor shows "63 / 75" as the artist types.

A pure-Python copy of the CLIP byte-level BPE that Stable Diffusion's text encoders use, reading the
shipped `resources/tokenizer/{vocab.json,merges.txt}`. It reproduces `transformers.CLIPTokenizer`
(the fast one, used when ftfy is not installed): NFC, whitespace runs collapsed to one space,
lower case, then the CLIP split pattern

    <|startoftext|>|<|endoftext|>|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+

done here by a small scanner over `unicodedata` categories rather than the third-party `regex`
module, so core needs nothing beyond the standard library for it.
"""

from __future__ import annotations

import json
import re
import unicodedata
from functools import lru_cache

from lora_studio.core.resources import resource

START_OF_TEXT = "<|startoftext|>"
END_OF_TEXT = "<|endoftext|>"
CONTEXT_LENGTH = 77  # the text encoder's window, start and end tokens included
MAX_CAPTION_TOKENS = CONTEXT_LENGTH - 2

_SPECIALS = (START_OF_TEXT, END_OF_TEXT)
_SPECIAL_SPLIT = re.compile("(" + "|".join(re.escape(s) for s in _SPECIALS) + ")")
_CONTRACTIONS = ("'s", "'t", "'re", "'ve", "'m", "'ll", "'d")  # tried in this order, as in the pattern
# The Rust tokenizer's \s (Unicode White_Space); Python's str \s adds the separators U+001C–U+001F.
_WHITESPACE = re.compile(r"[^\S\x1c-\x1f]+")


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible map from bytes to printable characters (so BPE never sees a space)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    n = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return dict(zip(printable, (chr(c) for c in chars)))


class _ClipBpe:
    def __init__(self) -> None:
        with open(resource("tokenizer", "vocab.json"), encoding="utf-8") as f:
            self.vocab: dict[str, int] = json.load(f)
        with open(resource("tokenizer", "merges.txt"), encoding="utf-8") as f:
            lines = f.read().split("\n")
        merges = [tuple(line.split()) for line in lines if line and not line.startswith("#version")]
        self.ranks: dict[tuple[str, ...], int] = {m: i for i, m in enumerate(merges) if len(m) == 2}
        self.byte_chars = bytes_to_unicode()
        self.cache: dict[str, list[int]] = {}

    def word_ids(self, word: str) -> list[int]:
        ids = self.cache.get(word)
        if ids is None:
            if word in _SPECIALS:
                ids = [self.vocab[word]]
            else:
                chars = "".join(self.byte_chars[b] for b in word.encode("utf-8"))
                ids = [self.vocab[piece] for piece in self._bpe(chars)]
            if len(self.cache) < 100_000:
                self.cache[word] = ids
        return ids

    def _bpe(self, chars: str) -> list[str]:
        # The last symbol carries the end-of-word mark, so "cat" at the end of a word is one token.
        parts = list(chars[:-1]) + [chars[-1] + "</w>"]
        while len(parts) > 1:
            best_rank, best_i = None, -1
            for i in range(len(parts) - 1):
                rank = self.ranks.get((parts[i], parts[i + 1]))
                if rank is not None and (best_rank is None or rank < best_rank):
                    best_rank, best_i = rank, i
            if best_rank is None:
                break
            first, second = parts[best_i], parts[best_i + 1]
            merged: list[str] = []
            i = 0
            while i < len(parts):  # merge every occurrence of the best pair, left to right
                if i < len(parts) - 1 and parts[i] == first and parts[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        return parts


@lru_cache(maxsize=1)
def _bpe() -> _ClipBpe:
    return _ClipBpe()  # 49,408 entries and 48,894 merges: read once, on first use


def _kind(ch: str) -> str:
    cat = unicodedata.category(ch)
    if cat[0] == "L":
        return "L"
    if cat[0] == "N":
        return "N"
    if ch == " ":  # after normalisation every whitespace run is one plain space
        return " "
    return "P"


def normalize(text: str) -> str:
    text = _WHITESPACE.sub(" ", unicodedata.normalize("NFC", text))
    # Character by character, as the Rust normaliser does (no context-dependent final sigma).
    return "".join(ch.lower() for ch in text)


def split_words(text: str) -> list[str]:
    """The pre-tokens of normalised text, as CLIP's split pattern finds them."""
    words: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "<" and text.startswith(_SPECIALS, i):
            special = next(s for s in _SPECIALS if text.startswith(s, i))
            words.append(special)
            i += len(special)
            continue
        if ch == "'":
            contraction = next((c for c in _CONTRACTIONS if text.startswith(c, i)), None)
            if contraction:
                words.append(contraction)
                i += len(contraction)
                continue
        kind = _kind(ch)
        if kind == " ":
            i += 1
            continue
        if kind == "N":  # digits are single tokens: "1024" is four
            words.append(ch)
            i += 1
            continue
        j = i + 1
        while j < n and _kind(text[j]) == kind:  # a run of letters, or of punctuation/symbols
            j += 1
        words.append(text[i:j])
        i = j
    return words


def encode(text: str) -> list[int]:
    """CLIP token ids of text, without the start and end tokens and without truncation."""
    bpe = _bpe()
    ids: list[int] = []
    # The special tokens are matched in the raw text before any normalisation, as transformers does.
    for segment in _SPECIAL_SPLIT.split(text):
        if segment in _SPECIALS:
            ids.append(bpe.vocab[segment])
            continue
        for word in split_words(normalize(segment)):
            ids.extend(bpe.word_ids(word))
    return ids


def count_tokens(text: str) -> int:
    return len(encode(text))
