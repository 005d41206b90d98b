"""The session settings that decide how Postgres prints values (and resolves names), pinned alike in every
session we open.

Why this module exists: a value must be byte-identical whether it reaches a client from a snapshot (a
query in a pooled session) or from the log (pgoutput, printed by the walsender of the replication session),
and both use the type's output function under their own session's settings.  A database or role default
(``ALTER DATABASE ... SET DateStyle``) would otherwise print a timestamp one way in the snapshot and another
in the log.  One table, read by both :func:`sync.postgres.connect.replication_conninfo` and the snapshot and
subset sessions (:mod:`sync.shapes.snapshot`), so neither can drift from the other; its two renderings
(connection options and ``SET`` statements) live beside it.
"""

from __future__ import annotations

from typing import Final

from psycopg import sql

__all__ = ["DISPLAY_SETTINGS", "display_settings_options", "display_settings_sql"]

DISPLAY_SETTINGS: Final[dict[str, str]] = {
    "DateStyle": "ISO, DMY",
    "TimeZone": "UTC",
    "IntervalStyle": "iso_8601",
    "extra_float_digits": "1",
    "bytea_output": "hex",
    "lc_monetary": "C",  # money's symbol and separators
    # Only Postgres' own operators and functions resolve in our SQL (the WHERE evaluator implements those):
    # an overload that anyone with CREATE on a schema in the path could add would otherwise decide which
    # rows a snapshot holds, and run as the engine's user (CVE-2018-1058).  It also prints reg* values
    # (regclass...) schema-qualified alike in both kinds of session.  Tables and enum types are qualified.
    # One schema, not a list: ``SET x = 'a, b'`` would name a single schema "a, b".  (pg_temp, searched
    # first for relations and types, is the session's own: nobody else can put anything there.)
    "search_path": "pg_catalog",
    # A row-level security policy would filter a snapshot while the stream sends every row's changes: with
    # this off, a query that a policy would affect fails instead (as pg_dump does), saying so.
    "row_security": "off",
}


def display_settings_options() -> str:
    """The settings as a libpq ``options`` value (``-c name=value`` with spaces escaped)."""
    return " ".join(f"-c {k}={v.replace(' ', chr(92) + ' ')}" for k, v in DISPLAY_SETTINGS.items())


def display_settings_sql() -> sql.Composed:
    """``SET name = 'value'; …`` for every setting (run once per session)."""
    return sql.SQL(" ").join(
        sql.SQL("SET {} = {};").format(sql.Identifier(k), sql.Literal(v)) for k, v in DISPLAY_SETTINGS.items()
    )
