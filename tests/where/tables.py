"""Catalog descriptions for pure WHERE tests (the inspector itself is tested against Postgres)."""

from __future__ import annotations

from sync.postgres.inspector import ColumnInfo, TableInfo, TypeInfo

MOOD = TypeInfo(
    oid=90001, name="mood", schema="public", kind="e", category="E", enum_labels=("sad", "ok", "happy")
)


def scalar(name: str) -> TypeInfo:
    return TypeInfo(oid=0, name=name, schema="pg_catalog", kind="b", category="X")


def array_of(t: TypeInfo) -> TypeInfo:
    return TypeInfo(oid=0, name="_" + t.name, schema=t.schema, kind="b", category="A", element=t)


def make_table(columns: dict[str, TypeInfo], pk: tuple[str, ...] = ("id",)) -> TableInfo:
    cols = tuple(
        ColumnInfo(
            name=name,
            attnum=i + 1,
            type=t,
            type_mod=-1,
            dims=1 if t.element is not None else 0,
            not_null=name in pk,
            pk_index=pk.index(name) if name in pk else None,
            generated=False,
        )
        for i, (name, t) in enumerate(columns.items())
    )
    return TableInfo(oid=1, schema="public", name="items", columns=cols)


ITEMS = make_table(
    {
        "id": scalar("int4"),
        "big": scalar("int8"),
        "small": scalar("int2"),
        "price": scalar("numeric"),
        "score": scalar("float8"),
        "title": scalar("text"),
        "code": scalar("varchar"),
        "done": scalar("bool"),
        "uid": scalar("uuid"),
        "day": scalar("date"),
        "at": scalar("timestamptz"),
        "span": scalar("interval"),
        "tags": array_of(scalar("text")),
        "nums": array_of(scalar("int4")),
        "status": MOOD,
        "Weird Name": scalar("text"),
        "doc": scalar("jsonb"),
    }
)


def oracle_table() -> TableInfo:
    """The oracle test's table ``t`` (see ``oracle_values.DDL``), without asking Postgres."""
    names = {
        "i2": "int2", "i4": "int4", "i8": "int8", "f4": "float4", "f8": "float8", "n": "numeric", "t": "text",
        "v": "varchar", "b": "bool", "u": "uuid", "d": "date", "tm": "time", "ts": "timestamp",
        "tz": "timestamptz", "iv": "interval",
    }  # fmt: skip
    cols: dict[str, TypeInfo] = {c: scalar(n) for c, n in names.items()}
    cols["ia"] = array_of(scalar("int4"))
    cols["ta"] = array_of(scalar("text"))
    cols["m"] = MOOD
    return make_table(cols, pk=())
