"""Log sequence numbers: Postgres prints them as ``X/Y`` (two hex halves), the replication protocol sends them
as 64-bit integers, and the engine keeps them as ``int`` (the ``tx`` of a :class:`~sync.offsets.LogOffset`).
"""

from __future__ import annotations

__all__ = ["format_lsn", "parse_lsn"]


def parse_lsn(text: str) -> int:
    """``'16/B374D848'`` -> integer; raise ``ValueError`` for anything else."""
    hi, sep, lo = text.partition("/")
    if not sep or not hi or not lo:
        raise ValueError(f"invalid LSN {text!r}")
    return (int(hi, 16) << 32) | int(lo, 16)


def format_lsn(lsn: int) -> str:
    """Integer -> ``'16/B374D848'`` (the form ``pg_current_wal_lsn()`` prints)."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"
