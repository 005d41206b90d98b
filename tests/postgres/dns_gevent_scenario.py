"""A replication connection to ``host=localhost`` under ``gevent.monkey.patch_all()``, with a slow resolver.

Run as ``python -m tests.postgres.dns_gevent_scenario <dsn>`` from ``test_connect_dns.py``; prints one JSON
object.  Not collected by pytest (no ``test_`` prefix).  ``socket.getaddrinfo`` is replaced by one that
blocks its OS thread for 0.5 s before answering (a slow DNS), while a heartbeat greenlet measures how long
the hub stalls: a lookup made on the hub (or inside libpq's ``PQconnectStart``) would stall it for the whole
0.5 s, or would not go through ``socket.getaddrinfo`` at all.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import json  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

import gevent  # noqa: E402
from psycopg.conninfo import conninfo_to_dict, make_conninfo  # noqa: E402

from sync import runtime  # noqa: E402
from sync.postgres.connect import connect, query, replication_conninfo  # noqa: E402

SLOW_DNS_S = 0.5
_real_sleep = monkey.get_original("time", "sleep")
_real_getaddrinfo = monkey.get_original("socket", "getaddrinfo")
lookups: list[str] = []


def slow_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
    lookups.append(str(host))
    _real_sleep(SLOW_DNS_S)  # blocks the calling OS thread, whichever it is
    return _real_getaddrinfo(host, *args, **kwargs)


def main(dsn: str) -> dict[str, object]:
    params = conninfo_to_dict(dsn)
    params["host"] = "localhost"
    params.pop("hostaddr", None)
    conninfo = replication_conninfo(make_conninfo("", **params))
    socket.getaddrinfo = slow_getaddrinfo
    stalls: list[float] = []
    running = True

    def heartbeat() -> None:
        last = time.monotonic()
        while running:
            gevent.sleep(0.02)
            now = time.monotonic()
            stalls.append(now - last)
            last = now

    beat = gevent.spawn(heartbeat)
    gevent.sleep(0.05)
    started = time.monotonic()
    pg = connect(conninfo, timeout=10)
    elapsed = time.monotonic() - started
    try:
        (row,) = query(pg, "IDENTIFY_SYSTEM")
    finally:
        pg.finish()
    running = False
    beat.join()
    return {
        "gevent": runtime.gevent_active(),
        "lookups": lookups,
        "connect_s": elapsed,
        "identified": row[0] is not None,
        "beats": len(stalls),
        "max_stall_s": max(stalls),
    }


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1])))
