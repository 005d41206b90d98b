"""Capture real pgoutput messages through the SQL interface (``pg_logical_slot_get_binary_changes``).

The decoder tests feed these bytes, exactly as a walsender would send them, to the pure decoder.
"""

from __future__ import annotations

from typing import Any

import psycopg

from sync.replication.changes import RelationChanged, TransactionFragment
from sync.replication.pgoutput import PgOutputDecoder


class SqlSlot:
    def __init__(self, dsn: str, name: str = "t_slot", pub: str = "t_pub") -> None:
        self.conn = psycopg.connect(dsn, autocommit=True)
        self.name = name
        self.pub = pub
        self.conn.execute(f"CREATE PUBLICATION {pub}")
        self.conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (name,))

    def execute(self, sql: str, params: Any = None) -> None:
        self.conn.execute(sql, params)

    def add_table(self, table: str) -> None:
        self.conn.execute(f"ALTER PUBLICATION {self.pub} ADD TABLE {table}")

    def messages(self, *, messages: bool = False) -> list[bytes]:
        opts = ["proto_version", "1", "publication_names", self.pub]
        if messages:
            opts += ["messages", "true"]
        rows = self.conn.execute(
            "SELECT data FROM pg_logical_slot_get_binary_changes(%s, NULL, NULL, VARIADIC %s::text[])",
            (self.name, opts),
        ).fetchall()
        return [bytes(r[0]) for r in rows]

    def decode(self, **kw: Any) -> list[TransactionFragment | RelationChanged]:
        """Decode everything captured since the last call with a fresh decoder built with ``kw``."""
        out: list[TransactionFragment | RelationChanged] = []
        self.feed(PgOutputDecoder(out.append, **kw))
        return out

    def feed(self, decoder: PgOutputDecoder, *, messages: bool = False) -> None:
        for m in self.messages(messages=messages):
            decoder.feed(m)

    def close(self) -> None:
        self.conn.execute("SELECT pg_drop_replication_slot(%s)", (self.name,))
        self.conn.close()
