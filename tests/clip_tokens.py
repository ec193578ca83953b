"""A small CLIP byte-level BPE tokenizer for the tests, independent of the gateway's
`clip-tokenizer` crate: 77 ids, SOT 49406 first, EOT 49407 last (kept when the text is cut),
zero padding; the text is cleaned as open_clip's `_clean_lower` does (HTML unescaped twice,
whitespace collapsed and stripped, lower-cased).

Pre-tokenization follows CLIP's pattern
    <|startoftext|>|<|endoftext|>|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+
with a hand-written scanner over Unicode categories (L* letters, N* numbers), so no `regex`
package is needed. Of ftfy's `fix_text` only NFC, ANSI-escape and control-character removal
are done: text that needs its other fixes (fullwidth forms, ligatures, curly quotes, C1
controls read as Windows-1252, mojibake) is out of scope here.
"""
from __future__ import annotations

import html
import itertools
import json
import os
import re
import unicodedata

SOT, EOT, CONTEXT = 49406, 49407, 77
# 256 byte symbols x 2 (bare and with </w>) + merges + 2 special tokens = 49408 ids.
MERGES = 49152 - 256 - 2
CONTRACTIONS = ("s", "t", "re", "ve", "m", "ll", "d")
SPECIALS = ("<|startoftext|>", "<|endoftext|>")
_ANSI = re.compile(r"\x1b\[[\d;]*[A-Za-z]")
_WHITESPACE = re.compile(r"\s+")


def byte_symbols() -> dict[int, str]:
    """CLIP's reversible byte -> printable character table: printable Latin-1 bytes stand
    for themselves, the other 68 take the code points from 256 upwards, in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("\u00a1"), ord("\u00ac") + 1),
                 *range(ord("\u00ae"), ord("\u00ff") + 1)]
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def _is_control(c: str) -> bool:
    """C0 controls other than tab and line breaks, DEL, and the byte-order mark (ftfy's
    `remove_control_chars` for the characters typed text carries; C1 controls are left)."""
    return c == "\ufeff" or (unicodedata.category(c) == "Cc" and c not in "\t\n\r" and not "\x80" <= c <= "\x9f")


def clean(text: str) -> str:
    text = unicodedata.normalize("NFC", "".join(c for c in _ANSI.sub("", text) if not _is_control(c)))
    text = html.unescape(html.unescape(text))
    return _WHITESPACE.sub(" ", text).strip().lower()


def _kind(c: str) -> str:
    category = unicodedata.category(c)
    if category[0] == "L":
        return "letter"
    if category[0] == "N":
        return "number"
    if c.isspace():
        return "space"
    return "other"


def pieces(text: str) -> list[str]:
    """The pre-tokenizer: the alternatives of CLIP's pattern, tried in order at each place."""
    out = []
    i, n = 0, len(text)
    while i < n:
        special = next((s for s in SPECIALS if text.startswith(s, i)), None)
        if special:
            out.append(special)
            i += len(special)
            continue
        if text[i] == "'":
            contraction = next((c for c in CONTRACTIONS if text.startswith(c, i + 1)), None)
            if contraction:
                out.append("'" + contraction)
                i += 1 + len(contraction)
                continue
        kind = _kind(text[i])
        if kind == "space":
            i += 1
            continue
        if kind == "number":
            out.append(text[i])
            i += 1
            continue
        j = i + 1
        while j < n and _kind(text[j]) == kind:
            j += 1
        out.append(text[i:j])
        i = j
    return out


class ClipTokenizer:
    def __init__(self, directory: str):
        with open(os.path.join(directory, "clip-vocab.json"), encoding="utf-8") as f:
            self.vocab: dict[str, int] = json.load(f)
        with open(os.path.join(directory, "clip-merges.txt"), encoding="utf-8") as f:
            lines = f.read().split("\n")
        # The first line is the "#version" header.
        pairs = [tuple(line.split()) for line in lines[1:1 + MERGES]]
        assert len(pairs) == MERGES and all(len(p) == 2 for p in pairs), "unexpected merges file"
        self.rank = {pair: r for r, pair in enumerate(pairs)}
        self.bytes = byte_symbols()
        self.cache: dict[str, list[int]] = {}

    def bpe(self, piece: str) -> list[int]:
        if piece in SPECIALS:
            return [SOT if piece == SPECIALS[0] else EOT]
        if piece in self.cache:
            return self.cache[piece]
        symbols = [self.bytes[b] for b in piece.encode("utf-8")]
        symbols[-1] += "</w>"
        while len(symbols) > 1:
            # The adjacent pair merged earliest in training, every occurrence left to right.
            pair = min(itertools.pairwise(symbols), key=lambda p: self.rank.get(p, MERGES))
            if pair not in self.rank:
                break
            first, second = pair
            merged = []
            k = 0
            while k < len(symbols):
                if k + 1 < len(symbols) and (symbols[k], symbols[k + 1]) == pair:
                    merged.append(first + second)
                    k += 2
                else:
                    merged.append(symbols[k])
                    k += 1
            symbols = merged
        ids = [self.vocab[s] for s in symbols]
        self.cache[piece] = ids
        return ids

    def encode(self, text: str) -> list[int]:
        return [i for piece in pieces(clean(text)) for i in self.bpe(piece)]

    def __call__(self, text: str) -> list[int]:
        ids = [SOT, *self.encode(text), EOT]
        if len(ids) > CONTEXT:
            ids = ids[:CONTEXT]
            ids[-1] = EOT
        return ids + [0] * (CONTEXT - len(ids))
