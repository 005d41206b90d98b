"""Log offsets: the positions clients resume from (spec §3).

An offset is ``<tx>_<op>``.  For replicated changes ``tx`` is the transaction's commit LSN as an integer and
``op`` the change's position inside it, stepping by 2 (so a primary-key change can split into ops n and n+1).
Snapshot chunks use ``tx = 0``: chunk *k* ends at ``0_k`` and ``0_inf`` is the end of the snapshot.  ``-1``
means "before everything".  Offsets compare as tuples with ``inf`` above every integer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar

__all__ = ["INF", "InvalidOffset", "LogOffset"]

INF = 2**64  # sorts above every real op index
_RE = re.compile(r"\A(0|[1-9][0-9]*)_(0|[1-9][0-9]*|inf)\Z")


class InvalidOffset(ValueError):
    """The text is not ``-1``, ``<int>_<int>`` or ``<int>_inf``."""


@dataclass(frozen=True, slots=True, order=True)
class LogOffset:
    """A position in a shape log; ``LogOffset.BEFORE_ALL`` is ``-1``."""

    tx: int
    op: int

    BEFORE_ALL: ClassVar[LogOffset]
    SNAPSHOT_END: ClassVar[LogOffset]

    @classmethod
    def parse(cls, text: str) -> LogOffset:
        if text == "-1":
            return cls.BEFORE_ALL
        m = _RE.match(text)
        if m is None:
            raise InvalidOffset(text)
        op = INF if m.group(2) == "inf" else int(m.group(2))
        return cls(int(m.group(1)), op)

    @classmethod
    def snapshot_chunk(cls, k: int) -> LogOffset:
        return cls(0, k)

    @property
    def is_before_all(self) -> bool:
        return self.tx < 0

    @property
    def is_snapshot(self) -> bool:
        return self.tx == 0

    def __str__(self) -> str:
        if self.tx < 0:
            return "-1"
        return f"{self.tx}_{'inf' if self.op >= INF else self.op}"


LogOffset.BEFORE_ALL = LogOffset(-1, 0)
LogOffset.SNAPSHOT_END = LogOffset(0, INF)
