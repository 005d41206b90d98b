"""A benchmark's child processes, started with ``posix_spawn``: the parent's memory never turns copy-on-write.

Why this module exists: under gevent monkey patching, ``subprocess.Popen`` is gevent's, and gevent's
forks (the standard library's uses ``vfork``).  bench.ingest's ``many`` workload runs the engine in a patched
process and started two children from it per window, the workload's committer just before it and
``pg_recvlogical`` just after it, so it paid for each fork twice:

* the fork itself: ``pg_recvlogical`` started through gevent's Popen from a process of this size
  (~300 MB resident, ~19,000 open descriptors, measured with ``true`` in place of pg_recvlogical) took
  85-98 ms to start and end against 5-8 ms spawned, and that landed in the baseline's measured time;
* afterwards, the first write to every page of the engine's memory takes a copy-on-write fault, even once
  the child has gone on to ``exec``: writing one byte per page of 300 MB took 97-116 ms after such a fork
  (76,000 faults) against 10-11 ms after a spawn.  Measured in one window of bench.ingest many: 54,000-58,000
  minor faults against 5,000-16,000, ~1.5 CPU µs per row of the engine's.

Neither is what the measurement is about: an application writing to Postgres, and pg_recvlogical, are not
children of the sync engine.  ``posix_spawn`` (glibc: a ``CLONE_VM | CLONE_VFORK`` clone, the child runs
``exec`` in the parent's memory) costs neither, patched or not.  :func:`wait` polls a pidfd, which gevent
makes cooperative, so the engine's greenlets keep running meanwhile.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from typing import Any

from gevent import monkey

__all__ = ["LineChild", "run", "spawn", "wait"]


def _unpatched(name: str) -> Callable[..., Any]:
    """``os.<name>`` as the standard library has it, patched or not.  gevent's ``posix_spawnp`` registers
    the child with a libev child watcher, and its ``waitpid`` waits on that watcher: in a patched process
    whose first child was started so, the watcher never fired and the waiter hung (seen here)."""
    return monkey.get_original("os", name)  # type: ignore[no-any-return]


_posix_spawnp = _unpatched("posix_spawnp")
_waitpid = _unpatched("waitpid")


def spawn(
    cmd: Sequence[str], *, stdin: int | None = None, stdout: int | None = None, stderr: int | None = None
) -> int:
    """Start ``cmd`` (looked up in PATH) with the given descriptors as its standard streams (None: this
    process's own); returns its pid."""
    streams = ((stdin, 0), (stdout, 1), (stderr, 2))
    actions = [(os.POSIX_SPAWN_DUP2, fd, target) for fd, target in streams if fd is not None]
    pid: int = _posix_spawnp(cmd[0], list(cmd), os.environ, file_actions=actions)
    return pid


def wait(pid: int) -> int | None:
    """Wait for the child ``pid`` to exit (polls a pidfd: Linux 5.3+; cooperative under gevent); returns its
    exit code (negative: the signal that ended it), or None when the exit was collected elsewhere: gevent's
    event loop reaps every child that exits while it runs (its SIGCHLD handling), without keeping the status
    of one it was not asked to watch."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return None
    try:
        poller = select.poll()  # (not select(): the engine's descriptors are numbered far past 1024)
        poller.register(pidfd, select.POLLIN)
        poller.poll()  # readable once the child has exited
    finally:
        os.close(pidfd)
    try:
        return os.waitstatus_to_exitcode(_waitpid(pid, 0)[1])
    except ChildProcessError:  # reaped by gevent's loop meanwhile
        return None


def run(cmd: Sequence[str]) -> None:
    """Run ``cmd`` to its end, its output kept aside; raises ``CalledProcessError`` (with that output) when
    it fails, as ``subprocess.run(cmd, check=True, capture_output=True)`` does.  Blocks the calling thread
    until then (under gevent, every greenlet): the exit status is collected before the event loop can reap
    it.  For a baseline timed while the engine has nothing to do."""
    with tempfile.TemporaryFile() as out, open(os.devnull, "rb") as null:
        pid = spawn(cmd, stdin=null.fileno(), stdout=out.fileno(), stderr=out.fileno())
        code = os.waitstatus_to_exitcode(_waitpid(pid, 0)[1])
        if code != 0:
            out.seek(0)
            raise subprocess.CalledProcessError(code, list(cmd), output=out.read())


class LineChild:
    """A child process spoken to in lines of text on its standard input and output (one socket pair)."""

    def __init__(self, cmd: Sequence[str]) -> None:
        mine, theirs = socket.socketpair()
        # gevent keeps its sockets non-blocking; the child's end must block, as a pipe would
        os.set_blocking(theirs.fileno(), True)
        try:
            self.pid = spawn(cmd, stdin=theirs.fileno(), stdout=theirs.fileno())
        finally:
            theirs.close()
        self._sock = mine
        self._file = mine.makefile("rw", encoding="utf-8")
        self._done = False

    def send(self, line: str) -> None:
        self._file.write(line + "\n")
        self._file.flush()

    def receive(self) -> str:
        """The next line, without its end (empty once the child closed its output)."""
        return self._file.readline().rstrip("\n")

    def kill(self) -> None:
        """End the child (if still running) and reap it."""
        if self._done:
            return
        self._done = True
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        wait(self.pid)
        self._file.close()
        self._sock.close()
