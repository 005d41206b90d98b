"""The ``electric-schema`` response header (spec §4): the selected columns' types as clients see them.

Each column's entry (type name, ``dims``, ``pk_index``, ``not_null``, typmod-derived modifiers) comes from the
catalog inspector (``ColumnInfo.schema_entry()``); this module picks the shape's columns, in table order,
and renders the header value once per shape (callers cache it until the table changes).
"""

from __future__ import annotations

from typing import Any

import orjson

from sync.shapes.catalog import TableInfo
from sync.shapes.definition import ShapeDefinition

__all__ = ["schema_header", "shape_schema"]


def shape_schema(definition: ShapeDefinition, table: TableInfo) -> dict[str, dict[str, Any]]:
    """Column name -> schema entry, for the shape's selected columns in table order."""
    by_name = {c.name: c for c in table.columns}
    return {name: by_name[name].schema_entry() for name in definition.columns}


def schema_header(definition: ShapeDefinition, table: TableInfo) -> str:
    """The ``electric-schema`` header value (compact JSON)."""
    return orjson.dumps(shape_schema(definition, table)).decode()
