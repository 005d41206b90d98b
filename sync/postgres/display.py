"""The session settings that decide how Postgres prints values, pinned alike in every session we open.

Why this module exists: a value must be byte-identical whether it reaches a client from a snapshot (a
query in a pooled session) or from the log (pgoutput, printed by the walsender of the replication session),
and both use the type's output function under their own session's settings.  A database or role default
(``ALTER DATABASE ... SET DateStyle``) would otherwise print a timestamp one way in the snapshot and another
in the log.  One table, read by both :func:`sync.postgres.connect.replication_conninfo` and the snapshot and
subset sessions (:mod:`sync.shapes.snapshot`), so neither can drift from the other.
"""

from __future__ import annotations

from typing import Final

__all__ = ["DISPLAY_SETTINGS", "display_settings_options"]

DISPLAY_SETTINGS: Final[dict[str, str]] = {
    "DateStyle": "ISO, DMY",
    "TimeZone": "UTC",
    "IntervalStyle": "iso_8601",
    "extra_float_digits": "1",
    "bytea_output": "hex",
    "lc_monetary": "C",  # money's symbol and separators
}


def display_settings_options() -> str:
    """The settings as a libpq ``options`` value (``-c name=value`` with spaces escaped)."""
    return " ".join(f"-c {k}={v.replace(' ', chr(92) + ' ')}" for k, v in DISPLAY_SETTINGS.items())
