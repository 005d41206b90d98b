"""The initial snapshot streamed by ``COPY (SELECT …) TO STDOUT``, its lines turned into log items cheaply.

Why: a server-side cursor (1,000 rows per round trip, a dict and two ``orjson.dumps`` per row) cost ~3.6 s
per million rows in the snapshot worker, several times the ``psql`` COPY of the same rows.  COPY streams
without round trips, and its text format writes each value with the column type's output function, the
very text pgoutput sends (with :data:`sync.shapes.snapshot.DISPLAY_SETTINGS`, as always): no ``::text``
cast anywhere (``bool::text`` is ``true``, ``char(n)::text`` drops the padding).

Building the item JSON inside Postgres was measured and rejected: ``to_json(text)`` per value made the query
~5x slower than the plain COPY (200k rows of five columns: ~1.3 s against ~0.25 s), more than Python needs.

Per line, :class:`CopyItemBuilder` takes a fast path when the line has no ``"``, no control character and
no backslash except ``\\N`` (NULL) fields: then COPY did not escape anything and JSON needs no escaping
either, so the item is one bytes ``%`` formatting of the fields into a template.  Any other line is
unescaped field by field and goes through :meth:`ShapeLogEncoder.snapshot_item`, the reference.  The
template is built from the same public pieces (``key_prefix``, ``orjson.dumps`` of names and relation);
tests/shapes/test_snapshot_copy.py checks both paths byte for byte against the encoder on replicated rows.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Final

import orjson
import psycopg
from psycopg import sql

from sync.shapes.definition import ShapeDefinition
from sync.shapes.log_items import ShapeLogEncoder, key_prefix
from sync.shapes.snapshot import snapshot_query

__all__ = ["CopyItemBuilder", "copy_items", "snapshot_copy_statement", "unescape_copy_text"]

_NULL: Final = b"\\N"
# A line needing the slow path: a quote or a control character (tab and newline are COPY's separators), or
# a backslash that does not start ``\N`` (tested by counting: COPY writes ``\N`` only for NULL).
_SLOW: Final = re.compile(rb'["\x00-\x08\x0b-\x1f]')
_ESCAPES: Final = {b"b": b"\b", b"f": b"\f", b"n": b"\n", b"r": b"\r", b"t": b"\t", b"v": b"\v"}
_ESCAPE_RE: Final = re.compile(rb"\\(?:([0-7]{1,3})|x([0-9a-fA-F]{1,2})|(.))", re.DOTALL)


def snapshot_copy_statement(
    conn: psycopg.Connection[Any],
    definition: ShapeDefinition,
    where_sql: sql.Composable | None = None,
    params: Sequence[Any] = (),
) -> str:
    """``COPY (<snapshot_query>) TO STDOUT`` with the WHERE's parameters merged client-side (COPY takes no
    server-side parameters; the mogrify reads ``%%`` as ``%`` exactly as execute does)."""
    query = sql.Composed([sql.SQL("COPY ("), snapshot_query(definition, where_sql), sql.SQL(") TO STDOUT")])
    return psycopg.ClientCursor(conn).mogrify(query, tuple(params))


def _unescape_one(m: re.Match[bytes]) -> bytes:
    octal, hexa, char = m.groups()
    if octal is not None:
        return bytes([int(octal, 8) & 0xFF])
    if hexa is not None:
        return bytes([int(hexa, 16)])
    return _ESCAPES.get(char, char)


def unescape_copy_text(field: bytes) -> bytes:
    """Reverse COPY's text-format escaping of one field (``\\\\``, ``\\n``, ``\\t``, octal, ...)."""
    return _ESCAPE_RE.sub(_unescape_one, field) if b"\\" in field else field


def _pct(b: bytes) -> bytes:
    return b.replace(b"%", b"%%")


class CopyItemBuilder:
    """``(key, json)`` of one COPY text line (with its ``\\n``) of the shape's snapshot query."""

    __slots__ = (
        "_encoder",
        "_encoding",
        "_key_head",
        "_key_pos",
        "_kjson_head",
        "_ncols",
        "_quoted",
        "_single",
        "_tmpl",
    )

    def __init__(
        self, definition: ShapeDefinition, encoder: ShapeLogEncoder, encoding: str = "utf-8"
    ) -> None:
        self._encoder = encoder
        self._encoding = encoding  # the connection's (Python codec name); the fast path needs UTF-8
        columns = definition.columns
        self._ncols = len(columns)
        sel = {c: i for i, c in enumerate(columns)}
        self._key_pos = tuple(sel[c] for c in definition.key_columns)
        prefix = key_prefix(definition.schema, definition.table).encode()
        self._key_head = prefix
        self._kjson_head = orjson.dumps(prefix.decode())[1:-1]  # the prefix inside a JSON string
        self._single = len(self._key_pos) == 1
        leads = [(b"," if i else b"") + _pct(orjson.dumps(c)) + b":" for i, c in enumerate(columns)]
        rel = orjson.dumps([definition.schema, definition.table])
        tail = b'},"headers":{"operation":"insert","relation":' + _pct(rel) + b"}}"
        head = b'{"key":"%s","value":{'
        self._tmpl = head + b"".join(lead + b"%s" for lead in leads) + tail
        self._quoted = head + b"".join(lead + b'"%s"' for lead in leads) + tail

    def __call__(self, line: bytes) -> tuple[str, bytes]:
        return self.build([line])[0]

    def build(self, lines: Sequence[Any]) -> list[tuple[str, bytes]]:
        """The items of consecutive lines (bytes-like, each ending ``\\n``); the slow-path tests run once
        over the whole batch, and the lines are split out of it in one C call."""
        blob = b"".join(lines)
        rows = blob.split(b"\n")
        rows.pop()  # after the last newline (COPY escapes newlines inside values)
        if (
            self._encoding != "utf-8"
            or _SLOW.search(blob) is not None
            or (b"\\" in blob and blob.count(b"\\") != blob.count(_NULL))
        ):
            return [self._one(row) for row in rows]
        return self._fast(rows, _NULL in blob)

    def _one(self, line: bytes) -> tuple[str, bytes]:
        if (
            self._encoding != "utf-8"
            or _SLOW.search(line) is not None
            or line.count(b"\\") != line.count(_NULL)
        ):
            return self._slow(line)
        return self._fast([line], _NULL in line)[0]

    def _fast(self, lines: list[bytes], nulls: bool) -> list[tuple[str, bytes]]:
        """Lines (without their newline) with nothing to escape (COPY's ``\\N`` fields aside)."""
        out: list[tuple[str, bytes]] = []
        append = out.append
        ncols = self._ncols
        key_head = self._key_head
        kjson_head = self._kjson_head
        tmpl = self._tmpl
        quoted = self._quoted
        single = self._key_pos[0] if self._single else -1
        key_pos = self._key_pos
        for line in lines:
            fields = line.split(b"\t")
            if len(fields) != ncols:
                raise ValueError(f"COPY line has {len(fields)} fields, expected {ncols}")
            if single >= 0:
                v = fields[single]
                if v == _NULL:
                    key = key_head + b"/_"
                    kjson = kjson_head + b"/_"
                else:
                    if b"/" in v:
                        v = v.replace(b"/", b"//")
                    key = key_head + b'/"' + v + b'"'
                    kjson = kjson_head + b'/\\"' + v + b'\\"'
            else:
                kparts = [
                    b"_" if (v := fields[i]) == _NULL else b'"' + v.replace(b"/", b"//") + b'"'
                    for i in key_pos
                ]
                key = b"/".join([key_head, *kparts])
                kjson = b"/".join([kjson_head, *(p.replace(b'"', b'\\"') for p in kparts)])
            if nulls and _NULL in line:
                values = [b"null" if f == _NULL else b'"' + f + b'"' for f in fields]
                append((key.decode(), tmpl % (kjson, *values)))
            else:
                append((key.decode(), quoted % (kjson, *fields)))
        return out

    def _slow(self, line: bytes) -> tuple[str, bytes]:
        fields = line.split(b"\t")
        if len(fields) != self._ncols:
            raise ValueError(f"COPY line has {len(fields)} fields, expected {self._ncols}")
        enc = self._encoding
        row = [None if f == _NULL else unescape_copy_text(f).decode(enc) for f in fields]
        return self._encoder.snapshot_item(row)


def copy_items(
    lines: Iterable[Any], builder: CopyItemBuilder, batch_rows: int
) -> Iterator[list[tuple[str, bytes]]]:
    """Lists of up to ``batch_rows`` ``(key, json)`` from a running COPY (its rows, each ending ``\\n``)."""
    batch: list[Any] = []  # psycopg's memoryviews, each over its own buffer: joined once per batch
    append = batch.append
    for data in lines:
        append(data)
        if len(batch) >= batch_rows:
            yield builder.build(batch)
            batch = []
            append = batch.append
    if batch:
        yield builder.build(batch)
