"""The replication session and the snapshot sessions print values under the same settings, whatever the
database's own defaults: every value is byte-identical from a snapshot and from the log."""

from __future__ import annotations

import psycopg
from psycopg import pq, sql

from sync.postgres.connect import connect, replication_conninfo
from sync.postgres.display import DISPLAY_SETTINGS
from sync.shapes.snapshot_worker import connect_snapshot

# database defaults unlike every pinned setting (this machine has only the C locales: C.utf8 differs by name)
OTHER_DEFAULTS = {
    "DateStyle": "SQL, MDY",
    "TimeZone": "Asia/Tokyo",
    "IntervalStyle": "postgres_verbose",
    "extra_float_digits": "0",
    "bytea_output": "escape",
    "lc_monetary": "C.utf8",
    "search_path": "public",
    "row_security": "on",
}


def _replication_show(dsn: str, name: str) -> str:
    pg = connect(replication_conninfo(dsn))  # a replication=database session, as the stream's
    try:
        res = pg.exec_(f"SHOW {name}".encode())
        assert res.status == pq.ExecStatus.TUPLES_OK, pg.error_message
        value = res.get_value(0, 0)
        assert value is not None
        return value.decode()
    finally:
        pg.finish()


def test_every_display_setting_is_pinned_in_both_kinds_of_session(db_dsn: str) -> None:
    assert set(OTHER_DEFAULTS) == set(DISPLAY_SETTINGS)
    with psycopg.connect(db_dsn, autocommit=True) as admin:
        dbname = admin.info.dbname
        for name, value in OTHER_DEFAULTS.items():
            admin.execute(
                sql.SQL("ALTER DATABASE {} SET {} = {}").format(
                    sql.Identifier(dbname), sql.Identifier(name), sql.Literal(value)
                )
            )
    with psycopg.connect(db_dsn) as plain:  # the defaults do apply to a session that pins nothing
        for name, value in OTHER_DEFAULTS.items():
            shown = plain.execute(sql.SQL("SHOW {}").format(sql.Identifier(name))).fetchone()
            assert shown is not None and shown[0] == value, name
    with connect_snapshot(db_dsn) as snap:
        snapshot = {
            n: snap.execute(sql.SQL("SHOW {}").format(sql.Identifier(n))).fetchone() for n in OTHER_DEFAULTS
        }
    for name, value in DISPLAY_SETTINGS.items():
        replication = _replication_show(db_dsn, name)
        assert snapshot[name] == (replication,), name
        assert replication == value, name


def test_the_replication_session_names_itself_unless_the_url_does(db_dsn: str) -> None:
    """An operator tells it apart in pg_stat_replication and keeps synchronous_standby_names off it."""
    assert _replication_show(db_dsn, "application_name") == "shapesync"
    assert _replication_show(f"{db_dsn} application_name=app-sync", "application_name") == "app-sync"
