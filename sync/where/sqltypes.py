"""Types as SQL spells them in a clause, mapped to our type names, and ours shown back in messages.

Why this module exists: a cast target arrives as sqlglot's ``DataType`` (its own kinds: ``INT``,
``DOUBLE``, ``USERDEFINED`` for enums and ``pg_catalog`` names...), a type-named function (``int4(x)``,
``boolean(x)``) by its Postgres name or alias, and error messages must print types the way Postgres does
(``integer``, ``mood`` for an enum, ``jsonb``); that translation table is independent of type resolution
(:mod:`sync.where.binder`), which only asks it questions.
"""

from __future__ import annotations

from sqlglot import exp

from sync.where.grammar import fold_identifier
from sync.where.syntax import Parsed

__all__ = ["ALIASES", "NAMED_TYPES", "readable", "type_from_sql"]

_SQL_TYPES: dict[str, str] = {
    "INT": "int4",
    "BIGINT": "int8",
    "SMALLINT": "int2",
    "FLOAT": "float4",
    "DOUBLE": "float8",
    "DECIMAL": "numeric",
    "TEXT": "text",
    "VARCHAR": "varchar",
    "CHAR": "bpchar",
    "BPCHAR": "bpchar",
    "NAME": "name",
    "BOOLEAN": "bool",
    "DATE": "date",
    "TIME": "time",
    "TIMESTAMP": "timestamp",
    "TIMESTAMPTZ": "timestamptz",
    "INTERVAL": "interval",
    "UUID": "uuid",
    "JSONB": "other:jsonb",
    "JSON": "other:json",
    "VARBINARY": "other:bytea",
}
NAMED_TYPES = {
    "int2", "int4", "int8", "float4", "float8", "numeric", "text", "varchar", "bpchar", "bool", "date",
    "time", "timestamp", "timestamptz", "interval", "uuid", "integer", "smallint", "bigint", "real",
    "boolean",
}  # fmt: skip
ALIASES = {"integer": "int4", "smallint": "int2", "bigint": "int8", "real": "float4", "boolean": "bool"}


def readable(t: str) -> str:
    """Type ``t`` as Postgres prints it in messages (an enum without its schema, ``other:jsonb`` as jsonb)."""
    if t.startswith("enum:"):
        return t.split(".", 1)[1]
    if t.startswith("other:"):
        return t[6:]
    if t.endswith("[]"):
        return readable(t[:-2]) + "[]"
    return t


def type_from_sql(
    dt: exp.Expr, loc: int, enums: dict[str, tuple[str, ...]], parsed: Parsed
) -> tuple[str, int | None]:
    """Our type name (and varchar/char length) for a sqlglot ``DataType`` (errors located at ``loc``)."""
    if not isinstance(dt, exp.DataType):
        raise parsed.at(loc, "unsupported type")
    kind = dt.this.name if hasattr(dt.this, "name") else str(dt.this)
    if kind == "ARRAY":
        if not dt.expressions:
            raise parsed.at(loc, "unsupported type array")
        inner, _ = type_from_sql(dt.expressions[0], loc, enums, parsed)
        return (inner if inner.endswith("[]") else inner + "[]"), None
    params = [p for p in dt.expressions if isinstance(p, exp.DataTypeParam)]
    if kind == "USERDEFINED":
        raw = str(dt.args.get("kind", ""))
        return _named_type(raw, loc, enums, parsed), None
    name = _SQL_TYPES.get(kind)
    if name is None:
        raise parsed.at(loc, f"unsupported type {dt.sql('postgres').lower()}")
    length: int | None = None
    if params:
        if name in ("varchar", "bpchar") and len(params) == 1:
            length = int(str(params[0].this.this))
        else:
            raise parsed.at(loc, f"unsupported type {dt.sql('postgres').lower()}")
    elif kind == "CHAR":
        length = 1
    return name, length


def _named_type(raw: str, loc: int, enums: dict[str, tuple[str, ...]], parsed: Parsed) -> str:
    parts = [fold_identifier(p) for p in raw.split(".")]
    if len(parts) == 2 and parts[0] == "pg_catalog" and parts[1] in NAMED_TYPES:
        return ALIASES.get(parts[1], parts[1])
    for t in enums:
        schema, name = t[5:].split(".", 1)
        if parts in ([name], [schema, name]):
            return t
    raise parsed.at(loc, f"unsupported type {raw}")
