"""Decoding a pgoutput TupleData: the general per-column decoder and the fast path for short-text rows.

Why this module exists: the tuple is the part of a change message whose cost grows with the row, so
its two decoders sit together here, where their shared invariants can be read side by side: the general
:func:`decode_tuple` walks the columns; :func:`short_text_row` decodes a row of short text values (the
common insert) in a few C calls, or returns None and leaves the row to :func:`decode_tuple`, which then
raises whatever error the data holds.  :mod:`sync.replication.pgoutput` binds both at module level and
calls them directly from its inlined Insert path.  :class:`ProtocolError` is defined here, the lowest
module that raises it, and re-exported by ``pgoutput``.
"""

from __future__ import annotations

import struct
from operator import itemgetter

from sync.replication.changes import UNCHANGED_TOAST, Row, Value

__all__ = ["ProtocolError", "decode_tuple", "short_text_row"]

_I32 = struct.Struct("!i")
_T, _N, _U, _B = ord("t"), ord("n"), ord("u"), ord("b")
# A text value shorter than 256 bytes starts with the 5 bytes 't' 0 0 0 <length>.  Text output never contains
# a NUL byte, so 't\0\0\0' occurs in a TupleData only where such a value starts: when it occurs exactly once
# per column, every column is a short text value and the values are what lies between those headers.
_SHORT_TEXT = b"t\x00\x00\x00"
_SHORT_TEXT_STR = _SHORT_TEXT.decode()
_DROP_LENGTH = itemgetter(slice(1, None))  # the length byte left at the start of each split part


class ProtocolError(Exception):
    """A message that does not follow pgoutput protocol version 1."""


def _values(data: bytes, pos: int, out: list[Value]) -> int:
    """Append the values of the TupleData at ``pos`` to ``out``; return the position after it."""
    ncols = (data[pos] << 8) | data[pos + 1]  # Int16, never negative (at most 1600 columns)
    pos += 2
    append = out.append
    unpack_len = _I32.unpack_from
    for _ in range(ncols):
        kind = data[pos]
        if kind == _T:
            start = pos + 5
            pos = start + unpack_len(data, pos + 1)[0]
            append(data[start:pos].decode())
        elif kind == _N:
            append(None)
            pos += 1
        elif kind == _U:
            append(UNCHANGED_TOAST)
            pos += 1
        elif kind == _B:
            raise ProtocolError("binary tuple data received but binary mode was not requested")
        else:
            raise ProtocolError(f"unknown tuple data kind {kind!r}")
    return pos


def short_text_row(data: bytes, pos: int) -> Row | None:
    """The values of the TupleData at ``pos`` when it is the last thing in ``data`` and every column is a
    short text value (the common insert), in a few C calls instead of a loop over the columns; else None.

    The data from the first length byte on is decoded as UTF-8 at once.  A length byte below 0x80 is then
    one character at the start of its part, dropped.  One of 0x80 or more either fails the decoding (after
    a NUL it cannot continue a sequence) or starts a character with the first bytes of its value, which are
    then not valid UTF-8 alone: a part starting with a non-ASCII character goes to the general decoder,
    which raises the error (an all-ASCII text, checked in O(1), has neither).
    """
    if not data.startswith(_SHORT_TEXT, pos + 2):
        return None
    try:
        text = data[pos + 6 :].decode()
    except UnicodeDecodeError:
        return None  # the general decoder raises it again, or a length byte was >= 0x80
    parts = text.split(_SHORT_TEXT_STR)
    if len(parts) != (data[pos] << 8) | data[pos + 1]:
        return None
    if not text.isascii() and not all(p[0] < "\x80" for p in parts):
        return None
    return tuple(map(_DROP_LENGTH, parts))


def decode_tuple(data: bytes, pos: int) -> tuple[Row, int]:
    """TupleData at ``pos`` -> (values, position after it).  Text values stay Postgres text output."""
    out: list[Value] = []
    pos = _values(data, pos, out)
    return tuple(out), pos
