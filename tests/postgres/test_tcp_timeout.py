"""Every connection the engine opens to Postgres gives a vanished server up in about
``database.tcp_timeout_s`` (keepalive probes, ``tcp_user_timeout``), not in the kernel's hours.

The sockets are read in this process, under the real engine: each TCP connection to the cluster that the
engine opened (the lock's, replication's, the catalog's, the publication manager's, a snapshot's ...) must
carry the options.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict

from api.engine_adapter import EngineShapes
from api.engine_port import ShapeDefinition
from tests.fixtures.engine import streaming_engine


def _sockets_to(port: int) -> dict[int, socket.socket]:
    """This process's TCP sockets connected to ``port``, by descriptor (duplicates: close them)."""
    found: dict[int, socket.socket] = {}
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            if not os.readlink(f"/proc/self/fd/{name}").startswith("socket:"):
                continue
            sock = socket.socket(fileno=os.dup(fd))
        except OSError:  # closed meanwhile
            continue
        try:
            if (
                sock.family == socket.AF_INET
                and sock.type == socket.SOCK_STREAM
                and sock.getpeername()[1] == port
            ):
                found[fd] = sock
                continue
        except OSError:
            pass
        sock.close()
    return found


def test_every_engine_connection_gives_a_silent_server_up_in_tcp_timeout_s(
    db_dsn: str, tmp_path: Path
) -> None:
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE tcp_items (id int PRIMARY KEY, label text)")
    port = int(str(conninfo_to_dict(db_dsn)["port"]))
    before = _sockets_to(port)
    for sock in before.values():
        sock.close()
    with streaming_engine(db_dsn, tmp_path, tcp_timeout_s=12) as engine:
        handle = EngineShapes(engine).get_or_create(ShapeDefinition("tcp_items", None, (), None, "default"))
        assert handle
        opened = {fd: s for fd, s in _sockets_to(port).items() if fd not in before}
        try:
            assert len(opened) >= 4, f"expected the engine's connections, found {len(opened)}"
            for sock in opened.values():
                options = (
                    sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
                    sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
                    sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
                    sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
                    sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT),
                )
                assert options == (1, 6, 2, 3, 12_000), sock
        finally:
            for sock in opened.values():
                sock.close()
