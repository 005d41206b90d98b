"""An O(1) table for pykka's ``ActorRegistry`` (installed when `supervisors` is imported).

Why this module exists: pykka keeps every running actor's ref in one list, and ``ActorRegistry.unregister``
(called by every actor that stops) does ``ref in list`` then ``list.remove(ref)``: two linear scans. With
three actors per shape and 10,000 shapes, stopping the tree cost ~30,000 x 30,000 comparisons, all on the
gevent hub's thread: ~20 s of CPU during which the hub ran nothing else, so supervisors waiting on their
children's exits timed out and abandoned thousands of children that were stopping normally.

`RefTable` keeps the same refs in an insertion-ordered dict and offers exactly the list operations
pykka's registry uses (``append``, ``remove``, ``in``, iteration, ``[:]``, ``len``), so ``get_all`` order,
``stop_all`` order and every other registry behaviour stay pykka's own; only their cost changes. pykka
guards every access with its registry lock, as before.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import pykka

__all__ = ["RefTable", "install"]


class RefTable:
    """The list subset pykka's ``ActorRegistry`` uses, over an insertion-ordered dict (O(1) removal)."""

    __slots__ = ("_refs",)

    def __init__(self, refs: Iterable[Any] = ()) -> None:
        self._refs: dict[Any, None] = dict.fromkeys(refs)

    def append(self, ref: Any) -> None:
        self._refs[ref] = None

    def remove(self, ref: Any) -> None:
        try:
            del self._refs[ref]
        except KeyError:
            msg = "RefTable.remove(x): x not in table"
            raise ValueError(msg) from None

    def __contains__(self, ref: object) -> bool:
        return ref in self._refs

    def __iter__(self) -> Iterator[Any]:
        return iter(list(self._refs))

    def __len__(self) -> int:
        return len(self._refs)

    def __getitem__(self, index: slice) -> list[Any]:
        return list(self._refs)[index]


def install() -> None:
    """Replace pykka's registry list by a `RefTable` holding the same refs (idempotent)."""
    registry = pykka.ActorRegistry
    with registry._actor_refs_lock:  # pykka's own lock around its own table
        current = registry._actor_refs
        if isinstance(current, RefTable):
            return
        if not isinstance(current, list):
            msg = f"pykka.ActorRegistry._actor_refs is a {type(current).__name__}, not a list: pykka changed"
            raise TypeError(msg)
        setattr(registry, "_actor_refs", RefTable(current))  # noqa: B010  # a ClassVar typed as list
