"""Many shapes in the real engine under gevent (run by ``test_scale.py`` in a subprocess).

``python -m tests.shapes.scale_scenario DSN STORAGE_DIR N``: starts :class:`sync.engine.Engine` in this
gevent-patched process, creates ``N`` shapes ``id = k`` concurrently (through the ShapeCache, as the API
does), waits for every snapshot, writes one transaction touching a sample of them and checks it reaches
exactly those logs, then restarts the engine on the same storage and checks every shape is reloaded under
its handle and still follows the stream.  Prints one JSON line of figures and checks.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

import gevent  # noqa: E402
import psycopg  # noqa: E402

from sync.engine import Engine  # noqa: E402
from sync.offsets import LogOffset  # noqa: E402
from sync.settings import Settings  # noqa: E402
from sync.shapes.cache import get_or_create_shape  # noqa: E402
from sync.shapes.definition import ShapeDefinition  # noqa: E402
from sync.stack import SHAPE_CACHE  # noqa: E402


def _raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 200_000
    if soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(hard, want)))
        except (ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _start(settings: Settings) -> tuple[Engine, float]:
    t0 = time.monotonic()
    engine = Engine.start(settings, timeout=300)
    deadline = time.monotonic() + 120
    while engine.status() != "active":
        assert time.monotonic() < deadline, engine.health_details()
        time.sleep(0.02)
    return engine, time.monotonic() - t0


def _wait(cond: Any, what: str, deadline_s: float = 300) -> None:
    end = time.monotonic() + deadline_s
    while not cond():
        assert time.monotonic() < end, what
        time.sleep(0.02)


def main() -> None:
    dsn, storage_dir, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    _raise_nofile()
    settings = Settings().replace("database", url=dsn)
    settings = settings.replace("storage", dir=storage_dir)
    settings = settings.replace("replication", stream_id="scale")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE items (id int PRIMARY KEY, v text)")
        conn.execute("INSERT INTO items SELECT g, 'v' || g FROM generate_series(1, %s) g", (n,))
    engine, _ = _start(settings)
    resolver = engine.services.resolver
    out: dict[str, Any] = {"n": n}
    try:
        cache = engine.services.registry.whereis(SHAPE_CACHE)
        assert cache is not None
        t0 = time.monotonic()
        base = _definition(resolver)
        jobs = [gevent.spawn(_create, cache, base(k)) for k in range(1, n + 1)]
        gevent.joinall(jobs, timeout=600, raise_error=True)
        handles = [j.value for j in jobs]
        directory = engine.services.directory
        _wait(lambda: all(directory.get(h).reader.snapshot_complete for h in handles), "snapshots")
        out["create_s"] = round(time.monotonic() - t0, 2)
        out["distinct_handles"] = len(set(handles))
        out["live"] = len(directory)
        sample = list(range(1, n + 1, max(1, n // 20)))
        before = {k: directory.get(handles[k - 1]).reader.latest_offset() for k in range(1, n + 1)}
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("UPDATE items SET v = v || '!' WHERE id = ANY(%s)", (sample,))
        _wait(
            lambda: all(directory.get(handles[k - 1]).reader.latest_offset() > before[k] for k in sample),
            "update reached the sampled shapes",
            60,
        )
        out["untouched_unchanged"] = all(
            directory.get(handles[k - 1]).reader.latest_offset() == before[k]
            for k in range(1, n + 1)
            if k not in set(sample)
        )
    finally:
        engine.stop(120)
    engine, start_s = _start(settings)
    try:
        out["reload_start_s"] = round(start_s, 2)
        directory = engine.services.directory
        out["reloaded"] = sum(1 for h in handles if directory.get(h) is not None)
        latest = {k: directory.get(handles[k - 1]).reader.latest_offset() for k in sample}
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("UPDATE items SET v = v || '?' WHERE id = ANY(%s)", (sample,))
        _wait(
            lambda: all(
                directory.get(handles[k - 1]).reader.latest_offset() > max(latest[k], LogOffset.BEFORE_ALL)
                for k in sample
            ),
            "update after the restart reached the sampled shapes",
            60,
        )
        out["follows_after_reload"] = True
    finally:
        engine.stop(120)
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()
    os._exit(0)  # skip interpreter finalisation: pool finalisers under gevent fail after the hub is gone


def _definition(resolver: Any) -> Any:
    from sync.shapes.resolver import ShapeRequest  # noqa: PLC0415

    def make(k: int) -> ShapeDefinition:
        definition, _ = resolver.resolve(ShapeRequest("items", f"id = {k}"))
        assert isinstance(definition, ShapeDefinition)
        return definition

    return make


def _create(cache: Any, definition: ShapeDefinition) -> str:
    result = get_or_create_shape(cache, definition, timeout=600)
    assert result.shape is not None, result.error
    return result.shape.handle


if __name__ == "__main__":
    main()
