"""String literal decoding: standard ``'..'``, escape ``E'..'``, Unicode ``U&'..'`` and ``$tag$..$tag$``.

sqlglot normalises string tokens lossily, so the value is decoded from the source text of the token.
"""

from __future__ import annotations

from sqlglot.tokenizer_core import Token

from sync.where.syntax import TT

__all__ = ["decode_string"]


_ESCAPES: dict[str, str] = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


def decode_string(text: str, tok: Token) -> str:
    """The value of a string token, decoded from the source (standard, ``E''`` and ``$$`` strings)."""
    raw = text[tok.start : tok.end + 1]
    if tok.token_type == TT.HEREDOC_STRING:
        end = raw.index("$", 1)
        return raw[end + 1 : len(raw) - end - 1]
    if tok.token_type == TT.UNICODE_STRING:
        return _decode_unicode(raw[3:-1].replace("''", "'"))
    if tok.token_type == TT.BYTE_STRING or raw[:1] in ("e", "E"):
        return _decode_escape(raw[2:-1])
    if tok.token_type == TT.STRING and raw.startswith("'"):
        return raw[1:-1].replace("''", "'")
    return str(tok.text)


def _decode_unicode(body: str) -> str:
    """``U&'...'`` with the default escape character: ``\\XXXX``, ``\\+XXXXXX``, ``\\\\``."""
    out: list[str] = []
    i, n = 0, len(body)
    while i < n:
        if body[i] == "\\" and i + 1 < n:
            if body[i + 1] == "\\":
                out.append("\\")
                i += 2
            elif body[i + 1] == "+":
                out.append(chr(int(body[i + 2 : i + 8], 16)))
                i += 8
            else:
                out.append(chr(int(body[i + 1 : i + 5], 16)))
                i += 5
        else:
            out.append(body[i])
            i += 1
    return "".join(out)


def _decode_escape(body: str) -> str:
    out: list[str] = []
    i, n = 0, len(body)
    while i < n:
        ch = body[i]
        if ch == "'" and i + 1 < n and body[i + 1] == "'":
            out.append("'")
            i += 2
            continue
        if ch != "\\" or i + 1 >= n:
            out.append(ch)
            i += 1
            continue
        nxt = body[i + 1]
        if nxt in _ESCAPES:
            out.append(_ESCAPES[nxt])
            i += 2
        elif nxt in "01234567":
            j = i + 1
            while j < min(i + 4, n) and body[j] in "01234567":
                j += 1
            out.append(chr(int(body[i + 1 : j], 8)))
            i = j
        elif nxt == "x" and i + 2 < n and body[i + 2] in "0123456789abcdefABCDEF":
            j = i + 2
            while j < min(i + 4, n) and body[j] in "0123456789abcdefABCDEF":
                j += 1
            out.append(chr(int(body[i + 2 : j], 16)))
            i = j
        elif nxt in "uU":
            width = 4 if nxt == "u" else 8
            out.append(chr(int(body[i + 2 : i + 2 + width], 16)))
            i += 2 + width
        else:
            out.append(nxt)
            i += 2
    return "".join(out)
