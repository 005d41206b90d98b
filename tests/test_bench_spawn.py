"""bench._spawn: a benchmark's children, spawned from a process under gevent monkey patching (as bench.ingest's
engine process is) without forking it; in a subprocess, since the patching is process-wide."""

from __future__ import annotations

import json
import subprocess
import sys

# The first child of the patched process is spawned (gevent's own posix_spawnp + waitpid hung right here),
# then the three ways the benchmarks use: run to the end, a line dialogue, and a wait while the hub runs.
SCRIPT = """
from gevent import monkey
monkey.patch_all()
import json, resource, subprocess, sys, time
from bench import _spawn

out = {}
junk = [bytearray(4096) for _ in range(2000)]

def faults_writing():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for page in junk:
        page[0] += 1
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

_spawn.run(["true"])
out["faults_after_spawn"] = faults_writing()
try:
    _spawn.run([sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"])
except subprocess.CalledProcessError as exc:
    out["failed"] = [exc.returncode, exc.output.decode().strip()]
child = _spawn.LineChild([sys.executable, "-c", "import sys; print('ready', flush=True); "
                          "print('echo ' + sys.stdin.readline().strip(), flush=True)"])
out["dialogue"] = [child.receive()]
time.sleep(0.2)  # the child blocks on its end of the pair meanwhile: it must not see a non-blocking socket
child.send("go")
out["dialogue"].append(child.receive())
child.kill()
pid = _spawn.spawn(["sleep", "0.1"])
out["waited"] = _spawn.wait(pid)
subprocess.run(["true"], check=True)  # gevent's Popen: a fork
out["faults_after_fork"] = faults_writing()
print(json.dumps(out))
"""


def test_children_are_spawned_without_a_fork_and_waited_for_under_gevent() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60, check=True
    )
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["failed"] == [3, "boom"]
    assert out["dialogue"] == ["ready", "echo go"]
    assert out["waited"] in (0, None)  # None: gevent's loop reaped it first (its status is then lost)
    # the control: a fork makes the parent's pages copy-on-write (a fault at each page's first write);
    # a spawn leaves them alone
    assert out["faults_after_fork"] >= 2000
    assert out["faults_after_spawn"] < 200
