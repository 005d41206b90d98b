"""Helpers the subset runner tests share: the whole-table shape of a table and the body a subset answer
is expected to have (its metadata, then the items, each marked with the answer's snapshot mark).  They
live here, out of test_subset_runner.py, to keep that module under the house limit of 400 lines.
"""

from __future__ import annotations

from typing import Any

import orjson
import psycopg

from sync.postgres.inspector import TableInfo
from sync.shapes.definition import ShapeDefinition
from sync.shapes.log_items import ShapeLogEncoder
from tests.shapes.helpers import read_table


def whole_table_shape(conn: psycopg.Connection[Any], name: str) -> tuple[TableInfo, ShapeLogEncoder]:
    """The catalog info of table ``public.<name>`` and the encoder of its whole-table shape."""
    table = read_table(conn, "public", name)
    assert table is not None
    return table, ShapeLogEncoder(ShapeDefinition.create(("public", name), table))


def expected_body(metadata: dict[str, Any], items: list[bytes]) -> bytes:
    mark = b',"snapshot_mark":%d}}' % metadata["snapshot_mark"]
    marked = [item[:-2] + mark for item in items]
    return b'{"metadata":' + orjson.dumps(metadata) + b',"data":[' + b",".join(marked) + b"]}"
