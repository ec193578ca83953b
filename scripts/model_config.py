"""Triton config.pbtxt (protobuf text format) read into plain Python values and written back.

Enough of the text format for Triton model configs, with no protobuf schema: a message is a
list of (field, value) pairs in file order (a repeated field appears once per value, or
once with a list), a value is a nested message, a list, a quoted string (`Quoted`) or a bare
token (number, enum, true/false) kept as its text. Comments are dropped on reading.
"""
from __future__ import annotations

import json
import re

_TOKEN = re.compile(r'\s+|#[^\n]*|"(?:[^"\\]|\\.)*"|[{}\[\]:,]|[^\s{}\[\]:,"#]+')


class Quoted(str):
    """A string value that was (and is written) in double quotes."""


class Message(list):
    """[(field, value), ...] in file order."""

    def get(self, field: str, default=None):
        """The first value of a field as written (a bracketed list stays a list)."""
        return next((v for k, v in self if k == field), default)

    def all(self, field: str) -> list:
        """Every value of a field: a repeated field's entries, or a bracketed list's items."""
        out = []
        for k, v in self:
            if k == field:
                out.extend(v if isinstance(v, list) and not isinstance(v, Message) else [v])
        return out

    def without(self, *fields: str) -> Message:
        return Message((k, v) for k, v in self if k not in fields)

    def replaced(self, field: str, value) -> Message:
        """The field set to one value, at its old place (or appended)."""
        out, done = Message(), False
        for k, v in self:
            if k == field:
                if not done:
                    out.append((k, value))
                    done = True
            else:
                out.append((k, v))
        if not done:
            out.append((field, value))
        return out


def _tokens(text: str) -> list[str]:
    pos, out = 0, []
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise ValueError(f"cannot read config text at: {text[pos:pos + 40]!r}")
        tok = m.group(0)
        if not (tok.isspace() or tok.startswith("#")):
            out.append(tok)
        pos = m.end()
    return out


def parse(text: str) -> Message:
    toks = _tokens(text)
    pos = 0

    def value():
        nonlocal pos
        tok = toks[pos]
        pos += 1
        if tok == "{":
            return message("}")
        if tok == "[":
            items = []
            while toks[pos] != "]":
                items.append(value())
                if toks[pos] == ",":
                    pos += 1
            pos += 1
            return items
        if tok.startswith('"'):
            return Quoted(json.loads(tok))
        return tok

    def message(end):
        nonlocal pos
        msg = Message()
        while pos < len(toks) and toks[pos] != end:
            field = toks[pos]
            pos += 1
            if toks[pos] == ":":
                pos += 1
            msg.append((field, value()))
        if end is not None:
            if pos >= len(toks):
                raise ValueError(f"unclosed message, expected {end!r}")
            pos += 1
        return msg

    return message(None)


def parameters(msg: Message) -> dict[str, str]:
    return {p.get("key"): p.get("value").get("string_value") for p in msg.all("parameters")}


def tensors(msg: Message, field: str) -> dict[str, Message]:
    """input or output entries by name."""
    return {t.get("name"): t for t in msg.all(field)}


def _scalar(v) -> str:
    if isinstance(v, Quoted):
        return json.dumps(str(v))
    return str(v)


def _inline(v) -> bool:
    return not isinstance(v, Message) and (not isinstance(v, list) or all(not isinstance(i, Message) for i in v))


def _one_line(msg: Message) -> str:
    parts = [f"{k} {_one_line(v)}" if isinstance(v, Message) else f"{k}: {_scalar(v)}" for k, v in msg]
    return "{ " + " ".join(parts) + " }"


def _write(msg: Message, indent: int, out: list[str]) -> None:
    pad = "  " * indent
    for k, v in msg:
        if k == "parameters" and isinstance(v, Message):
            # Triton's own examples keep each parameter on one line; so do we.
            out.append(f"{pad}{k} {_one_line(v)}")
        elif isinstance(v, Message):
            out.append(f"{pad}{k} {{")
            _write(v, indent + 1, out)
            out.append(f"{pad}}}")
        elif isinstance(v, list) and not _inline(v):
            out.append(f"{pad}{k} [")
            for i, item in enumerate(v):
                out.append(f"{pad}  {{")
                _write(item, indent + 2, out)
                out.append(f"{pad}  }}{',' if i < len(v) - 1 else ''}")
            out.append(f"{pad}]")
        elif isinstance(v, list):
            out.append(f"{pad}{k}: [ {', '.join(_scalar(i) for i in v)} ]")
        else:
            out.append(f"{pad}{k}: {_scalar(v)}")


def dumps(msg: Message) -> str:
    out: list[str] = []
    _write(msg, 0, out)
    return "\n".join(out) + "\n"
