"""Scripted supervision scenario run under ``gevent.monkey.patch_all()`` in a subprocess.

Run as ``python -m tests.supervisors.gevent_scenario``; prints one JSON object that
``test_gevent.py`` asserts on. Not collected by pytest (no ``test_`` prefix).
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import json  # noqa: E402
import os  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

import pykka  # noqa: E402

from supervisors import (  # noqa: E402
    REST_FOR_ONE,
    ChildSpec,
    DynamicSupervisor,
    MaxRestartsExceeded,
    Supervisor,
    lifecycle_of,
    snapshot,
    start_child,
    start_tree,
    stop_tree,
    which_children,
)
from tests.supervisors.actors import Journal, eventually, spec  # noqa: E402


def main() -> dict[str, object]:
    out: dict[str, object] = {}
    journal = Journal()
    release = threading.Event()
    dyn = ChildSpec("dyn", lambda: DynamicSupervisor.start(name="dyn"), kind="supervisor")
    root = start_tree(
        lambda: Supervisor.start(
            [
                spec("a", journal),
                spec("b", journal),
                spec("hang", journal, hang_on_stop=release, shutdown=0.2),
                dyn,
            ],
            strategy=REST_FOR_ONE,
            name="root",
            max_restarts=5,
        ),
        timeout=5,
    )
    out["ordered_start"] = journal.names("started")
    out["os_threads"] = len(os.listdir("/proc/self/task"))

    # ask crash -> restart of b and everything after it (rest_for_one)
    try:
        journal.ref("b").proxy().explode().get(timeout=2)
    except ValueError as exc:
        out["ask_error"] = str(exc)
    journal.wait_count("started", "b", 2)
    journal.wait_count("started", "hang", 2)
    release.set()  # the old "hang" was abandoned after 0.2 s; let its greenlet finish
    journal.wait_count("stopped", "hang", 1)
    release.clear()
    eventually(lambda: all(v.status == "running" for v in which_children(root)))
    out["restarts"] = {v.id: v.restarts for v in which_children(root)}

    # dynamic children: a child blocked in on_start does not block the supervisor's inbox
    dyn_ref = which_children(root)[3].ref
    assert dyn_ref is not None
    gate = threading.Event()
    slow = start_child(dyn_ref, spec("slow", journal, gate=gate), wait=False)
    t0 = time.monotonic()
    for i in range(200):
        start_child(dyn_ref, spec(f"d{i}", journal))
    out["dyn_start_s"] = round(time.monotonic() - t0, 3)
    out["slow_started_before_gate"] = lifecycle_of(slow).started
    gate.set()
    out["slow_started"] = lifecycle_of(slow).wait_settled(5) and lifecycle_of(slow).started
    out["dyn_children"] = len(which_children(dyn_ref))

    # snapshot from another greenlet while a crash is handled
    journal.ref("a").tell("boom")
    snap_box: list[dict[str, object]] = []
    reader = threading.Thread(target=lambda: snap_box.append(snapshot(root).to_dict()))
    reader.start()
    reader.join(5)
    out["snapshot_read"] = bool(snap_box) and snap_box[0]["name"] == "root"
    journal.wait_count("started", "a", 2)
    journal.wait_count("started", "hang", 3)
    eventually(lambda: all(v.status == "running" for v in which_children(root)))
    release.set()  # the second "hang" was abandoned too
    journal.wait_count("stopped", "hang", 2)
    release.clear()

    # orderly stop; the hanging child is abandoned after its timeout
    t0 = time.monotonic()
    out["stopped"] = stop_tree(root, 10)
    out["stop_s"] = round(time.monotonic() - t0, 3)
    out["left"] = len(pykka.ActorRegistry.get_all())
    release.set()

    # escalation under gevent
    esc = start_tree(lambda: Supervisor.start([spec("e", journal)], name="esc", max_restarts=0), timeout=5)
    journal.ref("e").tell("boom")
    life = lifecycle_of(esc)
    out["escalated"] = life.wait_exited(5) and isinstance(life.reason, MaxRestartsExceeded)
    out["left_end"] = len(pykka.ActorRegistry.get_all())
    return out


if __name__ == "__main__":
    print(json.dumps(main()))
