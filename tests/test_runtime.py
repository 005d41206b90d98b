"""sync.runtime: the same waits and background work with plain threads and under gevent."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
import time

from sync import runtime


def test_waits_on_threads() -> None:
    a, b = socket.socketpair()
    with a, b:
        assert not runtime.gevent_active()
        started = time.monotonic()
        assert runtime.wait_readable(a.fileno(), 0.05) is False
        assert time.monotonic() - started >= 0.04
        b.send(b"x")
        assert runtime.wait_readable(a.fileno(), 1) is True
        assert runtime.wait_writable(a.fileno(), 1) is True


def test_spawn_event_and_run_blocking_on_threads() -> None:
    done = runtime.Event()
    handle = runtime.spawn(done.set)
    assert done.wait(5)
    handle.join(5)
    assert not handle.alive
    assert runtime.run_blocking(sum, [1, 2, 3]) == 6


def test_gevent_waits_are_cooperative() -> None:
    script = textwrap.dedent(
        """
        from gevent import monkey; monkey.patch_all()
        import socket, time, gevent
        from sync import runtime
        assert runtime.gevent_active()
        a, b = socket.socketpair()
        ticks = []
        def ticker():
            for _ in range(10):
                ticks.append(time.monotonic()); gevent.sleep(0.01)
        t = gevent.spawn(ticker)
        # while this greenlet waits on the socket, the ticker keeps running
        assert runtime.wait_readable(a.fileno(), 0.15) is False
        assert len(ticks) >= 5, ticks
        b.send(b"x")
        assert runtime.wait_readable(a.fileno(), 1) is True
        # a blocking call pushed to a real thread does not stall the hub
        ticks.clear(); t2 = gevent.spawn(ticker)
        runtime.run_blocking(time.sleep, 0.15)
        assert len(ticks) >= 5, ticks
        print("ok")
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.stdout.strip() == "ok", proc.stderr


def test_fd_waiter_reuses_its_watchers_and_never_outlives_the_descriptor() -> None:
    script = textwrap.dedent(
        """
        from gevent import monkey; monkey.patch_all()
        import socket, time, gevent
        from sync import runtime
        a, b = socket.socketpair()
        w = runtime.FdWaiter(a.fileno())
        ticks = []
        def ticker():
            for _ in range(10):
                ticks.append(time.monotonic()); gevent.sleep(0.01)
        t = gevent.spawn(ticker)
        assert w.wait_readable(a.fileno(), 0.15) is False  # cooperative, times out
        assert len(ticks) >= 5, ticks
        for i in range(50):  # the same watcher, woken each time
            b.send(b"x")
            assert w.wait_readable(a.fileno(), 1) is True
            assert a.recv(10) == b"x"
            assert w.wait_writable(a.fileno(), 1) is True
        watchers = dict(w._watchers)
        assert sorted(watchers) == [1, 2]
        b.send(b"y"); assert w.wait_readable(a.fileno(), 1) and w._watchers == watchers; a.recv(1)
        # another descriptor: the one-shot way, nothing kept for it
        c, d = socket.socketpair()
        d.send(b"z"); assert w.wait_readable(c.fileno(), 1) is True and w._watchers == watchers
        # closed before its descriptor; the number reused by a new socket waits correctly
        fd = a.fileno(); w.close(); assert not w._watchers
        a.close(); b.close()
        e, f = socket.socketpair()
        assert fd in (e.fileno(), f.fileno()), (fd, e.fileno(), f.fileno())
        reused, peer = (e, f) if e.fileno() == fd else (f, e)
        w2 = runtime.FdWaiter(fd)
        assert w2.wait_readable(fd, 0.05) is False
        peer.send(b"q"); assert w2.wait_readable(fd, 1) is True
        assert w.wait_readable(fd, 1) is True  # a closed waiter waits the one-shot way
        w2.close()
        print("ok")
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.stdout.strip() == "ok", proc.stderr


def test_fd_waiter_on_threads() -> None:
    a, b = socket.socketpair()
    with a, b:
        w = runtime.FdWaiter(a.fileno())
        assert w.wait_readable(a.fileno(), 0.05) is False
        b.send(b"x")
        assert w.wait_readable(a.fileno(), 1) is True
        assert w.wait_writable(a.fileno(), 1) is True
        w.close()


def test_run_blocking_under_gevent_waits_in_a_greenlet_and_runs_inline_where_nothing_can_wait() -> None:
    """From a greenlet: on a pool thread, the greenlet waiting.  From the hub itself (an event loop
    callback), from a pool thread or before the hub exists: right there (waiting would fail, or make a hub in
    that thread)."""
    script = textwrap.dedent(
        """
        from gevent import monkey; monkey.patch_all()
        import gevent, threading
        from gevent._hub_local import get_hub_if_exists
        from gevent.monkey import get_original
        from sync import runtime
        os_thread = get_original("_thread", "get_ident")
        main = os_thread()
        here = lambda: os_thread()
        assert runtime.run_blocking(here) == main  # no hub yet, so no other greenlet: right here
        gevent.get_hub()
        assert runtime.run_blocking(here) != main  # the main greenlet: on a pool thread
        assert gevent.spawn(runtime.run_blocking, here).get() != main
        nested = runtime.run_blocking(lambda: (os_thread(), runtime.run_blocking(here), get_hub_if_exists()))
        assert nested[0] == nested[1] != main and nested[2] is None, nested
        from_hub = []
        gevent.get_hub().loop.run_callback(lambda: from_hub.append(runtime.run_blocking(here)))
        gevent.sleep(0.01)
        assert from_hub == [main], from_hub
        print("ok")
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.stdout.strip() == "ok", proc.stderr
