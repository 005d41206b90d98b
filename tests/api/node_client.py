"""The Node driver of the official ``@electric-sql/client`` (``tests/node/driver.mjs``) seen from pytest:
:class:`NodeClient` sends it commands and waits for its events; :class:`Workload` makes the random writes
on ``items`` whose shape the client follows.  Used by ``test_official_client.py`` (its module docstring
tells how the tests compare what the client materialises with ``SELECT``)."""

from __future__ import annotations

import json
import os
import queue
import random
import shutil
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import pytest

NODE_DIR = Path(__file__).resolve().parents[1] / "node"
DRIVER = NODE_DIR / "driver.mjs"
Event = dict[str, Any]
T = TypeVar("T")


@dataclass
class NodeClient:
    """The Node driver process: commands in, events out (see the header of driver.mjs)."""

    proc: subprocess.Popen[str]
    events: queue.Queue[Event | None] = field(default_factory=queue.Queue)
    seen: list[Event] = field(default_factory=list)
    latest: dict[str, Event] = field(default_factory=dict)  # the last state event of each stream
    stderr: list[str] = field(default_factory=list)

    @classmethod
    def start(cls, url: str) -> NodeClient:
        node = shutil.which("node")
        assert node, "node is not on PATH"
        assert (NODE_DIR / "node_modules" / "@electric-sql" / "client").is_dir(), (
            "the Node test project is not installed: run `make test` (or `npm ci` in tests/node)"
        )
        proc = subprocess.Popen(
            [node, str(DRIVER)],
            cwd=NODE_DIR,
            env={**os.environ, "SHAPESYNC_URL": url},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        client = cls(proc)
        threading.Thread(target=client._read_stdout, daemon=True).start()
        threading.Thread(target=client._read_stderr, daemon=True).start()
        client.wait(lambda: client.find("ready"), 20, "driver ready")
        return client

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.events.put(json.loads(line))
        self.events.put(None)

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        self.stderr.extend(self.proc.stderr)

    def send(self, **cmd: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.send(cmd="exit")
                self.proc.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(10)

    def wait(self, found: Callable[[], T | None], timeout: float, what: str) -> T:
        """Until ``found()`` (a look at the events so far) returns something, take the driver's next event;
        an ``error``/``fatal`` event, the driver's exit or the deadline fails the test."""
        deadline = time.monotonic() + timeout
        while (result := found()) is None:
            left = deadline - time.monotonic()
            try:
                event = self.events.get(timeout=left) if left > 0 else self.events.get_nowait()
            except queue.Empty:
                pytest.fail(f"timed out after {timeout}s waiting for {what}\n{self.tail()}")
            if event is None:
                pytest.fail(f"node driver exited while waiting for {what}\n{self.tail()}")
            self.seen.append(event)
            if event["ev"] == "state":
                self.latest[event["id"]] = event
            if event["ev"] in ("error", "fatal"):
                pytest.fail(f"client reported {event} while waiting for {what}\n{self.tail()}")
        return result

    def find(self, ev: str, sid: str | None = None) -> Event | None:
        """The first event ``ev`` (of stream ``sid``) seen so far."""
        return next((e for e in self.seen if e["ev"] == ev and e.get("id") == sid), None)

    def state_when(self, sid: str, cond: Callable[[Event], bool]) -> Callable[[], Event | None]:
        """For :meth:`wait`: the latest state of stream ``sid`` once it satisfies ``cond``."""

        def found() -> Event | None:
            state = self.latest.get(sid)
            return state if state is not None and cond(state) else None

        return found

    def tail(self, n: int = 25) -> str:
        lines = [json.dumps(e)[:600] for e in self.seen[-n:]]
        return "last events:\n" + "\n".join(lines) + "\nnode stderr:\n" + "".join(self.stderr[-20:])

    def wait_state(
        self,
        sid: str,
        expected: list[dict[str, Any]],
        timeout: float = 20.0,
        *,
        redelivery: bool = False,
        shape: bool = True,
    ) -> Event:
        """Wait for a state of stream ``sid`` equal to ``expected``; then no change may have been a violation,
        none may have come twice unless ``redelivery`` (SSE, spec §11), and Shape's rows must agree unless
        ``shape`` is false (a resumed stream's Shape starts empty)."""
        state = self.wait(
            self.state_when(sid, lambda st: by_id(st["rows"]) == expected),
            timeout,
            f"stream {sid} to equal {expected}",
        )
        assert state["violations"] == [], state["violations"]
        assert redelivery or state["redelivered"] == 0, self.tail()
        if shape:
            assert by_id(state["shapeRows"]) == expected, "Shape disagrees with the stream's messages"
        return state

    def requests(self, sid: str) -> list[Event]:
        return [e for e in self.seen if e["ev"] == "request" and e["id"] == sid]


def by_id(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(rows, key=lambda r: int(r["id"]))


def query_params(url: str) -> dict[str, str]:
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))


# The workload table.  The shape: WHERE grp < $1 AND flag = $2 (params 3, true), columns id, grp, title, n.
CREATE_ITEMS = """
CREATE TABLE items (id int PRIMARY KEY, grp int NOT NULL, title text, n bigint, flag bool NOT NULL);
INSERT INTO items VALUES (0, 0, 'fence-0', 0, true);
"""
ITEMS_PARAMS = {
    "table": "items",
    "where": "grp < $1 AND flag = $2",
    "params": ["3", "true"],
    "columns": ["id", "grp", "title", "n"],
}
ITEMS_SELECT = "SELECT id, grp, title, n FROM items WHERE grp < 3 AND flag = true"


@dataclass
class Workload:
    """Random single- and multi-statement transactions on ``items``; rows move in and out of the WHERE."""

    dsn: str
    rng: random.Random = field(default_factory=lambda: random.Random(7))
    fences: int = 0

    def setup(self, initial: int = 20) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(CREATE_ITEMS)
            for i in range(1, initial + 1):
                conn.execute("INSERT INTO items VALUES (%s, %s, %s, %s, %s)", self._row(i))

    def _row(self, i: int) -> tuple[int, int, str, int, bool]:
        r = self.rng
        return (
            i,
            r.randrange(5),
            f"t{r.randrange(1000)} 'q' \"d\" é",
            r.randrange(-(2**62), 2**62),
            r.random() < 0.7,
        )

    def round(self, transactions: int) -> None:
        """``transactions`` random transactions, then the fence."""
        r = self.rng
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            for _ in range(transactions):
                with conn.transaction():
                    for _ in range(r.choice((1, 1, 1, 2, 4))):
                        i = r.randrange(1, 40)
                        action = r.random()
                        if action < 0.35:
                            conn.execute(
                                "INSERT INTO items VALUES (%s, %s, %s, %s, %s) ON CONFLICT (id) DO UPDATE"
                                " SET grp = excluded.grp, flag = excluded.flag",
                                self._row(i),
                            )
                        elif action < 0.55:
                            conn.execute("UPDATE items SET grp = %s WHERE id = %s", (r.randrange(5), i))
                        elif action < 0.7:
                            conn.execute("UPDATE items SET flag = NOT flag WHERE id = %s", (i,))
                        elif action < 0.85:
                            conn.execute(
                                "UPDATE items SET title = %s, n = n + 1 WHERE id = %s",
                                (f"u{r.randrange(99)}", i),
                            )
                        else:
                            conn.execute("DELETE FROM items WHERE id = %s", (i,))
        self.fence()

    def fence(self) -> None:
        """Two changes in one transaction, so a client resuming from ``<lsn>_0`` can see the second again."""
        self.fences += 1
        with psycopg.connect(self.dsn, autocommit=True) as conn, conn.transaction():
            conn.execute("UPDATE items SET title = %s WHERE id = 0", (f"fence-{self.fences}",))
            conn.execute(
                "INSERT INTO items VALUES (%s, 0, %s, 0, true)", (100 + self.fences, f"fence-{self.fences}")
            )

    def expected(self, *, full: bool = False) -> list[dict[str, Any]]:
        """``SELECT`` of the shape (with ``full``: every column, as the replica=full stream selects them)."""
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            rows = conn.execute(
                ITEMS_SELECT.replace(", n FROM", ", n, flag FROM") + " ORDER BY id"
            ).fetchall()
        out = [{"id": i, "grp": g, "title": t, "n": {"$bigint": str(n)}} for i, g, t, n, _ in rows]
        if full:
            for row, (*_, flag) in zip(out, rows, strict=True):
                row["flag"] = flag
        return out
