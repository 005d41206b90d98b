"""Load tools for the HTTP benchmarks: a gevent long-poll client process and the floor app.

``python -m bench._load --port P --path PATH --n N`` (gevent, raw sockets) opens N connections, sends one
``GET PATH`` on each (``Connection: close``), prints ``SENT`` once every request is written, then reads each
response to EOF and prints one JSON line: the ``time.monotonic()`` at which each response completed (the
monotonic clock is system-wide on Linux, so the parent compares it with its own commit time), and statuses.

``floor_app`` is the HTTP stack's own floor for a fan-out: a WSGI app served by the same gunicorn gevent
worker class that parks every ``GET /wait`` on one ``gevent.event.Event`` and answers them all when
``GET /fire`` sets it; ``GET /count`` says how many are parked (also the cheapest request the stack can
serve: bench.subset times it as the bare HTTP round trip).  ``start_floor_app`` runs it.
"""

from __future__ import annotations

import sys

if __name__ == "__main__":
    from gevent import monkey

    monkey.patch_all()

import argparse
import json
import resource
import socket
import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _one(port: int, request: bytes, done: list[float], statuses: list[int], sent: Callable[[], None]) -> None:
    sock = socket.create_connection(("127.0.0.1", port))
    try:
        sock.sendall(request)
        sent()
        chunks: list[bytes] = []
        while True:
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
        done.append(time.monotonic())
        head = b"".join(chunks)[:12]
        statuses.append(int(head[9:12]) if head.startswith(b"HTTP/1.") else 0)
    finally:
        sock.close()


def run_client(port: int, path: str, n: int, timeout: float) -> dict[str, Any]:
    import gevent  # noqa: PLC0415
    import gevent.event  # noqa: PLC0415
    import gevent.pool  # noqa: PLC0415

    _raise_nofile()
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode()
    done: list[float] = []
    statuses: list[int] = []
    count = [0]
    all_sent = gevent.event.Event()

    def sent() -> None:
        count[0] += 1
        if count[0] == n:
            all_sent.set()

    group = gevent.pool.Group()
    for i in range(n):
        group.spawn(_one, port, request, done, statuses, sent)
        if i % 200 == 199:
            gevent.sleep(0.01)  # let the server's accept loop keep up with the backlog
    if not all_sent.wait(timeout):
        raise RuntimeError(f"only {count[0]} of {n} requests sent")
    sys.stdout.write("SENT\n")
    sys.stdout.flush()
    group.join(timeout=timeout, raise_error=True)
    return {"done": done, "statuses": statuses, "n": n}


def floor_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """WSGI: ``/wait`` parks until ``/fire``; ``/count`` = parked requests (gevent worker only)."""
    import gevent.event  # noqa: PLC0415

    state = floor_app.__dict__.setdefault("state", {"event": gevent.event.Event(), "parked": 0})
    path = environ.get("PATH_INFO", "")
    body = b""
    if path == "/wait":
        state["parked"] += 1
        event = state["event"]
        event.wait()
        state["parked"] -= 1
        body = b'[{"headers":{"control":"up-to-date"}}]'
    elif path == "/fire":
        event = state["event"]
        state["event"] = gevent.event.Event()
        event.set()
    elif path == "/count":
        body = str(state["parked"]).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def start_floor_app(workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    """``floor_app`` under stock gunicorn (one gevent worker) on a free port, once it answers."""
    import urllib.request  # noqa: PLC0415

    from sync.postgres.cluster import free_port  # noqa: PLC0415 - not needed by the load client

    port = free_port()
    log = (workdir / "floor.log").open("ab")
    proc = subprocess.Popen(
        [
            sys.executable,
            *("-m", "gunicorn", "-k", "gevent", "--worker-connections", "20000", "--backlog", "4096"),
            *("-w", "1", "-b", f"127.0.0.1:{port}", "bench._load:floor_app"),
        ],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/count", timeout=2):
                return proc, port
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("floor app did not start") from None
            time.sleep(0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description="gevent long-poll load client")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", required=True)
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args()
    result = run_client(args.port, args.path, args.n, args.timeout)
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
