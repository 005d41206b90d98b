"""``SchemaChecker``: the ShapeCache's periodic catalog checks, run off the cache's inbox.

The cache must never wait on Postgres in its inbox, so the checks of :mod:`sync.shapes.schema_check` run in a
background task: a timer loop asks the cache (``tick``) every ``interval`` seconds to hand over its live
shapes, and :meth:`run` compares them with the catalog in a spawned task, reporting each shape to invalidate
through ``invalidate(handle, reason)`` (the cache's own InvalidateShape tell).  At most one check runs at a
time; one asked for meanwhile (a request found a table missing) runs right after it, with the shapes live
then.  A failed check (Postgres away) is logged and the next one tries again.

A shape is judged against the catalog as the last check found it harmless, not as it was when the shape was
created: a rewrite of the table alone (``VACUUM FULL``) and a column's catalog row changed alone (``SET NOT
NULL``) are each harmless, but both since the shape's creation look like ``ALTER ... TYPE ... USING``
(:func:`~sync.shapes.schema_check.catalog_reason`), and an enum label added and used since then is renamed
unseen.  The checker keeps, per live shape, the table's columns of the last check (shared tuples).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence

from sync import runtime
from sync.shapes.definition import ShapeDefinition
from sync.shapes.schema_check import ColumnTypes, SchemaCatalog, check_shapes

__all__ = ["SchemaChecker"]

logger = logging.getLogger(__name__)


class SchemaChecker:
    """Periodic and on-demand schema checks of a set of live shapes (see the module docstring)."""

    def __init__(
        self,
        catalog: SchemaCatalog,
        interval: float,
        invalidate: Callable[[str, str], None],
        forget_table: Callable[[str, str], None] | None = None,
    ) -> None:
        self._catalog = catalog
        self._interval = interval
        self._invalidate = invalidate
        self._forget_table = forget_table  # drop a cached catalog entry found stale
        self._running = False
        self._again = False  # a check was asked for while one ran
        self._lock = threading.Lock()
        self._tick: Callable[[], bool] | None = None
        self._stopped = runtime.Event()
        self._seen: dict[str, ColumnTypes] = {}  # handle -> its table's columns when last judged harmless

    def start(self, tick: Callable[[], bool]) -> None:
        """Call ``tick()`` every ``interval`` seconds until it returns False or :meth:`stop` (0: never);
        ``tick`` also asks for the check that follows one asked for while another ran."""
        self._tick = tick
        if self._interval > 0:
            runtime.spawn(self._loop, tick, name="shape-schema-check")

    def stop(self) -> None:
        self._stopped.set()
        if not self._running:
            self._catalog.close()

    def run(self, shapes: Sequence[tuple[str, ShapeDefinition]], types: Mapping[str, ColumnTypes]) -> None:
        """Check ``shapes`` (handle, definition) in the background, unless a check is already running."""
        if self._stopped.is_set():
            return
        with self._lock:
            if self._running:
                self._again = True
                return
            self._running = True
        runtime.spawn(self._check, list(shapes), dict(types), name="shape-schema-check-run")

    def _loop(self, tick: Callable[[], bool]) -> None:
        while not self._stopped.wait(self._interval):
            if not tick():
                return

    def check(
        self, shapes: Sequence[tuple[str, ShapeDefinition]], types: Mapping[str, ColumnTypes]
    ) -> list[tuple[str, str]]:
        """Compare ``shapes`` with the catalog now (``types``: their columns as created) and invalidate those
        it breaks; returns them.  Raises ``psycopg.Error`` if Postgres cannot answer.  One at a time."""
        tables = self._catalog.tables(d.relation_oid for _, d in shapes)
        baselines = {h: self._seen.get(h, t) for h, t in types.items()}
        broken = check_shapes(shapes, tables, baselines)
        gone = {h for h, _ in broken}
        self._seen = {
            h: table.columns
            for h, d in shapes
            if h not in gone and h in types and (table := tables.get(d.relation_oid)) is not None
        }
        definitions = dict(shapes)
        for handle, reason in broken:
            if self._forget_table is not None:  # or the next shape is compiled from the stale entry
                self._forget_table(definitions[handle].schema, definitions[handle].table)
            self._invalidate(handle, reason)
        return broken

    def _check(self, shapes: list[tuple[str, ShapeDefinition]], types: dict[str, ColumnTypes]) -> None:
        try:
            self.check(shapes, types)
        except Exception as exc:  # Postgres away: the next check tries again
            logger.warning("schema check failed: %r", exc)
        finally:
            with self._lock:
                self._running = False
                again, self._again = self._again, False
            if self._stopped.is_set():
                self._catalog.close()
            elif again and self._tick is not None:
                self._tick()
