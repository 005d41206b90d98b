"""Shares equal immutable values between shapes, so thousands of idle shapes of one table hold one copy.

Every shape of a table carries the same small metadata (its column names, key columns, column types, the
SQL template of its clause...); built per shape they cost a few hundred bytes each.  :func:`shared` returns
the one canonical object equal to a value.  Only immutable (hashable) values go in, so sharing is safe;
the table is bounded (cleared when full: a cleared entry only means a new copy, never a wrong value).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from types import MappingProxyType
from typing import Any, TypeVar

__all__ = ["shared", "shared_mapping"]

H = TypeVar("H", bound=Hashable)

_MAX_ENTRIES = 16_384
_table: dict[Any, Any] = {}


def shared(value: H) -> H:
    """The canonical object equal to ``value`` (itself the first time); thread-safe (one dict op)."""
    if len(_table) >= _MAX_ENTRIES:
        _table.clear()
    found: H = _table.setdefault((type(value), value), value)
    return found


def shared_mapping(items: Mapping[Any, Any]) -> Mapping[Any, Any]:
    """A read-only mapping equal to ``items``, shared with every equal one (values must be hashable)."""
    key = (MappingProxyType, frozenset(items.items()))
    if len(_table) >= _MAX_ENTRIES:
        _table.clear()
    found = _table.get(key)
    if found is None:
        found = _table.setdefault(key, MappingProxyType(dict(items)))
    return found  # type: ignore[no-any-return]
