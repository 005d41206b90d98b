"""The Insert fast path of the pgoutput decoder (short text values split in C) against the general decoder,
on TupleData built byte by byte: lengths around the 128/256 boundaries, non-ASCII values, NULLs, empty
strings, unchanged-TOAST markers, invalid UTF-8."""

from __future__ import annotations

import struct
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sync.replication.changes import UNCHANGED_TOAST, Insert, TransactionFragment, Value
from sync.replication.pgoutput import PgOutputDecoder, decode_tuple

OID = 16_400


def relation_message(ncols: int) -> bytes:
    cols = b"".join(b"\x00c%d\x00" % i + struct.pack("!Ii", 25, -1) for i in range(ncols))
    return b"R" + struct.pack("!I", OID) + b"public\x00t\x00f" + struct.pack("!h", ncols) + cols


def tuple_data(values: Sequence[Value | bytes]) -> bytes:
    out = [struct.pack("!h", len(values))]
    for v in values:
        if v is None:
            out.append(b"n")
        elif v is UNCHANGED_TOAST:
            out.append(b"u")
        else:
            raw = v if isinstance(v, bytes) else v.encode()
            out.append(b"t" + struct.pack("!i", len(raw)) + raw)
    return b"".join(out)


def decode_insert(values: Sequence[Value | bytes]) -> tuple[Value, ...]:
    """Feed Begin, the Relation, one Insert and Commit; return the decoded row."""
    out: list[object] = []
    dec = PgOutputDecoder(out.append)
    dec.feed(relation_message(len(values)))
    dec.feed(b"B" + struct.pack("!QqI", 100, 0, 7))
    dec.feed(b"I" + struct.pack("!I", OID) + b"N" + tuple_data(values))
    dec.feed(b"C" + struct.pack("!BQQq", 0, 100, 120, 0))
    (frag,) = [e for e in out if isinstance(e, TransactionFragment)]
    (change,) = frag.changes
    assert isinstance(change, Insert)
    return change.new


def general(values: Sequence[Value | bytes]) -> tuple[Value, ...]:
    return decode_tuple(tuple_data(values), 0)[0]


@pytest.mark.parametrize(
    "values",
    [
        ["1"],
        ["1", "", "x"],
        ["a" * 127, "b" * 128, "c" * 255, "d" * 256, "e"],
        ["é" * 64, "✓" * 43, "日本" * 30, "t", "tt"],  # 128, 129, 180 bytes: length bytes >= 0x80
        ["é" * 100 + "t", "\x01\x7f", "ends in t"],
        ["1", None, "x", UNCHANGED_TOAST],
        [None],
        ["x" * 70_000, "y"],
    ],
)
def test_insert_rows_equal_the_general_decoder(values: list[Value]) -> None:
    assert decode_insert(values) == general(values) == tuple(values)


text = st.text(st.characters(exclude_characters="\x00", exclude_categories=["Cs"]), max_size=300)
value = st.one_of(text, text, st.none(), st.just(UNCHANGED_TOAST))


@settings(max_examples=300, deadline=None)
@given(st.lists(value, min_size=1, max_size=12))
def test_any_row_decodes_like_the_general_decoder(values: list[Value]) -> None:
    assert decode_insert(values) == general(values) == tuple(values)


@pytest.mark.parametrize(
    "bad",
    [
        b"\xff",
        b"\xc3",
        b"\xc3t",
        b"ok\xe2\x9c",
        b"\xa9" + b"a" * 194,  # length byte 0xc3 + the leading continuation byte would decode as 'é'
        b"\x9c\x93" + b"b" * 224,  # length byte 0xe2: the same with a 3-byte sequence
    ],
)
def test_invalid_utf8_still_fails(bad: bytes) -> None:
    values: list[Value | bytes] = ["1", bad, "x"]
    with pytest.raises(UnicodeDecodeError):
        general(values)
    with pytest.raises(UnicodeDecodeError):
        decode_insert(values)
