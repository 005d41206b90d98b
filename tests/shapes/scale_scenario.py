"""Many shapes in the real engine under gevent (run by ``test_scale.py`` in a subprocess).

``python -m tests.shapes.scale_scenario PHASE DSN STORAGE_DIR N`` starts :class:`sync.engine.Engine` in this
gevent-patched process.  Phase ``create`` creates ``N`` shapes ``id = k`` concurrently (through the
ShapeCache, as the API does) and waits for every snapshot; phase ``reload`` (a new process: a restart)
checks every shape came back under its handle.  Both then write one transaction touching a sample of the
shapes and check it reaches exactly those logs.  Prints one JSON line of figures and checks.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, cast  # noqa: E402

import gevent  # noqa: E402
import psycopg  # noqa: E402

from sync.engine import Engine  # noqa: E402
from sync.settings import Settings  # noqa: E402
from sync.shapes.cache import get_or_create_shape  # noqa: E402
from sync.shapes.definition import ShapeDefinition  # noqa: E402
from sync.shapes.directory import LiveShape  # noqa: E402
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
    engine = Engine.start(settings)  # the default budget, grown with the stored shapes
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
    phase, dsn, storage_dir, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    _raise_nofile()
    settings = Settings().replace("database", url=dsn)
    settings = settings.replace("storage", dir=storage_dir)
    settings = settings.replace("replication", stream_id="scale")
    state = Path(storage_dir) / "scale_handles.json"
    sample = list(range(1, n + 1, max(1, n // 20)))
    out: dict[str, Any] = {"n": n, "phase": phase}
    if phase == "create":
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE items (id int PRIMARY KEY, v text)")
            conn.execute("INSERT INTO items SELECT g, 'v' || g FROM generate_series(1, %s) g", (n,))
    engine, start_s = _start(settings)
    try:
        directory = engine.services.directory
        if phase == "create":
            cache = engine.services.registry.whereis(SHAPE_CACHE)
            assert cache is not None
            make = _definition(engine.services.resolver)
            t0 = time.monotonic()
            jobs = [gevent.spawn(_create, cache, make(k)) for k in range(1, n + 1)]
            gevent.joinall(jobs, timeout=600, raise_error=True)
            handles = [str(j.value) for j in jobs]
            _wait(
                lambda: all(cast(LiveShape, directory.get(h)).reader.snapshot_complete for h in handles),
                "snapshots",
            )
            out["create_s"] = round(time.monotonic() - t0, 2)
            out["distinct_handles"] = len(set(handles))
            state.write_text(json.dumps(handles))
        else:
            handles = json.loads(state.read_text())
            out["reload_start_s"] = round(start_s, 2)
            out["reloaded"] = sum(1 for h in handles if directory.get(h) is not None)
        out["live"] = len(directory)
        before = {
            k: cast(LiveShape, directory.get(handles[k - 1])).reader.latest_offset() for k in range(1, n + 1)
        }
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("UPDATE items SET v = v || '!' WHERE id = ANY(%s)", (sample,))
        _wait(
            lambda: all(
                cast(LiveShape, directory.get(handles[k - 1])).reader.latest_offset() > before[k]
                for k in sample
            ),
            "an update reached the sampled shapes",
            60,
        )
        touched = set(sample)
        out["untouched_unchanged"] = all(
            cast(LiveShape, directory.get(handles[k - 1])).reader.latest_offset() == before[k]
            for k in range(1, n + 1)
            if k not in touched
        )
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
