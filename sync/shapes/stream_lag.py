"""``StreamLag``: whether the replication stream is behind, from how late commits are routed.

Why a module of its own: the ShapeLogCollector gathers a batch reaching many shapes for longer while the
stream is behind (a burst committed faster than it is read: telling part of it now would only make every
shape handle the rest separately); the verdict is a small pure rule, kept apart from the actor.

A commit's lag is our clock minus its commit timestamp (Postgres's clock).  The quickest lag seen is the
baseline, so a constant skew between the two clocks cancels out; the baseline may rise a little with every
commit, so a clock step back fades out.  The verdict only steers batching: a wrong one changes how long a
wide batch gathers, within the collector's bound, never what is delivered.
"""

from __future__ import annotations

import time

__all__ = ["BEHIND_S", "PG_EPOCH_S", "StreamLag"]

BEHIND_S = 0.1  # a commit routed this much later after it committed than the quickest ones: behind
PG_EPOCH_S = 946_684_800.0  # 2000-01-01 in Unix time: Postgres timestamps count from there
_DRIFT_S = 0.001  # per commit, the quickest lag known may rise by this much


class StreamLag:
    """Tracks the lag of routed commits (see the module docstring)."""

    __slots__ = ("behind", "quickest")

    def __init__(self) -> None:
        self.quickest = float("inf")  # the quickest commit -> routed lag seen (clock skew included)
        self.behind = False  # the last commit was routed well after it committed

    def note(self, commit_time_us: int, now: float | None = None) -> None:
        """A commit with this timestamp (µs since 2000-01-01) is routed now (Unix time)."""
        lag = (time.time() if now is None else now) - (commit_time_us / 1e6 + PG_EPOCH_S)
        self.quickest = quickest = min(lag, self.quickest + _DRIFT_S)
        self.behind = lag - quickest > BEHIND_S
