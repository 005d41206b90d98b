"""The one place that knows whether we run under gevent or plain threads.

The engine runs inside a gunicorn gevent worker in production (every actor a greenlet on one OS thread) and
on plain threads in tests.  Code that waits on sockets, sleeps, spawns background loops or must run a
blocking C call goes through this module, so that:

* under gevent, waits are cooperative (``gevent.socket.wait_read``) and blocking work is pushed to a real
  OS thread (gevent's threadpool) so it never stalls the hub;
* without gevent, waits use :mod:`selectors` and blocking work simply runs in the calling thread, which is
  already an OS thread of its own.

No other module imports gevent (architecture §1).  Whether gevent is active is decided by
``gevent.monkey.is_module_patched("threading")``, i.e. by whoever patched the process before importing us.
"""

from __future__ import annotations

import select
import selectors
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol, TypeVar

T = TypeVar("T")

__all__ = [
    "Event",
    "FdWaiter",
    "Handle",
    "gevent_active",
    "run_blocking",
    "sleep",
    "spawn",
    "wait_readable",
    "wait_writable",
]


def gevent_active() -> bool:
    """True when the process was monkey-patched by gevent (the gunicorn gevent worker)."""
    monkey = sys.modules.get("gevent.monkey")
    if monkey is None:
        return False
    return bool(monkey.is_module_patched("threading"))


class _Gevent(NamedTuple):
    """The gevent functions this module calls, looked up once (:func:`_gevent`)."""

    get_hub: Callable[[], Any]
    hub_if_exists: Callable[[], Any]
    getcurrent: Callable[[], Any]
    wait: Callable[..., Any]
    wait_read: Callable[..., Any]
    wait_write: Callable[..., Any]


_gevent_api: _Gevent | None = None


def _gevent() -> _Gevent:
    """gevent's functions, imported on first use under gevent: an ``import`` statement of an imported
    package still costs ~2 µs (the import machinery's lookups), and waits run several times per request."""
    global _gevent_api  # set once; gevent is only imported when it runs the process
    if _gevent_api is None:
        import gevent  # noqa: PLC0415 - only imported when gevent runs the process
        import gevent.socket  # noqa: PLC0415
        from gevent._hub_local import get_hub_if_exists  # noqa: PLC0415 - documented, not re-exported

        socket = gevent.socket
        _gevent_api = _Gevent(
            gevent.get_hub,
            get_hub_if_exists,
            gevent.getcurrent,
            socket.wait,
            socket.wait_read,
            socket.wait_write,
        )
    return _gevent_api


def _wait(fd: int, events: int, timeout: float | None) -> bool:
    if gevent_active():
        g = _gevent()
        try:
            if events == selectors.EVENT_READ:
                g.wait_read(fd, timeout=timeout, timeout_exc=TimeoutError)
            else:
                g.wait_write(fd, timeout=timeout, timeout_exc=TimeoutError)
        except TimeoutError:
            return False
        return True
    # A fresh poll object per call: no kernel object to create (unlike epoll), no FD_SETSIZE limit
    # (unlike select); ~1.5 µs instead of ~20 µs for a DefaultSelector.
    poller = select.poll()
    poller.register(fd, select.POLLIN if events == selectors.EVENT_READ else select.POLLOUT)
    return bool(poller.poll(None if timeout is None else max(0, int(timeout * 1000 + 0.999))))


def wait_readable(fd: int, timeout: float | None = None) -> bool:
    """Block (cooperatively under gevent) until ``fd`` is readable; False on timeout."""
    return _wait(fd, selectors.EVENT_READ, timeout)


def wait_writable(fd: int, timeout: float | None = None) -> bool:
    """Block (cooperatively under gevent) until ``fd`` is writable; False on timeout."""
    return _wait(fd, selectors.EVENT_WRITE, timeout)


class FdWaiter:
    """Waits on one descriptor that reuse their event-loop watchers: :func:`wait_readable` creates, starts
    and closes a gevent watcher per call (an allocation, libev's re-registration of the descriptor: ~3-5 µs),
    which a connection waiting a few times per request pays each time.

    Only for an owner that holds the descriptor open for the waiter's whole life and calls :meth:`close`
    BEFORE the descriptor is closed: a watcher kept past that could be started on a reused descriptor
    number, for which libev would not register the new file (it never learns of the close), and the wait
    would never wake.  A different ``fd`` than the first one (or another thread's hub) is waited on the
    one-shot way.  Without gevent: :func:`wait_readable`/:func:`wait_writable`."""

    __slots__ = ("_fd", "_hub", "_watchers")

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._hub: Any = None
        self._watchers: dict[int, Any] = {}  # libev event mask (1 read, 2 write) -> its io watcher

    def wait_readable(self, fd: int, timeout: float | None = None) -> bool:
        """:func:`wait_readable` of ``fd``; False on timeout."""
        return self._wait(fd, 1, timeout)

    def wait_writable(self, fd: int, timeout: float | None = None) -> bool:
        """:func:`wait_writable` of ``fd``; False on timeout."""
        return self._wait(fd, 2, timeout)

    def _wait(self, fd: int, mask: int, timeout: float | None) -> bool:
        if fd != self._fd or not gevent_active():
            return _wait(fd, selectors.EVENT_READ if mask == 1 else selectors.EVENT_WRITE, timeout)
        g = _gevent()
        hub = g.get_hub()
        if self._hub is None:
            self._hub = hub
        elif hub is not self._hub:  # a watcher belongs to its thread's loop
            return _wait(fd, selectors.EVENT_READ if mask == 1 else selectors.EVENT_WRITE, timeout)
        watcher = self._watchers.get(mask)
        if watcher is None:
            watcher = self._watchers[mask] = hub.loop.io(fd, mask)
        try:
            g.wait(watcher, timeout, TimeoutError)
        except TimeoutError:
            return False
        return True

    def close(self) -> None:
        """Close the watchers (before the descriptor is closed); later waits go the one-shot way."""
        watchers, self._watchers = self._watchers, {}
        self._fd = -1
        for watcher in watchers.values():
            watcher.close()


def sleep(seconds: float) -> None:
    """Sleep; under gevent this yields to other greenlets (``time.sleep`` is patched there)."""
    time.sleep(seconds)


class Handle(Protocol):
    """A background loop started by :func:`spawn`."""

    @property
    def alive(self) -> bool: ...

    def join(self, timeout: float | None = None) -> None: ...


class _ThreadHandle:
    def __init__(self, thread: threading.Thread) -> None:
        self._thread = thread

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)


def spawn(fn: Callable[..., Any], *args: Any, name: str | None = None) -> Handle:
    """Run ``fn(*args)`` concurrently: a greenlet under gevent (threading patched), else a daemon thread."""
    thread = threading.Thread(target=fn, args=args, name=name, daemon=True)
    thread.start()
    return _ThreadHandle(thread)


def run_blocking(fn: Callable[..., T], *args: Any) -> T:
    """Run a blocking C call or a CPU chunk without stalling other greenlets.

    Under gevent the call runs in gevent's pool of real OS threads and the calling greenlet waits for it
    cooperatively.  Without gevent it runs directly: the caller already owns an OS thread.  So it does when
    called from the hub itself (an event loop callback, which cannot wait), from a pool thread, or before
    this thread has a hub (nothing else can be running on it then).
    """
    if gevent_active():
        api = _gevent()
        hub = api.hub_if_exists()  # None on a pool thread (asking get_hub() there would make it one)
        if hub is not None and api.getcurrent() is not hub:
            result: T = hub.threadpool.apply(fn, args)
            return result
    return fn(*args)


class Event:
    """A one-shot/level event usable from threads and greenlets alike (``threading`` is patched by gevent)."""

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        self._event.set()

    def clear(self) -> None:
        self._event.clear()

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._event.wait(timeout)
