"""The ``electric-schema`` response header (spec §4): the selected columns' types as clients see them.

Clients parse values from text using this header, so it must name the catalog type (``pg_type.typname``;
the element type for arrays, with ``dims``) and the type modifier in Electric's decoded form.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from sync.shapes.catalog import ColumnInfo, TableInfo
from sync.shapes.definition import ShapeDefinition

__all__ = ["column_schema", "schema_header", "shape_schema"]

_TIME_TYPES = frozenset({"time", "timetz", "timestamp", "timestamptz"})

# Interval typmod: range mask in the high 16 bits, precision in the low 16 (datatype/timestamp.h).
_INTERVAL_FULL_PRECISION = 0xFFFF
_INTERVAL_FULL_RANGE = 0x7FFF
_MONTH, _YEAR, _DAY, _HOUR, _MINUTE, _SECOND = 1 << 1, 1 << 2, 1 << 3, 1 << 10, 1 << 11, 1 << 12
_INTERVAL_FIELDS: Mapping[int, str] = {
    _YEAR: "YEAR",
    _MONTH: "MONTH",
    _DAY: "DAY",
    _HOUR: "HOUR",
    _MINUTE: "MINUTE",
    _SECOND: "SECOND",
    _YEAR | _MONTH: "YEAR TO MONTH",
    _DAY | _HOUR: "DAY TO HOUR",
    _DAY | _HOUR | _MINUTE: "DAY TO MINUTE",
    _DAY | _HOUR | _MINUTE | _SECOND: "DAY TO SECOND",
    _HOUR | _MINUTE: "HOUR TO MINUTE",
    _HOUR | _MINUTE | _SECOND: "HOUR TO SECOND",
    _MINUTE | _SECOND: "MINUTE TO SECOND",
}


def _modifiers(type_name: str, type_mod: int) -> dict[str, Any]:
    if type_mod < 0:
        return {}
    if type_name == "varchar":
        return {"max_length": type_mod - 4}
    if type_name == "bpchar":
        return {"length": type_mod - 4}
    if type_name in ("bit", "varbit"):
        return {"length": type_mod}
    if type_name in _TIME_TYPES:
        return {"precision": type_mod}
    if type_name == "numeric":
        mod = type_mod - 4
        return {"precision": (mod >> 16) & 0xFFFF, "scale": mod & 0xFFFF}
    if type_name == "interval":
        out: dict[str, Any] = {}
        precision = type_mod & 0xFFFF
        fields = (type_mod >> 16) & 0x7FFF
        if precision != _INTERVAL_FULL_PRECISION:
            out["precision"] = precision
        if fields != _INTERVAL_FULL_RANGE and fields in _INTERVAL_FIELDS:
            out["fields"] = _INTERVAL_FIELDS[fields]
        return out
    return {"type_mod": type_mod}


def column_schema(column: ColumnInfo, pk_index: int | None) -> dict[str, Any]:
    out: dict[str, Any] = {"type": column.type_name}
    if column.array_dims > 0:
        out["dims"] = column.array_dims
    if pk_index is not None:
        out["pk_index"] = pk_index
    if column.not_null:
        out["not_null"] = True
    out.update(_modifiers(column.type_name, column.type_mod))
    return out


def shape_schema(definition: ShapeDefinition, table: TableInfo) -> dict[str, dict[str, Any]]:
    """Column name -> schema, for the shape's selected columns in table order."""
    pk = {name: i for i, name in enumerate(table.primary_key)}
    by_name = {c.name: c for c in table.columns}
    return {name: column_schema(by_name[name], pk.get(name)) for name in definition.columns}


def schema_header(definition: ShapeDefinition, table: TableInfo) -> str:
    """The ``electric-schema`` header value (compact JSON)."""
    return orjson.dumps(shape_schema(definition, table)).decode()
