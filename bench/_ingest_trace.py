"""Diagnostics of ``bench.ingest``'s measured window (never part of its JSON line).

Why this module exists: finding where the time of a live window goes took the same hooks session after
session (handler times, the collector's batches, the flush rounds, the descriptor cache, the system calls
of the storage write path, a profiler attached to the engine's process), so they live here, next to the
benchmark, instead of in throwaway patches.  Everything is opt-in through the environment:

* ``BENCH_INGEST_TRACE=1``: :class:`Trace` prints, per run, on stderr: garbage-collector time per
  generation, the collector's batches (when, how many shapes, why, the process's CPU seconds so far), the
  acknowledgements, the flush rounds, the descriptor cache's counters, and per handler ``(ms, calls, last
  end s)``; the storage's system-call wrappers add the thread CPU ms (and, for writes, the bytes written).
  CPU close to wall time there means the kernel, not a wait, is the cost (on this project's VMs a
  ``pwrite`` of ~1.7 KB measured 4-22 us).
* ``BENCH_INGEST_PYSPY=<prefix>``: py-spy records the process (every thread) for the first
  ``BENCH_INGEST_PYSPY_S`` seconds (default 4) of each live window into ``<prefix>.<rep>.txt`` (raw format)
  at ``BENCH_INGEST_PYSPY_RATE`` Hz (default 250).
* ``BENCH_INGEST_ATTACH=<command>``: instead of py-spy, this command (``{pid}`` and ``{out}`` replaced, split
  on spaces) is started one second before each live window, e.g.
  ``perf record -g -p {pid} -o {out} -- sleep 4`` for kernel stacks; ``{out}`` is
  ``<BENCH_INGEST_PYSPY or /tmp/bench-ingest>.<rep>.data``.

A profiled or traced run's figures are not comparable with plain runs.
"""

from __future__ import annotations

import gc
import os
import shutil
import sys
import time
from collections.abc import Callable
from typing import Any, Protocol

from bench._spawn import spawn

__all__ = ["Trace", "attach_profiler"]

_FD_COUNTERS = ("hits", "misses", "transient", "evictions")


class _Acks(Protocol):
    ack_times: list[float]


def attach_profiler(rep: int) -> int | None:
    """Start the profiler the environment asks for on this process (see the module docstring), attached
    before the window begins; its pid, or None when none is asked for.  The caller waits for it after the
    window (:func:`bench._spawn.wait`).  Spawned, not forked: a fork would make every page the engine then
    writes take a copy-on-write fault in the profiled window."""
    prefix = os.environ.get("BENCH_INGEST_PYSPY")
    template = os.environ.get("BENCH_INGEST_ATTACH")
    if template:
        out = f"{prefix or '/tmp/bench-ingest'}.{rep}.data"
        cmd = template.format(pid=os.getpid(), out=out).split()
        with open(os.devnull, "wb") as null:
            pid = spawn(cmd, stdout=null.fileno(), stderr=null.fileno())
    elif prefix:
        seconds = os.environ.get("BENCH_INGEST_PYSPY_S", "4")  # whole seconds
        spy = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
        rate = os.environ.get("BENCH_INGEST_PYSPY_RATE", "250")
        cmd = [spy, "record", "-p", str(os.getpid()), "-d", seconds, "-r", rate, "--format", "raw"]
        with open(os.devnull, "wb") as null:
            pid = spawn([*cmd, "-o", f"{prefix}.{rep}.txt"], stdout=null.fileno())
    else:
        return None
    time.sleep(1.0)  # attached before the window starts
    return pid


class _Timed:
    """Accumulated wall time, calls and end of the last call of one wrapped function; with ``with_cpu``, also
    the calling thread's CPU time; with ``sized`` (per wrapper), the length of the second argument (the bytes
    written)."""

    __slots__ = ("bytes", "calls", "cpu", "last_end", "seconds", "with_cpu")

    def __init__(self, *, with_cpu: bool) -> None:
        self.with_cpu = with_cpu
        self.reset()

    def reset(self) -> None:
        self.seconds = self.cpu = self.last_end = 0.0
        self.calls = self.bytes = 0

    def wrap(self, orig: Callable[..., Any], *, sized: bool = False) -> Callable[..., Any]:
        acc = self
        with_cpu = self.with_cpu

        def timed(*args: Any) -> Any:
            t = time.perf_counter()
            c = time.thread_time() if with_cpu else 0.0
            try:
                return orig(*args)
            finally:
                acc.last_end = time.perf_counter()
                acc.seconds += acc.last_end - t
                acc.calls += 1
                if with_cpu:
                    acc.cpu += time.thread_time() - c
                if sized:
                    acc.bytes += len(args[1])

        return timed

    def summary(self, t0: float) -> tuple[float, ...]:
        out: tuple[float, ...] = (round(self.seconds * 1e3), self.calls, round(self.last_end - t0, 3))
        if self.with_cpu:
            out += (round(self.cpu * 1e3),)
        return out + ((self.bytes,) if self.bytes else ())


class Trace:
    """The ``BENCH_INGEST_TRACE`` diagnostics: hooks installed once (class-level wrappers), counted per
    window between :meth:`begin` and :meth:`report`."""

    def __init__(self) -> None:
        self.start = 0.0
        self.cpu_start = 0.0  # the process's CPU time (every thread) at the start of the window
        self.gc: list[tuple[int, float, float]] = []  # (generation, start, seconds)
        self.batches: list[tuple[float, int, str]] = []  # (when, shapes, why)
        self.rounds: list[tuple[float, int, float]] = []  # flush rounds: (start, members, seconds)
        self.timed: dict[str, _Timed] = {}
        self._gc_at = 0.0
        self._fd_before: dict[str, int] = {}
        gc.callbacks.append(self._on_gc)
        self._trace_batches()
        self._time_calls()
        self._time_rounds()

    def _trace_batches(self) -> None:
        from sync.shapes.collector import ShapeLogCollector  # noqa: PLC0415

        trace = self
        orig_tell = ShapeLogCollector._tell_outbox

        def tell(collector: Any) -> None:
            caller = sys._getframe(2)
            now = time.monotonic()
            why = (
                f"{caller.f_code.co_name}:{caller.f_lineno} inbox={collector.actor_inbox.qsize()} "
                f"age={now - collector._batch_started:.3f} gap={now - collector._routed_at:.3f} "
                f"commits={collector._outbox_commits} changes={collector._outbox_changes} "
                f"cpu={time.process_time() - trace.cpu_start:.3f}"
            )
            trace.batches.append((time.perf_counter(), len(collector._outbox), why))
            orig_tell(collector)

        ShapeLogCollector._tell_outbox = tell  # type: ignore[method-assign,assignment]

    def _time_rounds(self) -> None:
        from sync.storage.ticker import FlushTicker  # noqa: PLC0415

        orig = FlushTicker._round
        rounds = self.rounds

        def timed_round(members: list[Any]) -> None:
            t = time.perf_counter()
            try:
                orig(members)
            finally:
                rounds.append((t, len(members), time.perf_counter() - t))

        FlushTicker._round = staticmethod(timed_round)  # type: ignore[method-assign]

    def _time_calls(self) -> None:
        from sync.shapes.cache import ShapeCache  # noqa: PLC0415
        from sync.shapes.collector import ShapeLogCollector  # noqa: PLC0415
        from sync.shapes.consumer import Consumer  # noqa: PLC0415
        from sync.storage import fdcache, files  # noqa: PLC0415
        from sync.storage.storage_actor import StorageActor  # noqa: PLC0415

        handlers: list[tuple[Any, str]] = [
            (ShapeCache, "_relation_changed"),
            (Consumer, "on_receive"),
            (StorageActor, "on_receive"),
            (ShapeLogCollector, "_route"),
            (ShapeLogCollector, "_tell_outbox"),
            (ShapeLogCollector, "_drain_reports"),
        ]
        for owner, name in handlers:
            acc = self.timed[f"{owner.__name__}.{name}"] = _Timed(with_cpu=False)
            setattr(owner, name, acc.wrap(getattr(owner, name)))
        # the storage write path's system calls (files._write_all is looked up at each call: patchable)
        syscalls: list[tuple[Any, str, str]] = [
            (files, "_write_all", "pwrite"),
            (fdcache.FdCache, "pin", "FdCache.pin (open/close on a miss)"),
        ]
        for owner, name, label in syscalls:
            acc = self.timed[label] = _Timed(with_cpu=True)
            setattr(owner, name, acc.wrap(getattr(owner, name), sized=name == "_write_all"))

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_at = time.perf_counter()
        else:
            self.gc.append((info["generation"], self._gc_at, time.perf_counter() - self._gc_at))

    def _fd_counters(self) -> dict[str, int]:
        """The descriptor cache's counters since the last call, its size and its cap; and the log writes
        that found their page evicted (``uncached_writes``, sent to an OS thread: sync.storage.coldio)."""
        from sync.storage.coldio import COUNTERS  # noqa: PLC0415
        from sync.storage.fdcache import CACHE  # noqa: PLC0415

        now = {k: getattr(CACHE, k) for k in _FD_COUNTERS}
        now["uncached_writes"] = COUNTERS.writes
        out = {k: v - self._fd_before.get(k, 0) for k, v in now.items()}
        self._fd_before = now
        return {**out, "open": CACHE.open_count, "cap": CACHE.cap}

    def begin(self) -> None:
        self.start = time.perf_counter()
        self.cpu_start = time.process_time()
        self.gc.clear()
        self.batches.clear()
        self.rounds.clear()
        self._fd_counters()
        for acc in self.timed.values():
            acc.reset()

    def report(self, probe: _Acks, end: float) -> None:
        t0 = self.start
        gcs = [(g, at - t0, s) for g, at, s in self.gc if t0 <= at <= end]
        per_gen = {g: round(sum(s for gg, _, s in gcs if gg == g) * 1e3, 1) for g in (0, 1, 2)}
        counts = {g: sum(1 for gg, _, _ in gcs if gg == g) for g in (0, 1, 2)}
        big = [(g, round(at, 3), round(s * 1e3, 1)) for g, at, s in gcs if g > 0]
        batches = [(round(at - t0, 3), n, why) for at, n, why in self.batches if t0 <= at <= end and n]
        acks = [round(w - t0, 3) for w in probe.ack_times if t0 <= w <= end]
        rounds = [(round(at - t0, 3), n, round(s, 3)) for at, n, s in self.rounds if t0 <= at <= end]
        handlers = {k: v.summary(t0) for k, v in self.timed.items()}
        sys.stderr.write(
            f"trace: gc ms {per_gen} counts {counts} older {big}\n"
            f"trace: {len(batches)} batches (s, shapes) {batches}\n"
            f"trace: {len(acks)} acks at {acks}\n"
            f"trace: flush rounds (s, members, seconds) {rounds}\n"
            f"trace: descriptor cache {self._fd_counters()}\n"
            f"trace: handlers (ms, calls, last end s[, thread cpu ms[, bytes]]) {handlers}\n"
        )
