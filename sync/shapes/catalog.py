"""What the shape engine needs to know about a table from the catalog, as structural Protocols.

The inspector (``sync/postgres/inspector.py``) reads ``pg_catalog``; the shape engine only needs a few facts
per table and column.  Declaring them as Protocols keeps ``sync/shapes`` free of the inspector's internals:
any object with these attributes (a frozen dataclass, a named tuple) fits.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

__all__ = ["ColumnInfo", "TableInfo"]


class ColumnInfo(Protocol):
    """One column of a table (no dropped or system columns)."""

    @property
    def name(self) -> str: ...

    @property
    def type_name(self) -> str:
        """``pg_type.typname``; for an array column, the element type's ``typname``."""
        ...

    @property
    def type_mod(self) -> int:
        """``pg_attribute.atttypmod`` (-1 when none)."""
        ...

    @property
    def array_dims(self) -> int:
        """``pg_attribute.attndims``; 0 for a non-array column."""
        ...

    @property
    def not_null(self) -> bool: ...


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
    def primary_key(self) -> Sequence[str]:
        """Primary-key column names in index order; empty for a table without a primary key."""
        ...
