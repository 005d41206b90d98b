"""Shape definitions: what a client asks for, validated against the catalog and normalised.

A shape is identified by its definition: two requests that mean the same thing must land on the same shape.
So the definition is normalised on creation (selected columns in table order, parameters as a tuple by
index, whitespace and comments of the WHERE text collapsed outside literals) and compares, hashes and
persists by value.  ``definition_hash`` is stable across processes (it feeds handles and on-disk names).

Handles are ``"<definition hash>-<unix µs>"`` (spec §3) and are never reused: :class:`HandleClock` hands out
strictly increasing microseconds, and can be told about handles reloaded from disk.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from sync.shapes.catalog import TableInfo
from sync.shapes.identifiers import quote_relation
from sync.where import referenced_columns
from sync.where.interning import shared

__all__ = [
    "HandleClock",
    "LogMode",
    "ReplicaMode",
    "ShapeDefinition",
    "ShapeDefinitionError",
    "normalise_where",
    "split_handle",
]

ReplicaMode = Literal["default", "full"]
LogMode = Literal["full", "changes_only"]
_FORMAT_VERSION = 1


class ShapeDefinitionError(ValueError):
    """A request parameter that does not define a valid shape; ``field`` is the parameter name."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True, slots=True)
class ShapeDefinition:
    """A validated, normalised shape.

    ``columns`` are the selected columns in table order; ``primary_key`` the table's PK in index order
    (empty for a table without one, whose rows are then keyed by every column).  ``all_columns`` records
    that no ``columns`` parameter was given (the shape follows the table's columns).  ``params`` holds
    ``params[1..n]`` in order and is empty when ``where`` is None.
    """

    schema: str
    table: str
    relation_oid: int
    columns: tuple[str, ...]
    primary_key: tuple[str, ...]
    all_columns: bool
    where: str | None = None
    params: tuple[str, ...] = ()
    replica: ReplicaMode = "default"
    log_mode: LogMode = "full"

    @classmethod
    def create(
        cls,
        relation: tuple[str, str],
        table_info: TableInfo | None,
        *,
        columns: Sequence[str] | None = None,
        where: str | None = None,
        params: Mapping[int, str] | Sequence[str] = (),
        replica: str = "default",
        log_mode: str = "full",
    ) -> ShapeDefinition:
        """Validate a parsed request against the catalog (``table_info`` None: no such table).

        ``relation`` and ``columns`` come from :mod:`sync.shapes.identifiers`; ``where`` should be the WHERE
        package's canonical text for the clause.  Raises :class:`ShapeDefinitionError`.
        """
        if replica not in ("default", "full"):
            raise ShapeDefinitionError("replica", "is invalid")
        if log_mode not in ("full", "changes_only"):
            raise ShapeDefinitionError("log", "is invalid")
        schema, table = relation
        if table_info is None:
            raise ShapeDefinitionError(
                "table",
                f"Table {quote_relation(schema, table)} does not exist. "
                "If the table name contains capitals or special characters you must quote it.",
            )
        table_columns = [c.name for c in table_info.columns]
        generated = {c.name for c in table_info.columns if c.generated}
        pk = tuple(table_info.pk)
        if columns is None:
            selected = tuple(table_columns)
        else:
            wanted = set(columns)
            unknown = [c for c in dict.fromkeys(columns) if c not in set(table_columns)]
            if unknown:
                raise ShapeDefinitionError(
                    "columns", "The following columns are not found on the table: " + ", ".join(unknown)
                )
            # A table without a primary key is keyed by all its columns, so all of them are required.
            required = pk or tuple(table_columns)
            missing = [c for c in required if c not in wanted]
            if missing:
                raise ShapeDefinitionError(
                    "columns",
                    "The list of columns must include all primary key columns, missing: "
                    + ", ".join(missing),
                )
            selected = tuple(c for c in table_columns if c in wanted)
        if generated.intersection(selected):
            # PG < 18 never replicates generated columns: the log could not keep them up to date.
            raise ShapeDefinitionError(
                "columns",
                "The following columns are generated and cannot be included in a shape: "
                + ", ".join(c for c in selected if c in generated),
            )
        where_text = normalise_where(where)
        if where_text is not None and generated:
            in_where = sorted(generated.intersection(referenced_columns(where_text)))
            if in_where:  # PG < 18 never replicates them: changes could not be judged
                raise ShapeDefinitionError(
                    "where",
                    "The following columns are generated and cannot be used in a shape's where clause: "
                    + ", ".join(in_where),
                )
        param_tuple = _param_tuple(params) if where_text is not None else ()
        # Column tuples are shared by every shape of the table, the modes are the module's constants (not
        # the request's strings): an idle shape keeps only what is its own.
        return cls(
            schema=table_info.schema,
            table=table_info.name,
            relation_oid=table_info.oid,
            columns=shared(selected),
            primary_key=shared(pk),
            all_columns=columns is None,
            where=where_text,
            params=param_tuple,
            replica="default" if replica == "default" else "full",
            log_mode="full" if log_mode == "full" else "changes_only",
        )

    @property
    def relation(self) -> tuple[str, str]:
        return (self.schema, self.table)

    @property
    def schema_aspects(self) -> tuple[object, ...]:
        """What a check of the table's schema reads of the definition (its table, columns, key and the
        columns its WHERE reads; not the WHERE itself, params or modes): shapes equal in these get the same
        verdict, so the checks over thousands of shapes judge each distinct value once
        (:func:`sync.shapes.schema_check.check_shapes`,
        :func:`sync.shapes.invalidation.relation_change_reasons`)."""
        return (
            self.relation_oid,
            self.schema,
            self.table,
            self.columns,
            self.primary_key,
            self.all_columns,
            self.where_columns,
        )

    @property
    def where_columns(self) -> frozenset[str]:
        """The columns the WHERE reads (selected or not)."""
        return referenced_columns(self.where) if self.where is not None else frozenset()

    @property
    def read_columns(self) -> frozenset[str]:
        """Every column the shape reads: selected, key and WHERE columns.  One of them dropped, renamed or
        retyped invalidates the shape."""
        return frozenset(self.columns) | frozenset(self.key_columns) | self.where_columns

    @property
    def key_columns(self) -> tuple[str, ...]:
        """The columns that make up a row's key: the PK, or every selected column sorted by name."""
        return self.primary_key or tuple(sorted(self.columns))

    def to_dict(self) -> dict[str, Any]:
        """A msgpack/JSON-friendly form (str, int, bool, list, None only)."""
        return {
            "v": _FORMAT_VERSION,
            "schema": self.schema,
            "table": self.table,
            "relation_oid": self.relation_oid,
            "columns": list(self.columns),
            "primary_key": list(self.primary_key),
            "all_columns": self.all_columns,
            "where": self.where,
            "params": list(self.params),
            "replica": self.replica,
            "log_mode": self.log_mode,
        }

    def to_stored(self) -> dict[str, Any]:
        """:meth:`to_dict` for the shape's log metadata, with its sequences as (shared) tuples.

        msgpack writes tuples as arrays, so the stored bytes and :meth:`from_dict` are unchanged; the copy
        the log writer keeps for the shape's lifetime just holds no lists of its own.
        """
        data = self.to_dict()
        data.update(columns=self.columns, primary_key=self.primary_key, params=self.params)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ShapeDefinition:
        if data.get("v") != _FORMAT_VERSION:
            raise ValueError(f"unsupported shape definition format: {data.get('v')!r}")
        return cls(
            schema=str(data["schema"]),
            table=str(data["table"]),
            relation_oid=int(data["relation_oid"]),
            columns=shared(tuple(str(c) for c in data["columns"])),
            primary_key=shared(tuple(str(c) for c in data["primary_key"])),
            all_columns=bool(data["all_columns"]),
            where=None if data["where"] is None else str(data["where"]),
            params=tuple(str(p) for p in data["params"]),
            replica=data["replica"],
            log_mode=data["log_mode"],
        )

    @property
    def definition_hash(self) -> int:
        """A 32-bit hash of the normalised definition, stable across processes and Python versions."""
        blob = orjson.dumps(self.to_dict(), option=orjson.OPT_SORT_KEYS)
        return int.from_bytes(hashlib.blake2b(blob, digest_size=4).digest(), "big")


def _param_tuple(params: Mapping[int, str] | Sequence[str]) -> tuple[str, ...]:
    if isinstance(params, Mapping):
        return tuple(params[i] for i in sorted(params))
    return tuple(params)


def normalise_where(where: str | None) -> str | None:
    """Collapse whitespace and comments outside literals and quoted names; empty means no WHERE.

    This never changes the meaning of the clause: every run of whitespace or comments between tokens becomes
    one space.  String literals (``'…'``, ``E'…'`` with backslash escapes, ``$tag$…$tag$``) and quoted
    identifiers are copied verbatim.
    """
    if where is None:
        return None
    out: list[str] = []
    i = 0
    n = len(where)
    pending_space = False
    while i < n:
        ch = where[i]
        if ch.isspace():
            pending_space = True
            i += 1
            continue
        if where.startswith("--", i):
            nl = where.find("\n", i)
            i = n if nl < 0 else nl + 1
            pending_space = True
            continue
        if where.startswith("/*", i):
            i = _skip_block_comment(where, i)
            pending_space = True
            continue
        if pending_space and out:
            out.append(" ")
        pending_space = False
        end = _literal_end(where, i)
        out.append(where[i:end])
        i = end
    text = "".join(out)
    return text or None


def _skip_block_comment(text: str, i: int) -> int:
    depth = 0
    n = len(text)
    while i < n:
        if text.startswith("/*", i):
            depth += 1
            i += 2
        elif text.startswith("*/", i):
            depth -= 1
            i += 2
            if depth == 0:
                return i
        else:
            i += 1
    return n


def _literal_end(text: str, i: int) -> int:
    """End of the token starting at ``i`` if it is a literal or quoted name, else ``i + 1``."""
    ch = text[i]
    n = len(text)
    if ch in "'\"":
        backslash = ch == "'" and i > 0 and text[i - 1] in "eE" and (i < 2 or not _word_char(text[i - 2]))
        j = i + 1
        while j < n:
            c = text[j]
            if backslash and c == "\\":
                j += 2
                continue
            if c == ch:
                if j + 1 < n and text[j + 1] == ch:
                    j += 2
                    continue
                return j + 1
            j += 1
        return n
    if ch == "$" and (i == 0 or not _word_char(text[i - 1])):
        close = text.find("$", i + 1)
        tag = text[i : close + 1] if close > 0 else ""
        body = tag[1:-1]
        if tag and (not body or (not body[0].isdigit() and all(_word_char(c) for c in body))):
            end = text.find(tag, close + 1)
            return n if end < 0 else end + len(tag)
    return i + 1


def _word_char(c: str) -> bool:
    return c.isalnum() or c == "_"


def split_handle(handle: str) -> tuple[int, int]:
    """``"<hash>-<µs>"`` -> ``(hash, µs)``; raises ValueError for anything else."""
    head, sep, tail = handle.partition("-")
    if not sep or not head.isdigit() or not tail.isdigit():
        raise ValueError(f"not a shape handle: {handle!r}")
    return int(head), int(tail)


class HandleClock:
    """Hands out shape handles with strictly increasing microsecond stamps (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_us = 0

    def observe(self, handle: str) -> None:
        """Never issue a stamp at or below that of ``handle`` (call for every handle reloaded from disk)."""
        _, us = split_handle(handle)
        with self._lock:
            self._last_us = max(self._last_us, us)

    def new_handle(self, definition: ShapeDefinition) -> str:
        with self._lock:
            us = max(time.time_ns() // 1000, self._last_us + 1)
            self._last_us = us
        return f"{definition.definition_hash}-{us}"
