"""The storage's hot locks are OS-thread locks under gevent too (``_thread.RLock``, which gevent leaves
native): their critical sections never switch greenlets, and a greenlet lock costs more per acquire (several
per append).  Checked in a subprocess under gevent monkey patching, as the gunicorn worker runs."""

from __future__ import annotations

import json
import subprocess
import sys

SCRIPT = r"""
from gevent import monkey

monkey.patch_all()

import json

from sync import runtime
from sync.shapes.durable_reports import DurableReports
from sync.storage.fdcache import CACHE
from sync.storage.inbox import LightInbox
from sync.storage.ticker import FlushTicker

locks = {
    "fdcache": CACHE._lock,
    "ticker": FlushTicker(0.05, None)._lock,
    "inbox": LightInbox()._lock,
    "durable_reports": DurableReports(None)._lock,
}
out = {}
for name, lock in locks.items():
    with lock:  # held by this OS thread: another one must stay out until it is released
        held_out = not runtime.run_blocking(lock.acquire, True, 0.05)
    taken = runtime.run_blocking(lock.acquire, True, 5.0)
    if taken:
        runtime.run_blocking(lock.release)
    out[name] = [type(lock).__module__, held_out, taken]
print(json.dumps(out))
"""


def test_hot_storage_locks_exclude_os_threads_under_gevent() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(result) == {"fdcache", "ticker", "inbox", "durable_reports"}
    for name, (module, held_out, taken) in result.items():
        assert "gevent" not in module, name  # not a greenlet lock
        assert held_out and taken, name
