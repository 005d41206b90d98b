"""Benchmark of the supervision library: restart latency, and 10,000 supervised actors.

Why: every shape runs as a supervised subtree under one dynamic supervisor, so the per-actor cost of
supervision (time to start, memory) and the time from a crash to a running replacement are what the
engine pays. Baseline, measured in the same run: plain ``pykka.ThreadingActor.start()`` of the same
number of unsupervised actors. Each part runs in a fresh subprocess so RSS deltas are not polluted by
the other part; ``--gevent`` repeats the parts under ``gevent.monkey.patch_all()`` (extra fields).

    python -m bench.supervisors [--actors 10000] [--restarts 300] [--no-gevent]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any

from bench._common import emit


def _rss_kb() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def _part_baseline(n: int) -> dict[str, Any]:
    import pykka  # noqa: PLC0415  (imported after the optional gevent patch)

    class Plain(pykka.ThreadingActor):
        use_daemon_thread = True

    rss0 = _rss_kb()
    t0 = time.perf_counter()
    refs = [Plain.start() for _ in range(n)]
    for ref in refs:  # the same "is running" point as ours: one round trip each
        ref.ask("ping", timeout=30)
    seconds = time.perf_counter() - t0
    rss = _rss_kb() - rss0
    pykka.ActorRegistry.stop_all(block=True, timeout=60)
    return {"seconds": seconds, "kb_per_actor": rss / n}


def _part_ours(n: int) -> dict[str, Any]:
    import pykka  # noqa: PLC0415

    from supervisors import (  # noqa: PLC0415
        ChildSpec,
        DynamicSupervisor,
        SupervisedActor,
        lifecycle_of,
        start_child,
        start_tree,
        stop_tree,
    )

    class Child(SupervisedActor):
        pass

    sup = start_tree(lambda: DynamicSupervisor.start(name="bench"), timeout=10)
    rss0 = _rss_kb()
    t0 = time.perf_counter()
    refs = [start_child(sup, ChildSpec(f"c{i}", Child.start), wait=False) for i in range(n)]
    for ref in refs:
        ref.ask("ping", timeout=30)
    seconds = time.perf_counter() - t0
    assert all(lifecycle_of(ref).started for ref in refs)
    rss = _rss_kb() - rss0
    t1 = time.perf_counter()
    assert stop_tree(sup, 120)
    stop_seconds = time.perf_counter() - t1
    assert not pykka.ActorRegistry.get_all()
    return {"seconds": seconds, "kb_per_actor": rss / n, "stop_seconds": stop_seconds}


def _part_restart(n: int) -> dict[str, Any]:
    import threading  # noqa: PLC0415

    from supervisors import (  # noqa: PLC0415
        ChildSpec,
        SupervisedActor,
        Supervisor,
        crash,
        start_tree,
        stop_tree,
    )

    started = threading.Event()
    current: list[Any] = []

    class Child(SupervisedActor):
        def on_start(self) -> None:
            current.append(self.actor_ref)
            started.set()

    sup = start_tree(
        lambda: Supervisor.start([ChildSpec("c", Child.start)], max_restarts=n + 10, max_seconds=3600),
        timeout=10,
    )
    samples = []
    for _ in range(n):
        started.clear()
        t0 = time.perf_counter()
        crash(current[-1], RuntimeError("bench"))
        if not started.wait(10):
            msg = "replacement did not start"
            raise RuntimeError(msg)
        samples.append(time.perf_counter() - t0)
    assert stop_tree(sup, 10)
    samples.sort()
    return {
        "median_ms": samples[len(samples) // 2] * 1000,
        "p99_ms": samples[min(len(samples) - 1, int(len(samples) * 0.99))] * 1000,
    }


PARTS = {"baseline": _part_baseline, "ours": _part_ours, "restart": _part_restart}


def _run_part(part: str, n: int, use_gevent: bool) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "bench.supervisors", "--part", part, "--n", str(n)]
    if use_gevent:
        cmd.append("--gevent")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    if proc.returncode != 0:
        msg = f"part {part} failed: {proc.stderr[-2000:]}"
        raise RuntimeError(msg)
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--actors", type=int, default=10_000)
    parser.add_argument("--restarts", type=int, default=300)
    parser.add_argument("--no-gevent", action="store_true")
    parser.add_argument("--part", choices=sorted(PARTS))
    parser.add_argument("--n", type=int, default=0)
    parser.add_argument("--gevent", action="store_true")
    args = parser.parse_args()
    if args.part:  # child process: one measurement, one JSON line
        if args.gevent:
            from gevent import monkey  # noqa: PLC0415

            monkey.patch_all()
        sys.stdout.write(json.dumps(PARTS[args.part](args.n)) + "\n")
        return

    result: dict[str, Any] = {
        "name": "supervisors",
        "actors": args.actors,
        "restarts_measured": args.restarts,
    }
    for runtime in ["threads"] if args.no_gevent else ["threads", "gevent"]:
        g = runtime == "gevent"
        base = _run_part("baseline", args.actors, g)
        ours = _run_part("ours", args.actors, g)
        restart = _run_part("restart", args.restarts, g)
        prefix = "" if runtime == "threads" else "gevent_"
        result.update(
            {
                f"{prefix}start_seconds": round(ours["seconds"], 3),
                f"{prefix}baseline_start_seconds": round(base["seconds"], 3),
                f"{prefix}stop_seconds": round(ours["stop_seconds"], 3),
                f"{prefix}kb_per_actor": round(ours["kb_per_actor"], 2),
                f"{prefix}baseline_kb_per_actor": round(base["kb_per_actor"], 2),
                f"{prefix}restart_median_ms": round(restart["median_ms"], 3),
                f"{prefix}restart_p99_ms": round(restart["p99_ms"], 3),
            }
        )
    result.update(
        {
            "unit": "seconds to start all actors (threads runtime)",
            "ours": result["start_seconds"],
            "baseline": result["baseline_start_seconds"],
            "baseline_name": "pykka.ThreadingActor.start() x N, unsupervised",
            "ratio": round(result["start_seconds"] / result["baseline_start_seconds"], 3),
            "lower_is_better": True,
        }
    )
    emit(result)


if __name__ == "__main__":
    main()
