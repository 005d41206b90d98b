"""What the shape engine needs to know about a table from the catalog, as structural Protocols.

``sync.postgres.inspector`` reads ``pg_catalog`` into ``TableInfo``/``ColumnInfo`` values, which fit these
Protocols; declaring only the few facts the shape engine uses keeps ``sync/shapes`` independent of the
inspector's internals (tests use small dataclasses of their own).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

__all__ = ["ColumnInfo", "TableInfo"]


class ColumnInfo(Protocol):
    """One column of a table (no dropped or system columns)."""

    @property
    def name(self) -> str: ...

    @property
    def generated(self) -> bool:
        """A generated column: PG < 18 does not replicate it, so a shape cannot select it."""
        ...

    def schema_entry(self) -> dict[str, Any]:
        """This column's value in the ``electric-schema`` header (spec §4)."""
        ...


class TableInfo(Protocol):
    """A table: its identity, its columns in ``attnum`` order and its primary key in index order."""

    @property
    def oid(self) -> int: ...

    @property
    def schema(self) -> str: ...

    @property
    def name(self) -> str: ...

    @property
    def columns(self) -> Sequence[ColumnInfo]: ...

    @property
    def pk(self) -> tuple[str, ...]:
        """Primary-key column names in index order; empty for a table without a primary key."""
        ...
