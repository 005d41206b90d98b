"""TCP timeouts for every connection the engine opens, so that a server that vanishes is noticed.

Why this module exists: a database host that dies, or a network that starts dropping packets (a failover
that moves the address, a partition, a NAT's expired entry), sends no reset.  A connection waiting for an
answer then waits for ever with libpq's defaults (keepalives on, but with the kernel's timings: the first
probe after 2 hours), and one with a request in flight until the kernel gives up retransmitting it (~15
minutes).  Meanwhile the lock's ping, a catalog lookup on a request's path, the publication manager (every
shape creation behind it) or a snapshot hangs.  The replication connection has its own silence timeout
(``replication.receive_timeout_s``); the others get these libpq parameters, unless the DSN sets them:

* ``keepalives_idle`` / ``keepalives_interval`` / ``keepalives_count``: an idle connection is probed after
  half the timeout and given up after about the whole of it without an answer from the peer's kernel;
* ``tcp_user_timeout``: data sent and not acknowledged for that long fails the connection.

A busy server answers both from its kernel, so a long query is never cut by them (statement timeouts are
separate).  libpq ignores them on Unix-domain sockets.
"""

from __future__ import annotations

from psycopg.conninfo import conninfo_to_dict, make_conninfo

__all__ = ["with_tcp_timeout"]

_PROBES = 3


def with_tcp_timeout(dsn: str, seconds: float) -> str:
    """``dsn`` with the TCP parameters above for a dead peer noticed in about ``seconds`` (0: unchanged);
    parameters the DSN sets are kept.  The result is in keyword form."""
    if not dsn or seconds <= 0:
        return dsn
    params = conninfo_to_dict(dsn)
    idle = max(1, round(seconds / 2))
    interval = max(1, round((seconds - idle) / _PROBES))
    defaults = {
        "keepalives": 1,
        "keepalives_idle": idle,
        "keepalives_interval": interval,
        "keepalives_count": _PROBES,
        "tcp_user_timeout": round(seconds * 1000),
    }
    for key, value in defaults.items():
        params.setdefault(key, value)
    return make_conninfo("", **params)
