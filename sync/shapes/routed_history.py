"""The transactions the collector routed that a new shape's snapshot must see: a shape's registration races
them.

Why: Postgres writes (and flushes) a commit record before the committing backend leaves the proc array, and
only then do snapshots see the transaction.  Logical decoding does not wait for that: a transaction may be
decoded, sent and routed to the shapes registered at the time while it is still running for every snapshot.
A shape that registers in that window gets none of its changes (they were routed before), and its snapshot
does not see them either: a gap, for good.  The window is microseconds on an idle machine, a scheduler
quantum on a loaded one, and a whole round trip to the standby under synchronous replication, where every
commit waits in it (``synchronous_standby_names``).

So the collector keeps the xid of every transaction it routed (:class:`RoutedHistory`),
answers each registration with those (all routed before it, the one being routed included), and the snapshot
worker takes its snapshot again until the snapshot sees them all (:func:`unseen`).  Once a snapshot sees a
transaction every later one does: the consumer tells the collector its snapshot (``ForgetVisible``) and the
history forgets the transactions it sees, so it stays short while shapes are being created; between
creations it holds at most :data:`HISTORY_MAX` transactions.  A transaction whose backend stays in the
window while that many later ones are routed is the one case this does not catch.

Tables published for a new shape need no history: the publish step's lock waits for the table's writers
to leave the proc array (:func:`sync.replication.tables.publish_table`).
"""

from __future__ import annotations

import collections
from collections.abc import Iterable

from sync.shapes.xid import PgSnapshot

__all__ = ["HISTORY_MAX", "RoutedHistory", "unseen"]

HISTORY_MAX = 100_000


class RoutedHistory:
    """The xids (32-bit) of the routed transactions that a later snapshot might not see yet, oldest first
    (commit order)."""

    __slots__ = ("_routed",)

    def __init__(self) -> None:
        self._routed: collections.deque[int] = collections.deque(maxlen=HISTORY_MAX)

    def add(self, xid: int) -> None:
        self._routed.append(xid)

    def pending(self) -> tuple[int, ...]:
        """Every transaction a snapshot taken from now on must see (or the shape would miss it)."""
        return tuple(self._routed)

    def forget_visible(self, snapshot: PgSnapshot) -> None:
        """Forget the oldest transactions up to the first one ``snapshot`` does not see: every snapshot
        taken after it sees them too."""
        routed = self._routed
        while routed and snapshot.sees(routed[0]):
            routed.popleft()

    def clear(self) -> None:
        self._routed.clear()


def unseen(snapshot: PgSnapshot, routed: Iterable[int]) -> list[int]:
    """The xids (32-bit) among ``routed`` that ``snapshot`` does not see."""
    return [xid for xid in routed if not snapshot.sees(xid)]
